"""report.html of one experiment (and of a blend): the CV report a person reads after training and prediction.

`write_report` reads the experiment's out-of-fold predictions and logs (foldkit.oof), writes every table
(foldkit.report.tables) and figure (foldkit.report.plots) beside the page as CSV and PNG files, then the
page: one self-contained HTML file (inline CSS, images as data URIs, links to the CSVs) whose first
screen is the same for every task kind, then the task kind's sections (foldkit.report.sections). Every
file goes through foldkit.io (temporary file + rename).

This module must not import torch.
"""
from __future__ import annotations

import dataclasses
import functools
import html
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from foldkit.experiment import Experiment
from foldkit.figures import plot_curves, plot_log_curve
from foldkit.io import atomic_write_bytes, atomic_write_text, atomic_write_with
from foldkit.metrics import METRICS, score
from foldkit.oof import (ReportError, cv_summary, finite, in_words, load_oof, log_summary, oof_arrays, read_config,
                         read_logs, test_like_score)
from foldkit.predict.calibrate import cv_scorer, fit_cut, threshold_fit
from foldkit.report import page
from foldkit.report.label_noise import report_section
from foldkit.report.plots import (plot_confusion, plot_cooccurrence, plot_fold_scores, plot_residuals,
                                  plot_scatter)
from foldkit.report.sections import (confusion_section, cooccurrence_section, curves_section, errors_section,
                                     facts_html, first_screen, per_label_section, residuals_section,
                                     stack_section, tag_errors_section, value_errors_section)
from foldkit.report.tables import (MAX_CLASSES_SHOWN, all_rows_figures, confused_classes, confusion_table,
                                   constant_figures,
                                   cooccurrence_table, most_confused, never_given_together, per_class_table,
                                   per_label_table, plan_label_thresholds, residual_table, worst_errors,
                                   worst_tag_errors, worst_value_errors)
