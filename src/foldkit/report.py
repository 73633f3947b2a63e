"""The honest CV report: out-of-fold (OOF) predictions -> scores, tables, plots, report.html.

Inputs (file contracts, docs/ARCHITECTURE.md):

- ``models/<exp>/oof_fold{k}.csv``: ``id, fold, label, pred, prob_<class>...`` with the
  probability columns in class order (sorted label values).
- ``models/<exp>/log_fold{k}.csv``: ``epoch, train_loss, valid_loss, valid_accuracy,
  valid_metric, lr, seconds``; ``curve_fold{k}.png`` may sit beside it.
- ``models/<exp>/config.json``: at least ``metric``, ``classes``, ``model``, ``experiment``.

Every number comes from a library: competition metrics from ``foldkit.metrics.score``,
per-class metrics and the confusion matrix from scikit-learn, tables from pandas, plots
from matplotlib (Agg, imported lazily inside the plotting functions). Hand-written here,
because no library does it: reading/validating the OOF files of all folds, the "most
confused pairs" and "worst errors" rankings and the page's sections (the pieces every HTML page of
the kit shares are ``foldkit.page``). Every file goes through ``foldkit.io`` (temporary file + rename).

This module must not import torch.
"""
from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from foldkit import page
from foldkit.errors import FoldkitError
from foldkit.experiment import Experiment
from foldkit.io import atomic_write_bytes, atomic_write_text, atomic_write_with
from foldkit.metrics import METRICS, score

PROB_PREFIX = "prob_"


class ReportError(FoldkitError, ValueError):
    """OOF files or an experiment config that cannot be reported on; the message names the file."""


BASE_COLS = ["id", "fold", "label", "pred"]
LOG_COLS = ["epoch", "train_loss", "valid_loss", "valid_accuracy", "valid_metric", "lr", "seconds"]


# --------------------------------------------------------------------------- reading

def read_config(exp_dir: str | Path) -> dict:
    """models/<exp>/config.json as a dict ({} when absent)."""
    return Experiment(exp_dir).config()


def _typed_classes(names: list[str], cfg_classes: Any, cfg_path: Path, first_file: Path) -> list:
    """Class values with the user's types: those of config.json `classes` when given, else
    integers when every name is a plain integer (prob_0, prob_1, ...), else the strings."""
    if cfg_classes is not None:
        cfg_classes = list(cfg_classes)
        if [str(c) for c in cfg_classes] != names:
            raise ReportError(
                f"class columns of {first_file.name} ({names}) do not match `classes` of "
                f"{cfg_path} ({[str(c) for c in cfg_classes]}): the OOF files and the config "
                "come from different runs")
        return cfg_classes
    if names and all(re.fullmatch(r"-?\d+", n) and str(int(n)) == n for n in names):
        return [int(n) for n in names]
    return list(names)


