"""The report's tables, computed from the out-of-fold rows (foldkit.oof reads them).

Single-label: per-class metrics, the confusion matrix, the most confused pairs, the worst errors.
Multi-label: per-label metrics (with the plan's thresholds), tags given together, the worst rows.
Regression: errors by target range, the worst errors. Every task kind: the first screen's figures on all
rows. Per-class and per-label metrics and the confusion matrix come from scikit-learn (imported where
used: it slows the start of every command); the rankings are hand-written, no library ranks them.
This module must not import torch.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from foldkit.metrics import METRICS, for_task, score
from foldkit.oof import class_index, finite, oof_arrays, oof_probs, value_text
from foldkit.tags import multi_hot
from foldkit.tasks import TASKS, constant_answer

MAX_CLASSES_SHOWN = 20   # beyond this a matrix or per-class table is unreadable on a page


# --------------------------------------------------------------------------- single-label

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
    p = oof_probs(oof, classes)
    y = class_index(oof["label"], classes)
    yhat = class_index(oof["pred"], classes)
    rows = np.arange(len(oof))
    df = pd.DataFrame({"id": oof["id"].to_numpy(), "label": oof["label"].to_numpy(),
                       "pred": oof["pred"].to_numpy(), "confidence": p[rows, yhat],
                       "prob_true": p[rows, y], "fold": oof["fold"].to_numpy()})
    df = df[y != yhat].sort_values("confidence", ascending=False, kind="stable")
    return df.head(k).reset_index(drop=True)


def confused_classes(oof: pd.DataFrame, classes: list, limit: int = MAX_CLASSES_SHOWN) -> list:
    """The classes a readable confusion figure shows: all of them up to `limit`, else those
    involved in the most frequent mistakes (largest off-diagonal counts first), at most `limit`,
    in class order. Hand-written: no library picks a sub-matrix."""
    if len(classes) <= limit:
        return list(classes)
    cm = confusion_table(oof, classes).drop(index="All", columns="All").to_numpy().copy()
    np.fill_diagonal(cm, 0)
    chosen: list[int] = []
    for flat in np.argsort(-cm, axis=None, kind="stable"):
        if cm.flat[flat] == 0 or len(chosen) >= limit:
            break
        for c in divmod(int(flat), len(classes)):
            if c not in chosen and len(chosen) < limit:
                chosen.append(c)
    chosen = chosen or list(range(limit))
    return [classes[i] for i in sorted(chosen)]


# --------------------------------------------------------------------------- every task kind, multi-label, regression

def all_rows_figures(oof: pd.DataFrame, classes: list, metric: str, task: str, sep: str,
                     cut: Callable[[np.ndarray], np.ndarray] | None = None) -> dict:
    """What the first screen tells beside the competition metric: the task's other metrics on all OOF rows
    (`all_rows`; the label metrics at `cut`, where the report's `pred` is cut); multi-label the mean number of tags per row; regression the target's range and the
    baseline to beat, predicting for each fold the mean target of the other folds (`mean_baseline`; the
    mean of all rows when one fold is present)."""
    y, p = oof_arrays(oof, classes, task, sep)
    cut_p = p if cut is None else cut(p)
    figures: dict[str, Any] = {"all_rows": {m: finite(score(m, y, cut_p if METRICS[m].submits == "label" else p))
                                            for m in for_task(task) if m != metric}}
    if TASKS[task].label == "tags":
        figures["tags_per_row"] = float(y.sum(1).mean())
        return figures
    fold = oof["fold"].to_numpy()
    base = np.array([y[fold != f].mean() if (fold != f).any() else y.mean() for f in fold])
    figures["target"] = {"min": float(y.min()), "max": float(y.max()), "mean": float(y.mean())}
    figures["mean_baseline"] = {m: finite(score(m, y, base[:, None])) for m in for_task(task)}
    return figures


def constant_figures(oof: pd.DataFrame, classes: list, metric: str, task: str, sep: str) -> dict:
    """The best constant answer for the metric (foldkit.tasks.constant_answer: class frequencies or the
    commonest class, the commonest tags, the mean or median target), each row's fitted on the other folds'
    rows (all rows when one fold is present): what the CV must beat. {value, what}."""
    y, p = oof_arrays(oof, classes, task, sep)
    value, what = constant_answer(task, metric, y, y, n_outputs=p.shape[1], fold=oof["fold"].to_numpy())
    return {"value": finite(value), "what": what}


def tag_matrix(oof: pd.DataFrame, column: str, classes: list, sep: str) -> np.ndarray:
    """(N, L) 0/1 of a tags column (`label` or `pred`) of multi-label OOF rows."""
    return multi_hot(oof[column], sep, [str(c) for c in classes]).astype(np.int64)


def plan_label_thresholds(extra: dict, classes: list) -> np.ndarray | None:
    """The per-label thresholds predict.py's plan fitted (`extra["plan"]["label_thresholds"]`, as
    calibrate.POSTPROCESS describes them), or None when the plan has none or not one per label."""
    step = ((extra or {}).get("plan") or {}).get("label_thresholds")
    values = step.get("label_thresholds") if isinstance(step, dict) else None
    if not isinstance(values, list) or len(values) != len(classes):
        return None
    return np.asarray(values, dtype=np.float64)


def per_label_table(oof: pd.DataFrame, classes: list, sep: str, thresholds: np.ndarray | None = None) -> pd.DataFrame:
    """Per label: positives (rows given it), missed and extra tags, precision, recall and F1 of the tags
    written in `pred` (scikit-learn), average precision of its probabilities (empty without positives);
    with the plan's thresholds, each threshold and the F1 of `prob >= threshold` on these rows (in-sample:
    fitted on them). Most frequent label first, then 'micro avg' and 'macro avg' rows (macro average
    precision over the labels with positives)."""
    from sklearn.metrics import average_precision_score, f1_score, precision_recall_fscore_support

    y, yhat, p = tag_matrix(oof, "label", classes, sep), tag_matrix(oof, "pred", classes, sep), oof_probs(oof, classes)
    prec, rec, f1, pos = precision_recall_fscore_support(y, yhat, average=None, zero_division=0)
    ap = np.array([average_precision_score(y[:, j], p[:, j]) if pos[j] else np.nan for j in range(len(classes))])
    t = pd.DataFrame({"positives": pos, "missed": (y & (1 - yhat)).sum(0), "extra": ((1 - y) & yhat).sum(0),
                      "precision": prec, "recall": rec, "f1": f1, "average_precision": ap},
                     index=pd.Index([str(c) for c in classes], name="label"))
    if thresholds is not None:
        t["threshold"] = thresholds
        t["f1_at_threshold"] = f1_score(y, p >= thresholds, average=None, zero_division=0)
    t = t.sort_values("positives", ascending=False, kind="stable")
    totals = {c: int(t[c].sum()) for c in ("positives", "missed", "extra")}
    for avg in ("micro", "macro"):
        row = {**dict(zip(["precision", "recall", "f1"], precision_recall_fscore_support(
                   y, yhat, average=avg, zero_division=0)[:3])), **totals,
               "average_precision": np.nan if not pos.any() else (
                   average_precision_score(y, p, average="micro") if avg == "micro" else float(np.nanmean(ap)))}
        if thresholds is not None:
            row.update(threshold=np.nan, f1_at_threshold=f1_score(y, p >= thresholds, average=avg, zero_division=0))
        t.loc[f"{avg} avg"] = pd.Series(row)
    return t.astype({c: "int64" for c in ("positives", "missed", "extra")})


def cooccurrence_table(oof: pd.DataFrame, classes: list, sep: str, column: str = "label") -> pd.DataFrame:
    """Rows given both tags, label x label (the diagonal: rows given the tag)."""
    y = tag_matrix(oof, column, classes, sep)
    names = [str(c) for c in classes]
    return pd.DataFrame(y.T @ y, index=pd.Index(names, name="label"), columns=names)


def frequent_pairs(co: pd.DataFrame, k: int = 20) -> pd.DataFrame:
    """The k pairs of tags given together most often: rows with both, and that count as a share of each
    tag's rows. Ties keep label order."""
    c = co.to_numpy()
    a, b = np.triu_indices(len(c), k=1)
    df = pd.DataFrame({"label_a": co.index[a], "label_b": co.index[b], "rows": c[a, b],
                       "share_of_a": c[a, b] / np.maximum(c[a, a], 1), "share_of_b": c[a, b] / np.maximum(c[b, b], 1)})
    return df[df["rows"] > 0].sort_values("rows", ascending=False, kind="stable").head(k).reset_index(drop=True)