from foldkit.report.words import test_line
from foldkit.tasks import TASKS


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return finite(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _csv_writer(df: pd.DataFrame, index: bool) -> Callable[[Path], None]:
    return lambda tmp: df.to_csv(tmp, index=index, lineterminator="\n")


@dataclasses.dataclass
class _Report:
    """What the task kind's sections of one report share: the OOF rows, where files go, the figures
    predict.py recorded (`extra`), the gallery's image loader and Grad-CAM (with its notes)."""
    oof: pd.DataFrame
    classes: list
    sep: str
    extra: dict
    load_image: Callable | None
    heat: Callable | None
    notes: list[str]
    out: Callable[[str], Path]
    paths: dict[str, Path]


def write_report(exp_dir: str | Path, report_dir: str | Path, load_image: Callable | None = None,
                 test_score: Any = None, extra: dict | None = None, folds: list[int] | None = None,
                 heatmap: Callable | None = None, heatmap_note: str | None = None,
                 cut: Callable[[np.ndarray], np.ndarray] | None = None) -> dict:
    """Write the CV report of one experiment into report_dir and return its summary.

    Every task kind: oof.csv, cv_scores.json, fold_scores.png, curves.png (every fold's log overlaid),
    curve_fold{k}.png (copied from exp_dir, or drawn from log_fold{k}.csv) and report.html, a single
    self-contained page (inline CSS, images as data URIs, links to the CSVs) whose first screen is the
    same for all. Then, per task kind (config.json `reading`):
    single-label: per_class.csv, confusion.csv, confusion.png (row-normalised; beyond
    MAX_CLASSES_SHOWN classes only the most confused ones), most_confused.csv, worst_errors.csv;
    multi-label: per_label.csv, cooccurrence.csv (+ .png up to MAX_CLASSES_SHOWN labels), worst_errors.csv;
    regression: residuals.csv (+ .png), scatter.png, worst_errors.csv;
    worst_errors.png (only with load_image) and label_errors.csv/.png (foldkit.report.label_noise) for both
    classification kinds.
    test_score: a number (or a JSON-able dict) scored on a held-out test set, shown beside
    the CV. extra: more key/values recorded in cv_scores.json and told in words on the page
    (predict.py's plan, blend figures, verdicts, submission file: see `facts_in_words`).
    heatmap(row) (foldkit.report.gradcam.heatmapper, with load_image): a Grad-CAM overlay beside each gallery
    image; any error it raises stops the heatmaps only and becomes heatmap_note, a line on the page.
    cut(probs): the plan's fitted post-processing (predict.py, a lone experiment); a threshold metric's
    `pred`, CV and tables are read where it cuts, and without it at the one threshold fitted on all rows
    (as training keeps its epochs): see _as_submitted.
    The returned dict is cv_scores.json plus "paths" (name -> path written).
    """
    exp_dir, report_dir = Path(exp_dir), Path(report_dir)
    metric = _metric(exp_dir)
    task, sep = Experiment(exp_dir).task()
    oof, classes = load_oof(exp_dir, folds)
    oof, scorer, cut = _as_submitted(oof, classes, metric, task, sep, cut)
    result = _summary(exp_dir, oof, classes, metric, task, sep, test_score, extra, scorer, cut)
    paths: dict[str, Path] = {}

    def out(name: str) -> Path:
        paths[name] = report_dir / name
        return paths[name]

    atomic_write_with(out("oof.csv"), _csv_writer(oof, index=False))
    plot_fold_scores(result, out("fold_scores.png"))
    report = _report(oof, classes, sep, extra, load_image, heatmap, heatmap_note, out, paths)
    sections = _SECTIONS[task](report)
    table, lone, problems = _curves(exp_dir, folds, metric, result["experiment"], out)
    table = _fold_table(table, task, "test_like_fold" in result)
    result_json = _jsonable(result)
    atomic_write_text(out("cv_scores.json"), json.dumps(result_json, indent=2, allow_nan=False) + "\n")
    paths["report.html"] = report_dir / "report.html"
    body = first_screen(result_json, paths, problems) + curves_section(table, paths, lone) + sections \
        + _stack_part(exp_dir, metric, out)
    atomic_write_text(paths["report.html"], page.document(f"CV report: {result['experiment']}",
                                                          body + [files_line(paths)]))
    return {**result_json, "paths": {k: str(v) for k, v in paths.items()}}


def report_writer(reports_dir: str | Path) -> Callable[[Experiment, list[int]], dict]:
    """write_report into reports/<experiment>/ for the given finished folds: what train.py hands
    training, for --log's tracker at the end of the run."""
    return lambda exp, folds: write_report(exp.dir, Path(reports_dir) / exp.name, folds=folds)


def _stack_part(exp_dir: Path, metric: str, out: Callable[[str], Path]) -> list[str]:
    """A stacked experiment's section (stack.py: config.json `stacked`, importance.csv copied beside the
    page); nothing for an image experiment."""
    stacked = read_config(exp_dir).get("stacked")
    if not stacked:
        return []
    src = exp_dir / "importance.csv"
    importance = pd.read_csv(src) if src.is_file() else None
    if importance is not None:
        atomic_write_with(out("importance.csv"), _csv_writer(importance, index=False))
    return stack_section(stacked, importance, metric)


def _metric(exp_dir: Path) -> str:
    """The competition metric config.json names: the one every score of the report is in."""
    metric = read_config(exp_dir).get("metric")
    if not metric:
        raise ReportError(f"{Experiment(exp_dir).config_path} is missing or has no `metric`: cannot tell "
                          "which competition metric to report")
    return metric


def _as_submitted(oof: pd.DataFrame, classes: list, metric: str, task: str, sep: str,
                  cut: Callable | None) -> tuple[pd.DataFrame, Callable | None, Callable | None]:
    """(the OOF rows with `pred` cut as the submission is, the scorer the CV is read with, the cut) for a
    threshold metric (predict.calibrate.threshold_fit): at `cut` when given, else at the one threshold
    fitted on all rows, each fold's score at its own (cv_scorer, as training keeps its epochs), so the
    CV, `pred`, the other label metrics and the tables agree. Other metrics: as they are, no cut."""
    fit = threshold_fit(metric, task, len(classes))
    if fit == "none":
        return oof, None, None
    y, p = oof_arrays(oof, classes, task, sep)
    if cut is None:
        cut, scorer = fit_cut(fit, metric, y, p)[0], cv_scorer(metric, task, len(classes))
    else:
        scorer = lambda yy, pp: score(metric, yy, cut(pp))     # noqa: E731 (the plan's cut on every fold)
    return oof.assign(pred=TASKS[task].label_values(cut(p), classes, sep)), scorer, cut


def _summary(exp_dir: Path, oof: pd.DataFrame, classes: list, metric: str, task: str, sep: str,
             test_score: Any, extra: dict | None, scorer: Callable | None, cut: Callable | None) -> dict[str, Any]:
    """What cv_scores.json records: the experiment, its CV (cv_summary), whether every fold is present,
    the task kind's figures on all rows, the test-like fold's score, the test score and `extra`."""
    cfg = read_config(exp_dir)
    summary = cv_summary(oof, classes, metric, task, sep, scorer)
    n_folds_cfg = cfg.get("n_folds")
    result: dict[str, Any] = {"experiment": cfg.get("experiment", exp_dir.name), "model": cfg.get("model"),
                              "classes": classes, **summary, "n_folds_config": n_folds_cfg,
                              "complete": n_folds_cfg is None or summary["folds"] == list(range(int(n_folds_cfg)))}
    if not TASKS[task].exclusive:
        result.update(all_rows_figures(oof, classes, metric, task, sep, cut))
    result["constant_answer"] = constant_figures(oof, classes, metric, task, sep)
    if (test_like := test_like_score(summary, cfg)) is not None:
        result["test_like_fold"] = {"fold": 0, "score": test_like}
    if test_score is not None:
        result["test_score"] = test_score
    if extra:
        result["extra"] = extra
    return result


def _report(oof, classes, sep, extra, load_image, heatmap, heatmap_note, out, paths) -> _Report:
    """The sections' shared state; the error galleries share images, so each is decoded once."""
    if load_image is not None:
        load_image = functools.lru_cache(maxsize=256)(load_image)
    notes = [heatmap_note] if heatmap_note else []
    heat = _safe_heatmap(heatmap, notes) if heatmap is not None and load_image is not None else None
    return _Report(oof, classes, sep, extra or {}, load_image, heat, notes, out, paths)


def _fold_table(table: pd.DataFrame, task: str, test_like: bool) -> pd.DataFrame:
    """The per-fold log table as the page shows it: no accuracy column for tags or numbers (none is
    logged: an empty column says nothing), fold 0 named test-like when it is."""
    if not TASKS[task].exclusive:
        table = table.drop(columns=["valid_accuracy at best"], errors="ignore")
    if test_like and len(table):
        table["fold"] = [f"{k} (test-like)" if k == 0 else str(k) for k in table["fold"]]
    return table


def _curves(exp_dir: Path, folds: list[int] | None, metric: str, experiment: str,
            out: Callable[[str], Path]) -> tuple[pd.DataFrame, dict[int, Path], list[str]]:
    """Training curves: every fold's log in one figure; training's own per-fold PNGs are kept beside it.
    Returns (the per-fold log table, the PNGs without a log, the log problems)."""
    logs, problems = read_logs(exp_dir, folds)
    table, _ = log_summary(exp_dir, metric, folds)
    exp, curves = Experiment(exp_dir), {}
    if logs:
        plot_curves(logs, metric, f"{experiment}: {len(logs)} fold(s)", out("curves.png"))
    for k, src in exp.fold_files("curve").items():
        if folds is None or k in folds:
            curves[k] = out(exp.curve(k).name)          # the same name in the report folder
            atomic_write_bytes(curves[k], src.read_bytes())
    for k, log in logs.items():
        if k not in curves:
            curves[k] = plot_log_curve(log, metric, f"{experiment} fold {k}", out(exp.curve(k).name))
    lone = {k: p for k, p in curves.items() if k not in logs}   # a PNG without its log: shown as it is
    return table, lone, problems


def single_label_sections(r: _Report) -> list[str]:
    """Confusion, most confused pairs, per-class metrics, worst errors, suspected label errors."""
    oof, classes, out = r.oof, r.classes, r.out
    tables = {"per_class": per_class_table(oof, classes), "confusion": confusion_table(oof, classes),
              "confused": most_confused(oof, classes), "worst": worst_errors(oof, classes)}
    atomic_write_with(out("per_class.csv"), _csv_writer(tables["per_class"], index=True))
    atomic_write_with(out("confusion.csv"), _csv_writer(tables["confusion"], index=True))
    atomic_write_with(out("most_confused.csv"), _csv_writer(tables["confused"], index=False))
    atomic_write_with(out("worst_errors.csv"), _csv_writer(tables["worst"], index=False))
    plot_confusion(oof, classes, out("confusion.png"), confused_classes(oof, classes))
    if r.load_image is not None:
        page.image_grid(tables["worst"], r.load_image, out("worst_errors.png"), heatmap=r.heat)
    label_errors_html = report_section(oof, classes, r.load_image, out, heatmap=r.heat)
    return (confusion_section(tables, classes, r.paths, len(oof))
            + errors_section(tables["worst"], r.paths, r.notes[:1]) + [label_errors_html])


def _given_predicted_tags(row) -> str:
    """A gallery tile of a multi-label row: its given and predicted tags."""
    return page.tags_title([("given", row.label or "(none)"), ("predicted", row.pred or "(none)")])


def _value_title(row) -> str:
    """A gallery tile of a regression row: true value, prediction and error, 4 significant digits."""
    g = lambda v: np.format_float_positional(float(v), precision=4, fractional=False, trim="-")   # noqa: E731
    return f"true {g(row.label)}\npredicted {g(row.pred)} ({'+' if row.error >= 0 else ''}{g(row.error)})"


def multilabel_sections(r: _Report) -> list[str]:
    """Per-label table (with the plan's thresholds), tags given together, worst rows, suspected label errors."""
    oof, classes, sep, out = r.oof, r.classes, r.sep, r.out
    thresholds = plan_label_thresholds(r.extra, classes)
    per_label = per_label_table(oof, classes, sep, thresholds)
    co = cooccurrence_table(oof, classes, sep)
    worst = worst_tag_errors(oof, classes, sep)
    atomic_write_with(out("per_label.csv"), _csv_writer(per_label, index=True))
    atomic_write_with(out("cooccurrence.csv"), _csv_writer(co, index=True))
    atomic_write_with(out("worst_errors.csv"), _csv_writer(worst, index=False))
    if len(classes) <= MAX_CLASSES_SHOWN:
        plot_cooccurrence(co, out("cooccurrence.png"))
    heat = r.heat and (lambda row: r.heat(row._replace(pred=row.focus)))   # Grad-CAM of the row's focus tag
    if r.load_image is not None:
        page.image_grid(worst, r.load_image, out("worst_errors.png"), heatmap=heat, title=_given_predicted_tags)
    label_errors_html = report_section(oof, classes, r.load_image, out, heatmap=heat, task="multilabel", sep=sep)
    return (per_label_section(per_label, len(classes), thresholds is not None)
            + cooccurrence_section(co, never_given_together(oof, classes, sep), r.paths)
            + tag_errors_section(worst, r.paths, r.notes[:1]) + [label_errors_html])


def regression_sections(r: _Report) -> list[str]:
    """Predicted vs true, errors by target range, the largest errors, why no label-error search."""
    oof, out = r.oof, r.out
    bins, worst = residual_table(oof), worst_value_errors(oof)
    atomic_write_with(out("residuals.csv"), _csv_writer(bins, index=False))
    atomic_write_with(out("worst_errors.csv"), _csv_writer(worst, index=False))
    plot_scatter(oof, out("scatter.png"))
    plot_residuals(bins, out("residuals.png"))
    if r.load_image is not None:
        page.image_grid(worst, r.load_image, out("worst_errors.png"), title=_value_title)
    return (residuals_section(bins, r.paths) + value_errors_section(worst, r.paths, r.heat is not None)
            + [report_section(oof, [], None, out, task="regression")])


_SECTIONS = {"single": single_label_sections, "multilabel": multilabel_sections, "regression": regression_sections}


def _safe_heatmap(heatmap: Callable, notes: list[str]) -> Callable:
    """heatmap that never raises: the first error turns the rest off and is kept in notes (one line)."""
    def safe(row):
        if notes:
            return None
        try:
            return heatmap(row)
        except Exception as e:  # noqa: BLE001 - a note on the page, the report goes on
            notes.append(f"No class-activation heatmaps: {type(e).__name__}: {e}".splitlines()[0][:300])
            return None
    return safe


def files_line(paths: dict[str, Path]) -> str:
    names = sorted(n for n in paths if n != "report.html")
    return f"<p class='muted'>files beside this page: {page.links(names)}</p>"


def write_blend_page(body: dict, report_dir: str | Path) -> Path:
    """reports/<a+b>/report.html: the blend's own first screen (what foldkit.report.predicted.write_blend_report
    records in cv_scores.json: its nested CV, test score, plan in words, verdicts) and links to each
    member's own report, so no figure of a member is shown as the blend's or the other way round."""
    e, f = html.escape, in_words
    names, metric = body["experiments"], body["metric"]
    extra = {k: v for k, v in (body.get("extra") or {}).items() if k != "test_score"}
    facts = [f"<div class='headline'>CV {e(metric)} {f(body.get('cv'), 5)}</div>",
             f"<p>nested CV of the whole plan (each fold scored by weights and post-processing fitted "
             f"without it); {e(metric)} is {'higher' if METRICS[metric].greater_is_better else 'lower'} "
             "is better.</p>"]
    if body.get("test_score") is not None:
        facts.append(f"<p>{test_line({'test_score': body['test_score'], 'metric': metric, 'extra': extra})}</p>")
    facts += facts_html(extra, metric)
    members = "".join(f"<li>{e(n)}: its own curves, confusion and errors in "
                      f"<a href='../{e(n, quote=True)}/report.html'>{e(n)}/report.html</a></li>" for n in names)
    parts = [f"<h1>Blend: {e(' + '.join(names))}</h1>",
             f"<div class='muted'>{len(names)} experiments; the figures of each are on its own page</div>",
             "<div class='first'><div class='facts'>" + "".join(facts) + "</div></div>",
             f"<h2>Members</h2><ul>{members}</ul>", files_line({"cv_scores.json": Path("cv_scores.json")})]
    path = Path(report_dir) / "report.html"
    atomic_write_text(path, page.document(f"Blend report: {' + '.join(names)}", parts))
    return path