def load_oof(exp_dir: str | Path, folds: list[int] | None = None) -> tuple[pd.DataFrame, list]:
    """The ``oof_fold*.csv`` of an experiment, concatenated, sorted by fold then original order.
    ``folds``: only these folds (callers pass the finished folds, `Experiment.finished_folds`, so
    that a fold killed mid-run never counts); None reads every OOF file present.

    Returns (oof, classes). ``id`` is read as str; ``label``/``pred`` keep the user's label
    type (ints stay ints, strings such as "007" stay strings). Raises ValueError naming the
    files when there is no OOF file, when the class columns differ between folds, or when a
    file is malformed (missing columns, unknown labels, wrong fold number, duplicate ids).
    """
    exp_dir = Path(exp_dir)
    files = [(k, p) for k, p in Experiment(exp_dir).fold_files("oof").items() if folds is None or k in folds]
    if not files:
        raise ReportError(f"no out-of-fold predictions in {exp_dir}: expected oof_fold<k>.csv files "
                         "written by training (train at least one fold first)")
    frames, sources, names, first = [], [], None, None
    for k, path in files:
        head = pd.read_csv(path, nrows=0).columns.tolist()
        missing = [c for c in BASE_COLS if c not in head]
        prob_cols = [c for c in head if c.startswith(PROB_PREFIX)]
        if missing or not prob_cols:
            raise ReportError(f"{path} lacks column(s) {missing or ['prob_<class>']}; "
                             f"expected {BASE_COLS + ['prob_<class>', '...']}, found {head}")
        if names is None:
            names, first = prob_cols, path
        elif prob_cols != names:
            only_first = [c for c in names if c not in prob_cols]
            only_this = [c for c in prob_cols if c not in names]
            detail = (f"only in {first.name}: {only_first}; only in {path.name}: {only_this}"
                      if only_first or only_this else "same columns in a different order")
            raise ReportError(f"class columns differ between {first} and {path} ({detail}); "
                             "all folds of one experiment must predict the same classes")
        dtypes = {"id": str, "label": str, "pred": str}
        dtypes.update({c: "float64" for c in prob_cols})
        df = pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values={c: [""] for c in prob_cols})
        bad_fold = sorted(set(df["fold"].tolist()) - {k})
        if bad_fold:
            raise ReportError(f"{path} holds rows of fold(s) {bad_fold}; a per-fold OOF file holds "
                             f"only fold {k}")
        if df[prob_cols].isna().to_numpy().any():
            rows = (np.flatnonzero(df[prob_cols].isna().to_numpy().any(1)) + 1).tolist()[:10]
            raise ReportError(f"{path}: empty/NaN probabilities in data row(s) {rows}")
        frames.append(df)
        sources.append(np.full(len(df), path.name, dtype=object))
    oof = pd.concat(frames, ignore_index=True)
    # each row's file, for the messages: kept beside the frame, as a column inserted into a frame of
    # 100+ probability columns fragments it (pandas PerformanceWarning in the user's output)
    source = pd.Series(np.concatenate(sources))

    cfg_path = Experiment(exp_dir).config_path
    class_names = [c[len(PROB_PREFIX):] for c in names]
    classes = _typed_classes(class_names, read_config(exp_dir).get("classes"), cfg_path, first)
    to_class = {str(c): c for c in classes}
    for col in ("label", "pred"):
        unknown = ~oof[col].isin(list(to_class)).to_numpy()
        if unknown.any():
            vals = sorted(set(oof.loc[unknown, col].tolist()))[:10]
            raise ReportError(f"{col} value(s) {vals} in {sorted(set(source[unknown]))} are not among "
                             f"the class columns {names}")
        values = oof[col].map(to_class)
        oof[col] = values.astype("int64") if all(isinstance(c, int) for c in classes) else values
    dup = oof["id"].duplicated(keep=False).to_numpy()
    if dup.any():
        raise ReportError(f"id(s) {sorted(set(oof.loc[dup, 'id']))[:10]} appear more than once in "
                         f"{sorted(set(source[dup]))}: an id belongs to exactly one validation fold")
    oof["fold"] = oof["fold"].astype("int64")
    # stable sort: by fold, then the order of the rows in their file
    oof = oof.sort_values("fold", kind="stable").reset_index(drop=True)
    return oof, classes


# --------------------------------------------------------------------------- numbers

def prob_columns(classes: list) -> list[str]:
    return [f"{PROB_PREFIX}{c}" for c in classes]


def _probs(oof: pd.DataFrame, classes: list) -> np.ndarray:
    return oof[prob_columns(classes)].to_numpy(dtype=np.float64)


def _index(values: pd.Series, classes: list) -> np.ndarray:
    pos = {c: i for i, c in enumerate(classes)}
    return np.array([pos[v] for v in values.tolist()], dtype=np.int64)


def _finite(x: float) -> float | None:
    """JSON has no NaN: undefined scores (e.g. AUC of a one-class fold) become null."""
    x = float(x)
    return x if math.isfinite(x) else None


