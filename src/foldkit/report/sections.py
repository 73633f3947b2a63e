"""The sections of report.html, as lists of HTML pieces: the first screen, the curves, and per task kind the
confusion, per-label, tags-together, residuals and worst-errors sections. The figures and tables they show
are written beforehand (foldkit.report.html); these only lay them out. This module must not import torch.
"""
from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from foldkit.oof import in_words
from foldkit.report import page
from foldkit.report.tables import MAX_CLASSES_SHOWN, frequent_pairs
from foldkit.report.words import constant_in_words, facts_in_words, other_scores, test_line, what_is_predicted


def first_screen(r: dict, paths: dict[str, Path], problems: list[str]) -> list[str]:
    """Title, warnings and the box a reader sees first: CV mean ± std and on all OOF rows, the
    per-fold chart, the test score, the submission and what it is made from, the verdicts."""
    e, f, metric = html.escape, in_words, r["metric"]
    direction = {True: "higher is better", False: "lower is better"}.get(r["greater_is_better"], "")
    parts = [f"<h1>CV report: {e(str(r['experiment']))}</h1>",
             f"<div class='muted'>model {e(str(r['model']))}, {e(what_is_predicted(r))}, "
             f"{r['n']} out-of-fold rows in {len(r['folds'])} fold(s)</div>"]
    warns = []
    if not r["complete"]:
        warns.append(f"Partial cross-validation: {len(r['folds'])} of {r['n_folds_config']} folds present "
                     f"(folds {f(r['folds'])}); scores cover only those folds.")
    warns += [f"Training log problem: {p}" for p in problems]
    constant, constant_warning = constant_in_words(r)
    warns += [constant_warning] if constant_warning else []
    parts += [f"<div class='warn'>{e(w)}</div>" for w in warns]
    facts = [f"<div class='headline'>CV {e(metric)} {f(r['cv_mean'])} ± {f(r['cv_std'])}</div>",
             f"<p>mean ± std of the {len(r['folds'])} fold scores ({e(direction)}); "
             f"<b>{f(r['cv'])}</b> on all {r['n']} out-of-fold rows"
             + (" (each at its best global threshold, fitted on the rows it scores, as training keeps its epochs"
                " and the submission is cut)" if r.get("scored_at_threshold") else "") + ". Per fold: "
             + e(", ".join(f"fold {k}{' (test-like)' if k == 0 and 'test_like_fold' in r else ''} {f(s)}"
                           for k, s in zip(r["folds"], r["fold_scores"])))
             + f". {e(other_scores(r))}" + (f" {e(constant)}" if constant else "") + "</p>"]
    if "test_like_fold" in r:
        facts.append(f"<p>Fold 0 holds the most test-like training images (make_folds --test-like-fold): its "
                     f"{e(metric)} <b>{f(r['test_like_fold']['score'])}</b> is the test-like estimate of the "
                     "test score; the CV above covers every fold.</p>")
    if "test_score" in r:
        facts.append(f"<p>{test_line(r)}</p>")
    facts += facts_html(r.get("extra") or {}, metric)
    return parts + ["<div class='first'><div class='facts'>" + "".join(facts) + "</div>"
                    + page.img(paths["fold_scores.png"], f"{metric} per fold") + "</div>"]


def facts_html(extra: dict, metric: str) -> list[str]:
    """What predict.py recorded (`extra`), told as paragraphs, then its verdicts as a list."""
    told, verdicts = facts_in_words(extra, metric)
    parts = [f"<p>{html.escape(t)}</p>" for t in told]
    if verdicts:
        parts.append("<ul class='verdicts'>" + "".join(f"<li>{html.escape(v)}</li>" for v in verdicts) + "</ul>")
    return parts


def curves_section(table: pd.DataFrame, paths: dict[str, Path], lone: dict[int, Path]) -> list[str]:
    parts = ["<h2>Training curves</h2>"]
    if "curves.png" in paths:
        parts.append(page.img(paths["curves.png"], "training curves of every fold"))
    for k, p in sorted(lone.items()):
        parts.append(f"<div class='muted'>fold {k} (no log, training's own figure)</div>"
                     + page.img(p, f"training curve fold {k}"))
    if len(table):
        parts.append(page.table(table, index=False))
    if "curves.png" not in paths and not lone:
        parts.append("<p class='muted'>no training log or curve figure in the experiment folder</p>")
    return parts


_ERROR_COLUMNS = {"label": "given label", "pred": "predicted", "prob_true": "probability of the given label",
                  "share_of_true": "share of the true class", "true": "true label"}