def never_given_together(oof: pd.DataFrame, classes: list, sep: str, k: int = 10) -> pd.DataFrame:
    """Pairs of tags predicted together on some rows but never given together (such as two weather tags
    of which each image has one): label_a, label_b, rows predicted with both. Most rows first."""
    given, pred = cooccurrence_table(oof, classes, sep).to_numpy(), cooccurrence_table(oof, classes, sep, "pred")
    both = pred.to_numpy()
    a, b = np.triu_indices(len(both), k=1)
    keep = (given[a, b] == 0) & (both[a, b] > 0)
    df = pd.DataFrame({"label_a": pred.index[a[keep]], "label_b": pred.index[b[keep]], "rows": both[a, b][keep]})
    return df.sort_values("rows", ascending=False, kind="stable").head(k).reset_index(drop=True)


def worst_tag_errors(oof: pd.DataFrame, classes: list, sep: str, k: int = 16) -> pd.DataFrame:
    """Rows with wrong tags, lowest row F1 (2 tp / (2 tp + fp + fn) of its tags) first, then the most wrong
    tags, then the largest probability error on its wrong tags: id, fold, label, pred, missed (given, not
    predicted), extra (predicted, not given), wrong_tags, row_f1, focus (the wrong tag the model was
    surest of: what a Grad-CAM heatmap explains). Ties keep OOF order."""
    y, yhat, p = tag_matrix(oof, "label", classes, sep), tag_matrix(oof, "pred", classes, sep), oof_probs(oof, classes)
    names = np.array([str(c) for c in classes], dtype=object)
    wrong = y != yhat
    tp, n_wrong = (y & yhat).sum(1), wrong.sum(1)
    row_f1 = 2 * tp / np.maximum(2 * tp + n_wrong, 1)
    miss = np.where(wrong, np.abs(y - p), 0.0)      # how sure the model was of each wrong tag
    df = pd.DataFrame({"id": oof["id"].to_numpy(), "fold": oof["fold"].to_numpy(),
                       "label": oof["label"].to_numpy(), "pred": oof["pred"].to_numpy(),
                       "missed": [" ".join(names[(y[i] == 1) & wrong[i]]) for i in range(len(y))],
                       "extra": [" ".join(names[(yhat[i] == 1) & wrong[i]]) for i in range(len(y))],
                       "wrong_tags": n_wrong, "row_f1": row_f1, "focus": names[miss.argmax(1)],
                       "_error": miss.sum(1)})
    df = df[n_wrong > 0].sort_values(["row_f1", "wrong_tags", "_error"], ascending=[True, False, False],
                                     kind="stable")
    return df.drop(columns="_error").head(k).reset_index(drop=True)