def cv_summary(oof: pd.DataFrame, classes: list, metric: str) -> dict:
    """Competition metric on all OOF rows and per fold (mean and std across folds), accuracy,
    log loss, row count and folds present. std is the population std (numpy's default, ddof=0)."""
    y = _index(oof["label"], classes)
    p = _probs(oof, classes)
    folds = sorted(int(f) for f in oof["fold"].unique())
    per_fold = []
    for f in folds:
        m = (oof["fold"] == f).to_numpy()
        per_fold.append({"fold": f, "n": int(m.sum()),
                         metric: _finite(score(metric, y[m], p[m])),
                         "accuracy": _finite(score("accuracy", y[m], p[m])),
                         "logloss": _finite(score("logloss", y[m], p[m]))})
    fold_scores = [r[metric] for r in per_fold]
    arr = np.array([np.nan if s is None else s for s in fold_scores], dtype=np.float64)
    return {
        "metric": metric,
        "greater_is_better": METRICS[metric].greater_is_better,
        "cv": _finite(score(metric, y, p)),
        "fold_scores": fold_scores,
        "cv_mean": _finite(arr.mean()),
        "cv_std": _finite(arr.std()),
        "accuracy": _finite(score("accuracy", y, p)),
        "logloss": _finite(score("logloss", y, p)),
        "n": int(len(oof)),
        "folds": folds,
        "per_fold": per_fold,
    }


def per_class_table(oof: pd.DataFrame, classes: list) -> pd.DataFrame:
    """precision, recall, f1, support per class (scikit-learn), plus a 'macro avg' row."""
    from sklearn.metrics import precision_recall_fscore_support

    kw = dict(labels=classes, zero_division=0)
    p, r, f, s = precision_recall_fscore_support(oof["label"], oof["pred"], **kw)
    mp, mr, mf, _ = precision_recall_fscore_support(oof["label"], oof["pred"], average="macro", **kw)
    t = pd.DataFrame({"precision": p, "recall": r, "f1": f, "support": s},
                     index=pd.Index([str(c) for c in classes], name="class"))
    t.loc["macro avg"] = [mp, mr, mf, int(s.sum())]
    t["support"] = t["support"].astype("int64")
    return t


def confusion_table(oof: pd.DataFrame, classes: list) -> pd.DataFrame:
    """Counts, true class (rows) x predicted class (columns), every class present even when
    never predicted, plus an 'All' row and column of totals (as pd.crosstab(margins=True))."""
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(oof["label"], oof["pred"], labels=classes)
    names = [str(c) for c in classes]
    t = pd.DataFrame(cm, index=pd.Index(names, name="true"), columns=pd.Index(names, name="pred"))
    t["All"] = t.sum(axis=1)
    t.loc["All"] = t.sum(axis=0)
    return t.astype("int64")


def most_confused(oof: pd.DataFrame, classes: list, k: int = 10) -> pd.DataFrame:
    """The k most frequent (true, pred) mistakes: count and share of that true class's rows.
    Ties keep class order. (Hand-written ranking of the off-diagonal confusion cells.)"""
    cm = confusion_table(oof, classes).drop(index="All", columns="All").to_numpy()
    rows = []
    for i, t in enumerate(classes):
        for j, p in enumerate(classes):
            if i != j and cm[i, j] > 0:
                rows.append({"true": t, "pred": p, "count": int(cm[i, j]),
                             "share_of_true": cm[i, j] / cm[i].sum()})
    df = pd.DataFrame(rows, columns=["true", "pred", "count", "share_of_true"])
    df = df.sort_values(["count", "share_of_true"], ascending=False, kind="stable")
    return df.head(k).reset_index(drop=True)


def worst_errors(oof: pd.DataFrame, classes: list, k: int = 16) -> pd.DataFrame:
    """Misclassified rows, most confident wrong prediction first: id, label, pred,
    confidence (probability of pred), prob_true (probability of the true label), fold.
    Ties keep OOF order (fold, then row)."""
    p = _probs(oof, classes)
    y = _index(oof["label"], classes)
    yhat = _index(oof["pred"], classes)
    rows = np.arange(len(oof))
    df = pd.DataFrame({"id": oof["id"].to_numpy(), "label": oof["label"].to_numpy(),
                       "pred": oof["pred"].to_numpy(), "confidence": p[rows, yhat],
                       "prob_true": p[rows, y], "fold": oof["fold"].to_numpy()})
    df = df[y != yhat].sort_values("confidence", ascending=False, kind="stable")
    return df.head(k).reset_index(drop=True)