def confusion_section(tables: dict, classes: list, paths: dict[str, Path], n_rows: int) -> list[str]:
    """Row-normalised confusion (the most confused classes beyond MAX_CLASSES_SHOWN), the most
    confused pairs and per-class metrics (worst recall first beyond MAX_CLASSES_SHOWN); the full
    matrix is only in confusion.csv."""
    many = len(classes) > MAX_CLASSES_SHOWN
    parts = ["<h2>Confusion</h2>", page.img(paths["confusion.png"], "confusion matrix"),
             f"<p class='muted'>each cell: the share of the true class (row) predicted as the column; "
             f"the full {len(classes)} x {len(classes)} matrix of counts is in {page.links(['confusion.csv'])}</p>"]
    parts.append("<h3>Most confused pairs</h3>")
    parts.append(page.table(tables["confused"].rename(columns=_ERROR_COLUMNS), index=False)
                 if len(tables["confused"]) else "<p>no mistakes</p>")
    per_class = tables["per_class"]
    if many:
        worst = per_class.drop(index="macro avg").sort_values("recall", kind="stable").head(MAX_CLASSES_SHOWN)
        parts.append(f"<h3>Per-class recall, worst {MAX_CLASSES_SHOWN} of {len(classes)} classes</h3>"
                     + page.table(worst) + f"<p class='muted'>every class: {page.links(['per_class.csv'])}</p>")
    else:
        parts.append("<h3>Per-class metrics</h3>" + page.table(per_class))
    return parts


def errors_section(worst: pd.DataFrame, paths: dict[str, Path], notes: list[str] = ()) -> list[str]:
    parts = ["<h2>Worst errors</h2><p class='muted'>misclassified out-of-fold rows, most confident wrong "
             "prediction first: given label, predicted label and its probability"
             + ("; beside each, a Grad-CAM heatmap of the predicted class from its fold's model" if
                "worst_errors.png" in paths and not notes else "") + "</p>"]
    parts += [f"<p class='warn'>{html.escape(n)}</p>" for n in notes]
    if "worst_errors.png" in paths:
        parts.append(page.img(paths["worst_errors.png"], "worst errors"))
    parts.append(page.table(worst.rename(columns=_ERROR_COLUMNS), index=False) if len(worst) else "<p>no mistakes</p>")
    return parts


_TAG_COLUMNS = {"label": "given tags", "pred": "predicted tags", "missed": "given, not predicted",
                "extra": "predicted, not given", "row_f1": "F1 of the row", "label_a": "tag", "label_b": "and tag",
                "share_of_a": "share of the first tag's rows", "share_of_b": "share of the second tag's rows",
                "f1_at_threshold": "F1 at the threshold"}


def per_label_section(per_label: pd.DataFrame, n_labels: int, thresholds: bool) -> list[str]:
    """The per-label table: every label up to MAX_CLASSES_SHOWN, else the labels costing the most wrong
    tags (missed + extra) and the averages; every label is in per_label.csv."""
    parts = ["<h2>Per label</h2><p class='muted'>precision, recall and F1 of the tags written in the OOF "
             "predictions (probability 0.5 and above); average precision ranks each label's probabilities; "
             "positives: rows given the label"
             + ("; threshold: the plan's per-label threshold, fitted on these rows, so its F1 is in-sample"
                if thresholds else "") + "</p>"]
    table = per_label.rename(columns=_TAG_COLUMNS)
    if n_labels > MAX_CLASSES_SHOWN:
        labels = per_label.iloc[:n_labels]
        costly = labels.assign(_w=labels["missed"] + labels["extra"]).sort_values("_w", ascending=False, kind="stable")
        shown = list(costly.index[:MAX_CLASSES_SHOWN]) + list(per_label.index[n_labels:])
        parts.append(f"<h3>The {MAX_CLASSES_SHOWN} labels with the most wrong tags, of {n_labels}</h3>")
        table = table.loc[shown]
    parts.append(page.table(table) + f"<p class='muted'>every label: {page.links(['per_label.csv'])}</p>")
    return parts


def cooccurrence_section(co: pd.DataFrame, clashes: pd.DataFrame, paths: dict[str, Path]) -> list[str]:
    """Tags given together: the figure up to MAX_CLASSES_SHOWN labels, else the most frequent pairs; the
    pairs the model predicts together but the labels never have together."""
    parts = ["<h2>Tags given together</h2>"]
    if "cooccurrence.png" in paths:
        parts.append(page.img(paths["cooccurrence.png"], "tags given together"))
    else:
        pairs = frequent_pairs(co)
        parts.append(f"<h3>The {len(pairs)} pairs given together most often, of {len(co)} labels</h3>"
                     + (page.table(pairs.rename(columns=_TAG_COLUMNS), index=False) if len(pairs) else
                        "<p>no row has two tags</p>"))
    parts.append(f"<p class='muted'>rows given both tags, for every pair: {page.links(['cooccurrence.csv'])}</p>")
    if len(clashes):
        parts.append("<h3>Predicted together, never given together</h3><p>Tags the labels never combine "
                     "(such as two that exclude each other) but the model predicts on the same rows:</p>"
                     + page.table(clashes.rename(columns={**_TAG_COLUMNS, "rows": "rows predicted with both"}),
                                  index=False))
    return parts