def residual_table(oof: pd.DataFrame, bins: int = 10) -> pd.DataFrame:
    """Errors by target range: up to `bins` bins of equal row counts (quantiles of the true target, pandas
    qcut; fewer when values repeat), each with its range (the smallest and largest target in it), rows,
    mean target, mean error (predicted - true: > 0 over-predicts), MAE and RMSE."""
    y, e = oof["label"].to_numpy(dtype=np.float64), (oof["pred"] - oof["label"]).to_numpy(dtype=np.float64)
    if y.min() == y.max():      # one value: qcut has no bin edges to cut at
        codes = np.zeros(len(y), dtype=np.int64)
    else:
        codes = pd.qcut(y, min(bins, len(y)), labels=False, duplicates="drop")
    rows = []
    for b in np.unique(codes):
        m = codes == b
        lo, hi = value_text(y[m].min()), value_text(y[m].max())
        rows.append({"range": lo if lo == hi else f"{lo} to {hi}",
                     "rows": int(m.sum()), "target_mean": y[m].mean(), "mean_error": e[m].mean(),
                     "mae": np.abs(e[m]).mean(), "rmse": float(np.sqrt((e[m] ** 2).mean()))})
    return pd.DataFrame(rows, columns=["range", "rows", "target_mean", "mean_error", "mae", "rmse"])


def worst_value_errors(oof: pd.DataFrame, k: int = 16) -> pd.DataFrame:
    """The rows predicted furthest from their target: id, fold, label (true), pred, error (pred - true).
    Largest |error| first; ties keep OOF order."""
    df = oof[["id", "fold", "label", "pred"]].assign(error=oof["pred"] - oof["label"])
    order = np.argsort(-np.abs(df["error"].to_numpy()), kind="stable")
    return df.iloc[order].head(k).reset_index(drop=True)