# --------------------------------------------------------------------------- plots

def plot_confusion(oof: pd.DataFrame, classes: list, path: str | Path) -> Path:
    """Row-normalised confusion matrix PNG (each row sums to 1; the diagonal is the recall
    of the class). The raw counts are in confusion.csv / the HTML table."""
    from sklearn.metrics import ConfusionMatrixDisplay

    n = len(classes)
    side = max(5.0, 0.5 * n + 2.5)
    fig = page.figure(side + 1.0, side)
    ax = fig.add_subplot(1, 1, 1)
    ConfusionMatrixDisplay.from_predictions(
        oof["label"], oof["pred"], labels=classes, display_labels=[str(c) for c in classes],
        normalize="true", values_format=".2f", include_values=n <= 30, cmap="Blues",
        xticks_rotation="vertical" if n > 8 else "horizontal", ax=ax)
    ax.set_title(f"Confusion matrix, {len(oof)} OOF rows\nnormalised by true class (each row sums to 1)")
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    return page.save_png(fig, path)


def plot_log_curve(log: pd.DataFrame, metric: str, title: str, path: str | Path) -> Path:
    """Loss and validation metric per epoch from a log_fold{k}.csv (used when training left
    no curve_fold{k}.png)."""
    fig = page.figure(8, 3.2)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.plot(log["epoch"], log["train_loss"], marker="o", label="train loss")
    ax1.plot(log["epoch"], log["valid_loss"], marker="o", label="valid loss")
    ax1.set_xlabel("epoch")
    ax1.legend()
    ax2.plot(log["epoch"], log["valid_metric"], marker="o", color="tab:green", label=f"valid {metric}")
    ax2.set_xlabel("epoch")
    ax2.legend()
    fig.suptitle(title)
    return page.save_png(fig, path)


# --------------------------------------------------------------------------- logs

def log_summary(exp_dir: str | Path, metric: str) -> tuple[pd.DataFrame, list[str]]:
    """One row per log_fold{k}.csv: epochs, best epoch by the competition metric, its scores,
    training time. Returns (table, problems) where problems names unreadable logs."""
    rows, problems = [], []
    greater = METRICS[metric].greater_is_better
    for k, path in Experiment(exp_dir).fold_files("log").items():
        try:
            log = pd.read_csv(path)
        except Exception as e:  # noqa: BLE001 - reported in the page
            problems.append(f"{path.name}: unreadable ({e})")
            continue
        missing = [c for c in LOG_COLS if c not in log.columns]
        if missing or log.empty:
            problems.append(f"{path.name}: " + (f"missing column(s) {missing}" if missing else "no epochs"))
            continue
        vm = pd.to_numeric(log["valid_metric"], errors="coerce")
        best = (vm.idxmax() if greater else vm.idxmin()) if vm.notna().any() else log.index[-1]
        rows.append({"fold": k, "epochs": len(log), "best_epoch": log.at[best, "epoch"],
                     f"best valid {metric}": log.at[best, "valid_metric"],
                     "valid_loss at best": log.at[best, "valid_loss"],
                     "valid_accuracy at best": log.at[best, "valid_accuracy"],
                     "train minutes": float(log["seconds"].sum()) / 60})
    return pd.DataFrame(rows), problems


# --------------------------------------------------------------------------- report