def tag_errors_section(worst: pd.DataFrame, paths: dict[str, Path], notes: list[str] = ()) -> list[str]:
    parts = ["<h2>Worst errors</h2><p class='muted'>out-of-fold rows with wrong tags, lowest F1 of the row "
             "first: given and predicted tags"
             + ("; beside each, a Grad-CAM heatmap of the wrong tag the model was surest of" if
                "worst_errors.png" in paths and not notes and "focus" in worst else "") + "</p>"]
    parts += [f"<p class='warn'>{html.escape(n)}</p>" for n in notes]
    if "worst_errors.png" in paths:
        parts.append(page.img(paths["worst_errors.png"], "worst errors"))
    shown = worst.drop(columns=["focus"]).rename(columns=_TAG_COLUMNS)
    parts.append(page.table(shown, index=False) if len(worst) else "<p>no mistakes</p>")
    return parts


def residuals_section(bins: pd.DataFrame, paths: dict[str, Path]) -> list[str]:
    """Predicted vs true and the errors by target range, with the pull toward the mean told in words."""
    parts = ["<h2>Predicted vs true</h2>", page.img(paths["scatter.png"], "predicted vs true"),
             "<h2>Errors by target range</h2>", page.img(paths["residuals.png"], "errors by target range")]
    lo, hi = bins["mean_error"].iloc[0], bins["mean_error"].iloc[-1]
    if len(bins) > 1 and lo > 0 > hi:
        first, last = (html.escape(bins["range"].iloc[i]) for i in (0, -1))
        parts.append(f"<p>Predictions are pulled toward the mean: the lowest targets ({first}) are over-predicted "
                     f"by {in_words(lo, 2)} on average, the highest ({last}) under-predicted by "
                     f"{in_words(-hi, 2)}.</p>")
    parts.append(page.table(bins.rename(columns={"mean_error": "mean error (predicted - true)", "mae": "MAE",
                                                 "rmse": "RMSE", "target_mean": "mean target"}), index=False)
                 + f"<p class='muted'>bins of equal row counts; also in {page.links(['residuals.csv'])}</p>")
    return parts


def value_errors_section(worst: pd.DataFrame, paths: dict[str, Path], heatmaps_asked: bool = False) -> list[str]:
    parts = ["<h2>Worst errors</h2><p class='muted'>the out-of-fold rows predicted furthest from their "
             "target: true value, prediction and error (predicted - true)"
             + ("; no Grad-CAM heatmaps: they explain a class, and a regression model has none" if heatmaps_asked
                else "") + "</p>"]
    if "worst_errors.png" in paths:
        parts.append(page.img(paths["worst_errors.png"], "worst errors"))
    parts.append(page.table(worst.rename(columns={"label": "true", "pred": "predicted",
                                                  "error": "error (predicted - true)"}), index=False))
    return parts


def stack_section(stacked: dict, importance: pd.DataFrame | None, metric: str) -> list[str]:
    """A stacked experiment (stack.py): the CV of trees on the table alone, on the image experiments' OOF
    predictions alone and on both (config.json `stacked`), and the stacked trees' feature importance
    (importance.csv; its `measure` says whether it is split gain or permutation importance)."""
    names = {"table": "table only", "image": "image predictions only", "stacked": "table + image predictions"}
    cv = pd.DataFrame([{"trees on": names.get(v, v), f"CV {metric}": c} for v, c in (stacked.get("cv") or {}).items()])
    members = ", ".join(html.escape(str(m)) for m in stacked.get("members", []))
    parts = ["<h2>Stacking: the table and the image predictions</h2>",
             f"<p>Gradient-boosted trees ({html.escape(str(stacked.get('booster', '')))}) on the table's columns and the "
             f"out-of-fold predictions of {members or 'no image experiment'}, on the same folds:</p>",
             page.table(cv, index=False)]
    if importance is None or importance.empty:
        return parts + ["<p class='muted'>no importance.csv beside the experiment</p>"]
    top = importance[importance["variant"] == "stacked"].head(20)
    measure = html.escape(str(top["measure"].iloc[0])) if "measure" in top and len(top) else "importance"
    parts += [f"<h3>Feature importance (stacked trees)</h3><p class='muted'>{measure}; summed over folds and "
              f"seeds; share of the positive total. Every variant in {page.links(['importance.csv'])}</p>",
              page.table(top[["feature", "importance", "share"]], index=False)]
    return parts