def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, (float, np.floating)):
        return f"{x:.{digits}f}"
    return str(x)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _finite(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _csv_writer(df: pd.DataFrame, index: bool) -> Callable[[Path], None]:
    return lambda tmp: df.to_csv(tmp, index=index, lineterminator="\n")


def write_report(exp_dir: str | Path, report_dir: str | Path, load_image: Callable | None = None,
                 test_score: Any = None, extra: dict | None = None, folds: list[int] | None = None) -> dict:
    """Write the CV report of one experiment into report_dir and return its summary.

    Files: oof.csv, cv_scores.json, per_class.csv, confusion.csv, confusion.png,
    most_confused.csv, worst_errors.csv, worst_errors.png (only with load_image),
    curve_fold{k}.png (copied from exp_dir, or drawn from log_fold{k}.csv) and report.html,
    a single self-contained page (inline CSS, images as data URIs).
    test_score: a number (or a JSON-able dict) scored on a held-out test set, shown beside
    the CV. extra: more key/values recorded in cv_scores.json and shown in the page.
    The returned dict is cv_scores.json plus "paths" (name -> path written).
    """
    exp_dir, report_dir = Path(exp_dir), Path(report_dir)
    if load_image is not None:   # the error galleries share images: each is decoded once
        import functools
        load_image = functools.lru_cache(maxsize=256)(load_image)
    cfg = read_config(exp_dir)
    metric = cfg.get("metric")
    if not metric:
        raise ReportError(f"{Experiment(exp_dir).config_path} is missing or has no `metric`: cannot tell "
                         "which competition metric to report")
    oof, classes = load_oof(exp_dir, folds)
    summary = cv_summary(oof, classes, metric)
    experiment = cfg.get("experiment", exp_dir.name)
    n_folds_cfg = cfg.get("n_folds")
    complete = n_folds_cfg is None or summary["folds"] == list(range(int(n_folds_cfg)))
    result: dict[str, Any] = {"experiment": experiment, "model": cfg.get("model"),
                              "classes": classes, **summary,
                              "n_folds_config": n_folds_cfg, "complete": complete}
    if test_score is not None:
        result["test_score"] = test_score
    if extra:
        result["extra"] = extra
    paths: dict[str, Path] = {}

    def out(name: str) -> Path:
        paths[name] = report_dir / name
        return paths[name]

    per_class = per_class_table(oof, classes)
    confusion = confusion_table(oof, classes)
    confused = most_confused(oof, classes)
    worst = worst_errors(oof, classes)
    atomic_write_with(out("oof.csv"), _csv_writer(oof, index=False))
    atomic_write_with(out("per_class.csv"), _csv_writer(per_class, index=True))
    atomic_write_with(out("confusion.csv"), _csv_writer(confusion, index=True))
    atomic_write_with(out("most_confused.csv"), _csv_writer(confused, index=False))
    atomic_write_with(out("worst_errors.csv"), _csv_writer(worst, index=False))
    plot_confusion(oof, classes, out("confusion.png"))
    if load_image is not None:
        page.image_grid(worst, load_image, out("worst_errors.png"))

    from foldkit.label_noise import report_section   # suspected label errors (cleanlab)
    label_errors_html = report_section(oof, classes, load_image, out)

    # training curves: training's own PNG when present, else drawn from the log
    logs, problems = log_summary(exp_dir, metric)
    if folds is not None and len(logs):
        logs = logs[logs["fold"].isin(folds)].reset_index(drop=True)
    exp, curves = Experiment(exp_dir), {}
    curve_src, log_src = exp.fold_files("curve"), exp.fold_files("log")
    for k in sorted(set(curve_src) | set(log_src)):
        name = exp.curve(k).name          # the same name in the report folder
        if k in curve_src:
            curves[k] = out(name)
            atomic_write_bytes(curves[k], curve_src[k].read_bytes())
        elif k in logs.get("fold", pd.Series(dtype="int64")).tolist():
            log = pd.read_csv(log_src[k])
            curves[k] = plot_log_curve(log, metric, f"{experiment} fold {k}", out(name))

    result_json = _jsonable(result)
    atomic_write_text(out("cv_scores.json"), json.dumps(result_json, indent=2, allow_nan=False) + "\n")
    paths["report.html"] = report_dir / "report.html"
    text = _html(result_json, cfg, per_class, confusion, confused, worst, logs, problems, paths, curves, metric)
    text = text.replace("<p class='muted'>files: ", label_errors_html + "<p class='muted'>files: ", 1)
    atomic_write_text(paths["report.html"], text)
    return {**result_json, "paths": {k: str(v) for k, v in paths.items()}}


def _html(r: dict, cfg: dict, per_class: pd.DataFrame, confusion: pd.DataFrame, confused: pd.DataFrame,
          worst: pd.DataFrame, logs: pd.DataFrame, problems: list[str], paths: dict[str, Path],
          curves: dict[int, Path], metric: str) -> str:
    e = html.escape
    direction = {True: "higher is better", False: "lower is better"}.get(r["greater_is_better"], "")
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>CV report: {e(str(r['experiment']))}"
             f"</title><style>{page.CSS}</style></head><body>",
             f"<h1>CV report: {e(str(r['experiment']))}</h1>",
             f"<div class='muted'>model {e(str(r['model']))}, {len(r['classes'])} classes, "
             f"{r['n']} out-of-fold rows</div>"]
    warns = []
    if not r["complete"]:
        warns.append(f"Partial cross-validation: {len(r['folds'])} of {r['n_folds_config']} folds present "
                     f"(folds {r['folds']}); scores cover only those folds.")
    warns += [f"Training log problem: {p}" for p in problems]
    parts += [f"<div class='warn'>{e(w)}</div>" for w in warns]

    fold_txt = ", ".join(f"fold {f}: {_fmt(s)}" for f, s in zip(r["folds"], r["fold_scores"]))
    # (label, value already escaped as HTML)
    kv = [("experiment", e(str(r["experiment"]))), ("model", e(str(r["model"]))),
          (f"CV {metric} (all OOF rows)", f"<span class='big'>{_fmt(r['cv'])}</span> ({e(direction)})"),
          (f"{metric} per fold: mean ± std", f"{_fmt(r['cv_mean'])} ± {_fmt(r['cv_std'])}"),
          (f"{metric} per fold", fold_txt),
          ("accuracy (all OOF rows)", _fmt(r["accuracy"])),
          ("log loss (all OOF rows)", _fmt(r["logloss"])),
          ("OOF rows / folds", f"{r['n']} / {r['folds']}")]
    if "test_score" in r:
        ts = r["test_score"]
        kv.append(("test score", ", ".join(f"{e(str(k))}: {_fmt(v)}" for k, v in ts.items())
                   if isinstance(ts, dict) else e(_fmt(ts))))
    for k, v in (r.get("extra") or {}).items():
        kv.append((str(k), e(v if isinstance(v, str) else _fmt(v) if isinstance(v, float)
                             else json.dumps(v, default=str))))
    parts.append("<h2>Scores</h2><table class='kv'>" + "".join(
        f"<tr><td>{e(k)}</td><td>{v}</td></tr>" for k, v in kv) + "</table>")
    parts.append(page.table(pd.DataFrame(r["per_fold"]), index=False))

    parts.append("<h2>Training curves</h2>")
    if not logs.empty:
        parts.append(page.table(logs, index=False))
    for k, p in sorted(curves.items()):
        parts.append(f"<div>fold {k}</div><img alt='training curve fold {k}' src='{page.png_uri(p)}'>")
    if not curves and logs.empty:
        parts.append("<p class='muted'>no curve_fold*.png or log_fold*.csv in the experiment folder</p>")

    parts.append("<h2>Confusion matrix</h2>")
    parts.append(f"<img alt='confusion matrix' src='{page.png_uri(paths['confusion.png'])}'>")
    parts.append("<p class='muted'>counts: rows = true label, columns = predicted label</p>")
    parts.append(page.table(confusion))
    parts.append("<h2>Per-class metrics</h2>" + page.table(per_class))
    parts.append("<h2>Most confused pairs</h2>")
    parts.append(page.table(confused, index=False) if len(confused) else "<p>no mistakes</p>")
    parts.append("<h2>Worst errors</h2><p class='muted'>misclassified OOF rows, most confident "
                 "wrong prediction first</p>")
    if "worst_errors.png" in paths:
        parts.append(f"<img alt='worst errors' src='{page.png_uri(paths['worst_errors.png'])}'>")
    parts.append(page.table(worst, index=False) if len(worst) else "<p>no mistakes</p>")
    parts.append("<p class='muted'>files: " + e(", ".join(sorted(paths))) + "</p></body></html>\n")
    return "\n".join(parts)
