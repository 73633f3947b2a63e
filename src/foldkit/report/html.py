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
the kit shares are ``foldkit.report.page``). Every file goes through ``foldkit.io`` (temporary file + rename).

This module must not import torch.
"""
from __future__ import annotations

import dataclasses
import html
import json
import math
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from foldkit.report import page
from foldkit.errors import FoldkitError
from foldkit.experiment import Experiment
from foldkit.io import atomic_write_bytes, atomic_write_text, atomic_write_with
from foldkit.metrics import METRICS, score
from foldkit.tasks import TASKS

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

    Returns (oof, classes). ``id`` is read as str; single-label ``label``/``pred`` keep the user's label
    type (ints stay ints, strings such as "007" stay strings); multi-label ``label``/``pred`` are the
    tags as written (text, '' = no tag); regression ``label``/``pred`` are numbers and classes is [].
    Raises ReportError naming the files when there is no OOF file, when the class columns differ
    between folds, or when a file is malformed (missing columns, unknown labels, wrong fold number,
    duplicate ids).
    """
    exp_dir = Path(exp_dir)
    task, sep = Experiment(exp_dir).task()
    files = [(k, p) for k, p in Experiment(exp_dir).fold_files("oof").items() if folds is None or k in folds]
    if not files:
        raise ReportError(f"no out-of-fold predictions in {exp_dir}: expected oof_fold<k>.csv files "
                         "written by training (train at least one fold first)")
    frames, sources, names, first = [], [], None, None
    for k, path in files:
        df, prob_cols = _read_oof_file(path, k, task)
        if names is None:
            names, first = prob_cols, path
        elif prob_cols != names:
            only_first = [c for c in names if c not in prob_cols]
            only_this = [c for c in prob_cols if c not in names]
            detail = (f"only in {first.name}: {only_first}; only in {path.name}: {only_this}"
                      if only_first or only_this else "same columns in a different order")
            raise ReportError(f"class columns differ between {first} and {path} ({detail}); "
                             "all folds of one experiment must predict the same classes")
        frames.append(df)
        sources.append(np.full(len(df), path.name, dtype=object))
    oof = pd.concat(frames, ignore_index=True)
    # each row's file, for the messages: kept beside the frame, as a column inserted into a frame of
    # 100+ probability columns fragments it (pandas PerformanceWarning in the user's output)
    source = pd.Series(np.concatenate(sources))

    cfg_path = Experiment(exp_dir).config_path
    class_names = [c[len(PROB_PREFIX):] for c in names]
    classes = _typed_classes(class_names, read_config(exp_dir).get("classes"), cfg_path, first)
    if TASKS[task].label == "class":
        _type_labels(oof, classes, source, names)
    elif TASKS[task].label == "tags":
        known = {str(c) for c in classes}
        for col in ("label", "pred"):
            unknown = sorted({t for v in oof[col] for t in str(v).split(sep) if t.strip() and t.strip() not in known})
            if unknown:
                raise ReportError(f"{col} tag(s) {unknown[:10]} in {sorted(set(source))} are not among the label "
                                  f"columns {names}")
    else:
        oof["label"], oof["pred"] = oof["label"].astype("float64"), oof["pred"].astype("float64")
    dup = oof["id"].duplicated(keep=False).to_numpy()
    if dup.any():
        raise ReportError(f"id(s) {sorted(set(oof.loc[dup, 'id']))[:10]} appear more than once in "
                         f"{sorted(set(source[dup]))}: an id belongs to exactly one validation fold")
    oof["fold"] = oof["fold"].astype("int64")
    # stable sort: by fold, then the order of the rows in their file
    oof = oof.sort_values("fold", kind="stable").reset_index(drop=True)
    return oof, classes


def _read_oof_file(path: Path, k: int, task: str) -> tuple[pd.DataFrame, list[str]]:
    """One oof_fold{k}.csv as written (ids and tags as text), checked: its columns for the task kind,
    only fold k's rows, no empty probability or number. Returns (frame, prob columns)."""
    head = pd.read_csv(path, nrows=0).columns.tolist()
    missing = [c for c in BASE_COLS if c not in head]
    prob_cols = [c for c in head if c.startswith(PROB_PREFIX)]
    if missing or (not prob_cols) != (TASKS[task].label == "number"):
        want = BASE_COLS + ([] if TASKS[task].label == "number" else ["prob_<class>", "..."])
        raise ReportError(f"{path} is not the OOF file of a {task} experiment: expected columns {want}, "
                          f"found {head}")
    numbers = prob_cols + (["label", "pred"] if TASKS[task].label == "number" else [])
    dtypes = {"id": str} if TASKS[task].label == "number" else {"id": str, "label": str, "pred": str}
    df = pd.read_csv(path, dtype={**dtypes, **{c: "float64" for c in prob_cols}}, keep_default_na=False,
                     na_values={c: [""] for c in numbers})
    bad_fold = sorted(set(df["fold"].tolist()) - {k})
    if bad_fold:
        raise ReportError(f"{path} holds rows of fold(s) {bad_fold}; a per-fold OOF file holds only fold {k}")
    empty = df[numbers].isna().to_numpy().any(1)
    if empty.any():
        raise ReportError(f"{path}: empty/NaN {'values' if task == 'regression' else 'probabilities'} in data "
                          f"row(s) {(np.flatnonzero(empty) + 1).tolist()[:10]}")
    return df, prob_cols


def _type_labels(oof: pd.DataFrame, classes: list, source: pd.Series, names: list[str]) -> None:
    """Single-label `label`/`pred` as the class values (the user's types), refusing unknown ones."""
    to_class = {str(c): c for c in classes}
    for col in ("label", "pred"):
        unknown = ~oof[col].isin(list(to_class)).to_numpy()
        if unknown.any():
            vals = sorted(set(oof.loc[unknown, col].tolist()))[:10]
            raise ReportError(f"{col} value(s) {vals} in {sorted(set(source[unknown]))} are not among "
                             f"the class columns {names}")
        values = oof[col].map(to_class)
        oof[col] = values.astype("int64") if all(isinstance(c, int) for c in classes) else values


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


def oof_arrays(oof: pd.DataFrame, classes: list, task: str = "single", sep: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(y, predictions) of OOF rows, as metrics.score and the plan take them: single-label class indexes
    and (N, C) probabilities; multi-label (N, C) multi-hot and (N, C) sigmoid probabilities; regression
    (N,) targets and (N, 1) predictions."""
    if TASKS[task].label == "number":
        return oof["label"].to_numpy(dtype=np.float64), oof[["pred"]].to_numpy(dtype=np.float64)
    if TASKS[task].label == "tags":
        from foldkit.tags import multi_hot
        return multi_hot(oof["label"], sep, [str(c) for c in classes]).astype(np.float64), _probs(oof, classes)
    return _index(oof["label"], classes), _probs(oof, classes)


def cv_summary(oof: pd.DataFrame, classes: list, metric: str, task: str = "single", sep: str = "") -> dict:
    """Competition metric on all OOF rows and per fold (mean and std across folds), row count and folds
    present; single-label also accuracy and log loss. std is the population std (numpy's default, ddof=0)."""
    y, p = oof_arrays(oof, classes, task, sep)
    extras = ("accuracy", "logloss") if TASKS[task].exclusive else ()
    folds = sorted(int(f) for f in oof["fold"].unique())
    per_fold = []
    for f in folds:
        m = (oof["fold"] == f).to_numpy()
        per_fold.append({"fold": f, "n": int(m.sum()), metric: _finite(score(metric, y[m], p[m])),
                         **{x: _finite(score(x, y[m], p[m])) for x in extras}})
    fold_scores = [r[metric] for r in per_fold]
    arr = np.array([np.nan if s is None else s for s in fold_scores], dtype=np.float64)
    return {
        "metric": metric,
        "greater_is_better": METRICS[metric].greater_is_better,
        "task": task,
        "cv": _finite(score(metric, y, p)),
        "fold_scores": fold_scores,
        "cv_mean": _finite(arr.mean()),
        "cv_std": _finite(arr.std()),
        **{x: _finite(score(x, y, p)) for x in extras},
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

MAX_CLASSES_SHOWN = 20   # beyond this a matrix or per-class table is unreadable on a page


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


def plot_confusion(oof: pd.DataFrame, classes: list, path: str | Path, shown: list | None = None) -> Path:
    """Row-normalised confusion matrix PNG (each row of the full matrix sums to 1; the diagonal is
    the recall of the class). `shown`: only these classes (rows and columns of the full matrix's
    normalised values, so a row of the sub-matrix may sum to less than 1). The raw counts are in
    confusion.csv."""
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

    shown = list(classes) if shown is None else list(shown)
    cm = confusion_matrix(oof["label"], oof["pred"], labels=classes, normalize="true")
    pos = [list(classes).index(c) for c in shown]
    n = len(shown)
    side = max(5.0, 0.45 * n + 2.5)
    fig = page.figure(side + 1.0, side)
    ax = fig.add_subplot(1, 1, 1)
    ConfusionMatrixDisplay(cm[np.ix_(pos, pos)], display_labels=[str(c) for c in shown]).plot(
        ax=ax, values_format=".2f", include_values=n <= 20, cmap="Blues", colorbar=True,
        xticks_rotation="vertical" if n > 8 else "horizontal")
    sub = "" if n == len(classes) else f"\nthe {n} most confused of {len(classes)} classes"
    ax.set_title(f"Confusion, {len(oof)} OOF rows, share of each true class{sub}")
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    return page.save_png(fig, path)


def test_like_score(summary: dict, exp_config: dict) -> float | None:
    """Fold 0's score when the experiment's folds made fold 0 the test-like fold (make_folds
    --test-like-fold; config.json `test_like_fold`): the CV's estimate of the test score. Else None."""
    if not exp_config.get("test_like_fold") or 0 not in summary["folds"]:
        return None
    return summary["fold_scores"][summary["folds"].index(0)]


def plot_fold_scores(summary: dict, path: str | Path) -> Path:
    """The competition metric of each fold as bars, the mean across folds as a line."""
    fig = page.figure(3.8, 2.4)
    ax = fig.add_subplot(1, 1, 1)
    scores = [np.nan if s is None else s for s in summary["fold_scores"]]
    ax.bar([str(f) for f in summary["folds"]], scores, color="tab:blue")
    if summary["cv_mean"] is not None:
        ax.axhline(summary["cv_mean"], color="black", lw=1, ls="--", label="mean")
        ax.legend(loc="lower right", fontsize=8)
    finite = [s for s in scores if math.isfinite(s)]
    if finite:   # zoom on the spread: fold differences are what this chart is for
        lo, hi = min(finite), max(finite)
        pad = max(hi - lo, abs(hi) * 0.01, 1e-6)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("fold")
    ax.set_title(f"{summary['metric']} per fold", fontsize=10)
    return page.save_png(fig, path)


def plot_log_curve(log: pd.DataFrame, metric: str, title: str, path: str | Path) -> Path:
    """Loss and validation metric per epoch of one fold (training's curve_fold{k}.png)."""
    return plot_curves({0: log}, metric, title, path, label=False)


def _best_row(log: pd.DataFrame, metric: str):
    vm = pd.to_numeric(log["valid_metric"], errors="coerce")
    if not vm.notna().any():
        return log.index[-1]
    return vm.idxmax() if METRICS[metric].greater_is_better else vm.idxmin()


def plot_curves(logs: dict[int, pd.DataFrame], metric: str, title: str, path: str | Path,
                label: bool = True) -> Path:
    """Every fold in one figure: loss (train dashed, valid solid) and the validation metric per
    epoch, one colour per fold, the best epoch (the checkpoint kept) starred."""
    fig = page.figure(10, 3.4)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for i, (k, log) in enumerate(sorted(logs.items())):
        color, name = f"C{i % 10}", (f"fold {k}" if label else "valid")
        best = _best_row(log, metric)
        ax1.plot(log["epoch"], log["train_loss"], ls="--", color=color, alpha=0.7,
                 label="train (dashed)" if i == 0 else None)
        ax1.plot(log["epoch"], log["valid_loss"], color=color, marker=".", label=name)
        ax1.plot([log.at[best, "epoch"]], [log.at[best, "valid_loss"]], marker="*", ms=13, color=color, mec="black")
        ax2.plot(log["epoch"], log["valid_metric"], color=color, marker=".", label=name)
        ax2.plot([log.at[best, "epoch"]], [log.at[best, "valid_metric"]], marker="*", ms=13, color=color,
                 mec="black", label="best epoch" if i == 0 else None)
    ax1.set_title("loss", fontsize=10)
    ax2.set_title(f"valid {metric}", fontsize=10)
    for ax in (ax1, ax2):
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return page.save_png(fig, path)


# --------------------------------------------------------------------------- logs

def read_logs(exp_dir: str | Path, folds: list[int] | None = None) -> tuple[dict[int, pd.DataFrame], list[str]]:
    """The readable log_fold{k}.csv of an experiment (only `folds` when given) and the problems of
    the others (unreadable, missing columns, no epochs)."""
    logs, problems = {}, []
    for k, path in Experiment(exp_dir).fold_files("log").items():
        if folds is not None and k not in folds:
            continue
        try:
            log = pd.read_csv(path)
        except Exception as e:  # noqa: BLE001 - reported in the page
            problems.append(f"{path.name}: unreadable ({e})")
            continue
        missing = [c for c in LOG_COLS if c not in log.columns]
        if missing or log.empty:
            problems.append(f"{path.name}: " + (f"missing column(s) {', '.join(missing)}" if missing else "no epochs"))
            continue
        logs[k] = log
    return logs, problems


def log_summary(exp_dir: str | Path, metric: str, folds: list[int] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """One row per log_fold{k}.csv: epochs, best epoch by the competition metric, its scores,
    training time. Returns (table, problems) where problems names unreadable logs."""
    logs, problems = read_logs(exp_dir, folds)
    rows = []
    for k, log in logs.items():
        best = _best_row(log, metric)
        rows.append({"fold": k, "epochs": len(log), "best_epoch": log.at[best, "epoch"],
                     f"best valid {metric}": log.at[best, "valid_metric"],
                     "valid_loss at best": log.at[best, "valid_loss"],
                     "valid_accuracy at best": log.at[best, "valid_accuracy"],
                     "train minutes": float(log["seconds"].sum()) / 60})
    return pd.DataFrame(rows), problems


# --------------------------------------------------------------------------- multi-label and regression

def all_rows_figures(oof: pd.DataFrame, classes: list, metric: str, task: str, sep: str) -> dict:
    """What the first screen tells beside the competition metric: the task's other metrics on all OOF rows
    (`all_rows`); multi-label the mean number of tags per row; regression the target's range and the
    baseline to beat, predicting for each fold the mean target of the other folds (`mean_baseline`; the
    mean of all rows when one fold is present)."""
    from foldkit.metrics import for_task

    y, p = oof_arrays(oof, classes, task, sep)
    figures: dict[str, Any] = {"all_rows": {m: _finite(score(m, y, p)) for m in for_task(task) if m != metric}}
    if TASKS[task].label == "tags":
        figures["tags_per_row"] = float(y.sum(1).mean())
        return figures
    fold = oof["fold"].to_numpy()
    base = np.array([y[fold != f].mean() if (fold != f).any() else y.mean() for f in fold])
    figures["target"] = {"min": float(y.min()), "max": float(y.max()), "mean": float(y.mean())}
    figures["mean_baseline"] = {m: _finite(score(m, y, base[:, None])) for m in for_task(task)}
    return figures


def _tags(oof: pd.DataFrame, column: str, classes: list, sep: str) -> np.ndarray:
    """(N, L) 0/1 of a tags column (`label` or `pred`) of multi-label OOF rows."""
    from foldkit.tags import multi_hot
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

    y, yhat, p = _tags(oof, "label", classes, sep), _tags(oof, "pred", classes, sep), _probs(oof, classes)
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
    y = _tags(oof, column, classes, sep)
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
    y, yhat, p = _tags(oof, "label", classes, sep), _tags(oof, "pred", classes, sep), _probs(oof, classes)
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


def _num(v: float) -> str:
    """A target value as written by a person: 34, 0.5, 1.2346 (no trailing zeros)."""
    return np.format_float_positional(round(float(v), 4), trim="-")


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
        lo, hi = _num(y[m].min()), _num(y[m].max())
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


def plot_cooccurrence(co: pd.DataFrame, path: str | Path) -> Path:
    """Share of the rows given the row's tag that are also given the column's tag (the diagonal is 1)."""
    from sklearn.metrics import ConfusionMatrixDisplay

    c = co.to_numpy().astype(np.float64)
    share = c / np.maximum(np.diag(c), 1)[:, None]
    n = len(c)
    side = max(5.0, 0.45 * n + 2.5)
    fig = page.figure(side + 1.0, side)
    ax = fig.add_subplot(1, 1, 1)
    ConfusionMatrixDisplay(share, display_labels=list(co.index)).plot(
        ax=ax, values_format=".2f", cmap="Greens", colorbar=True,
        xticks_rotation="vertical" if n > 8 else "horizontal")
    ax.set_title("Tags given together: the share of the rows given the row's tag\nthat are also given the column's tag")
    ax.set_xlabel("also given")
    ax.set_ylabel("rows given")
    return page.save_png(fig, path)


def plot_scatter(oof: pd.DataFrame, path: str | Path) -> Path:
    """Predicted against true target, one colour per fold, the y = x line of perfect predictions."""
    fig = page.figure(5.2, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    alpha = float(np.clip(300 / max(len(oof), 1), 0.15, 0.8))
    for i, (k, part) in enumerate(oof.groupby("fold", sort=True)):
        ax.scatter(part["label"], part["pred"], s=8, alpha=alpha, color=f"C{i % 10}", label=f"fold {k}", lw=0)
    lo = float(min(oof["label"].min(), oof["pred"].min()))
    hi = float(max(oof["label"].max(), oof["pred"].max()))
    ax.plot([lo, hi], [lo, hi], color="black", lw=1, ls="--", label="predicted = true")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted (out of fold)")
    ax.set_title(f"Predicted vs true, {len(oof)} OOF rows", fontsize=10)
    ax.legend(fontsize=8, markerscale=2)
    return page.save_png(fig, path)


def plot_residuals(bins: pd.DataFrame, path: str | Path) -> Path:
    """Per target range: mean error (bias, signed) and MAE as bars, the rows of each bin above them."""
    fig = page.figure(max(5.0, 0.7 * len(bins) + 2.0), 3.4)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(bins))
    ax.bar(x - 0.2, bins["mean_error"], width=0.4, color="tab:orange", label="mean error (predicted - true)")
    ax.bar(x + 0.2, bins["mae"], width=0.4, color="tab:blue", label="mean absolute error")
    ax.axhline(0, color="black", lw=0.8)
    for xi, (n, top) in enumerate(zip(bins["rows"], bins["mae"])):      # MAE >= |mean error|: the taller bar
        ax.annotate(f"{n}", (xi, top), ha="center", va="bottom", fontsize=7, color="#555")
    ax.set_xticks(x, bins["range"], rotation=45 if len(bins) > 5 else 0, ha="right" if len(bins) > 5 else "center")
    ax.set_xlabel("true target range (rows per bin above the bars)")
    ax.set_title("Errors by target range", fontsize=10)
    ax.legend(fontsize=8)
    return page.save_png(fig, path)


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
                 heatmap: Callable | None = None, heatmap_note: str | None = None) -> dict:
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
    task, sep = Experiment(exp_dir).task()
    oof, classes = load_oof(exp_dir, folds)
    summary = cv_summary(oof, classes, metric, task, sep)
    experiment = cfg.get("experiment", exp_dir.name)
    n_folds_cfg = cfg.get("n_folds")
    complete = n_folds_cfg is None or summary["folds"] == list(range(int(n_folds_cfg)))
    result: dict[str, Any] = {"experiment": experiment, "model": cfg.get("model"),
                              "classes": classes, **summary,
                              "n_folds_config": n_folds_cfg, "complete": complete}
    if not TASKS[task].exclusive:
        result.update(all_rows_figures(oof, classes, metric, task, sep))
    if (test_like := test_like_score(summary, cfg)) is not None:
        result["test_like_fold"] = {"fold": 0, "score": test_like}
    if test_score is not None:
        result["test_score"] = test_score
    if extra:
        result["extra"] = extra
    paths: dict[str, Path] = {}

    def out(name: str) -> Path:
        paths[name] = report_dir / name
        return paths[name]

    atomic_write_with(out("oof.csv"), _csv_writer(oof, index=False))
    plot_fold_scores(summary, out("fold_scores.png"))
    notes = [heatmap_note] if heatmap_note else []
    heat = _safe_heatmap(heatmap, notes) if heatmap is not None and load_image is not None else None
    sections = _SECTIONS[task](_Report(oof, classes, sep, extra or {}, load_image, heat, notes, out, paths))
    table, lone, problems = _curves(exp_dir, folds, metric, experiment, out)
    if not TASKS[task].exclusive:     # no accuracy is logged for tags or numbers: an empty column says nothing
        table = table.drop(columns=["valid_accuracy at best"], errors="ignore")
    if test_like is not None and len(table):
        table["fold"] = [f"{k} (test-like)" if k == 0 else str(k) for k in table["fold"]]

    result_json = _jsonable(result)
    atomic_write_text(out("cv_scores.json"), json.dumps(result_json, indent=2, allow_nan=False) + "\n")
    paths["report.html"] = report_dir / "report.html"
    body = first_screen(result_json, paths, problems) + curves_section(table, paths, lone) + sections
    atomic_write_text(paths["report.html"], page.document(f"CV report: {experiment}", body + [files_line(paths)]))
    return {**result_json, "paths": {k: str(v) for k, v in paths.items()}}


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

    from foldkit.report.label_noise import report_section   # suspected label errors (cleanlab)
    label_errors_html = report_section(oof, classes, r.load_image, out, heatmap=r.heat)
    return (confusion_section(tables, classes, r.paths, len(oof))
            + errors_section(tables["worst"], r.paths, r.notes[:1]) + [label_errors_html])


def _tags_title(row) -> str:
    """A gallery tile of a multi-label row: its given and predicted tags, wrapped to the tile."""
    import textwrap
    wrap = lambda what, tags: textwrap.fill(f"{what}: {tags or '(none)'}", 34)   # noqa: E731
    return wrap("given", row.label) + "\n" + wrap("predicted", row.pred)


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
        page.image_grid(worst, r.load_image, out("worst_errors.png"), heatmap=heat, title=_tags_title)

    from foldkit.report.label_noise import report_section   # suspected label errors (cleanlab, multi-label)
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

    from foldkit.report.label_noise import report_section   # says why there is no search for a numeric target
    return (residuals_section(bins, r.paths) + value_errors_section(worst, r.paths, r.heat is not None)
            + [report_section(oof, [], None, out, task="regression")])


_SECTIONS = {"single": single_label_sections, "multilabel": multilabel_sections, "regression": regression_sections}


# --------------------------------------------------------------------------- the page

# the figures predict.py records in `extra` (blend.report_extra and the submission record), in words
_PLAN_SCORES = [("cv_final_nested", "in nested CV (fitted without the scored fold)"),
                ("cv_final_in_sample", "in-sample (fitted on all OOF rows)")]
_BEFORE_POST = [("cv_blend_nested", "nested"), ("cv_blend_in_sample", "in-sample")]
_KNOWN = {"plan", "cv_singles", "cv_rows", "verdicts", "cv_mean_blend", "submission", "test_accuracy",
          "test_score_before_postprocessing", *dict(_PLAN_SCORES), *dict(_BEFORE_POST)}


def _thresholds_in_words(step: Any) -> str:
    """Per-label thresholds in a sentence: how many and their range (each is in the per-label table)."""
    t = step.get("label_thresholds") if isinstance(step, dict) else None
    if not isinstance(t, list) or not t:
        return page.words(step)
    return (f"{len(t)} per-label thresholds from {page.words(min(t), 2)} to {page.words(max(t), 2)}, "
            f"median {page.words(float(np.median(t)), 2)}")


def plan_in_words(plan: dict) -> str:
    """blend.Plan.describe() as a sentence: which experiments, weights, post-processing."""
    weights = plan.get("weights") or {}
    steps = {k: v for k, v in plan.items() if k not in ("blend", "weights")}
    made = (f"the {plan.get('blend', 'mean')} blend of " + ", ".join(f"{n} (weight {w:.3f})" for n, w in weights.items())
            if len(weights) > 1 else f"the fold models of {', '.join(weights) or 'the experiment'}")
    post = "; ".join(f"{page.humanise(k)} ({_thresholds_in_words(v) if k == 'label_thresholds' else page.words(v)})"
                     for k, v in steps.items())
    return f"{made}, {'post-processed by ' + post if post else 'without post-processing'}"


def facts_in_words(extra: dict, metric: str) -> tuple[list[str], list[str]]:
    """(facts, verdicts) as sentences from cv_scores.json `extra`; a key the page does not know is
    told as `key in words: value in words`, never as JSON."""
    facts, verdicts, f = [], [page.sentence(v) for v in extra.get("verdicts") or []], page.words
    if "submission" in extra:
        facts.append(f"Submission file {extra['submission']}" + (f", made from {plan_in_words(extra['plan'])}."
                                                                 if "plan" in extra else "."))
    elif "plan" in extra:      # no test images: no submission was written
        facts.append(f"Predictions are made from {plan_in_words(extra['plan'])}.")
    scored = [f"{f(extra[k], 5)} {what}" for k, what in _PLAN_SCORES if extra.get(k) is not None]
    if scored:
        rows = f" on {extra['cv_rows']} OOF rows" if "cv_rows" in extra else ""
        what = "what is submitted" if "submission" in extra else "these predictions"
        facts.append(f"CV {metric} of {what}{rows}: " + ", ".join(scored) + ".")
    if (extra.get("plan") or {}).keys() - {"blend", "weights"}:
        before = [f"{f(extra[k], 5)} {what}" for k, what in _BEFORE_POST if extra.get(k) is not None]
        if before:
            facts.append(f"Before post-processing: {', '.join(before)}.")
    if len(extra.get("cv_singles") or {}) > 1:
        facts.append("Each experiment alone: " + ", ".join(f"{n} {f(v, 5)}" for n, v in extra["cv_singles"].items())
                     + (f"; their plain mean {f(extra['cv_mean_blend'], 5)}" if "cv_mean_blend" in extra else "") + ".")
    for k, v in extra.items():
        if k not in _KNOWN:
            facts.append(page.sentence(f"{page.humanise(k)}: {f(v)}"))
    return facts, verdicts


def _test_line(r: dict) -> str:
    ts, extra, f = r["test_score"], r.get("extra") or {}, page.words
    if isinstance(ts, dict):
        return f"Test: {f(ts)}."
    more = [f"accuracy {f(extra['test_accuracy'])}"] if "test_accuracy" in extra and r["metric"] != "accuracy" else []
    if "test_score_before_postprocessing" in extra:
        more.append(f"{f(extra['test_score_before_postprocessing'], 5)} without post-processing")
    return (f"Test {r['metric']} on the labelled test images: <b>{f(ts, 5)}</b>"
            + (f" ({', '.join(html.escape(m) for m in more)})" if more else "") + ".")


def _what_is_predicted(r: dict) -> str:
    if TASKS[r["task"]].label == "tags":
        return f"{len(r['classes'])} labels (multi-label, {r['tags_per_row']:.2f} tags per row on average)"
    if TASKS[r["task"]].label == "number":
        t = r["target"]
        return f"a numeric target from {_num(t['min'])} to {_num(t['max'])} (mean {_num(t['mean'])})"
    return f"{len(r['classes'])} classes"


def _other_scores(r: dict) -> str:
    """The first screen's sentence after the fold scores: single-label accuracy and log loss; the task's
    other metrics on all rows; for regression the mean-target baseline."""
    f = page.words
    if TASKS[r["task"]].exclusive:
        return f"Accuracy {f(r['accuracy'])}, log loss {f(r['logloss'])}."
    told = "On all rows: " + ", ".join(f"{m} {f(v)}" for m, v in r["all_rows"].items()) + "."
    if "mean_baseline" in r:
        base = r["mean_baseline"]
        others = ", ".join(f"{m} {f(v)}" for m, v in base.items() if m != r["metric"])
        told += (f" Predicting the mean target of the other folds scores {r['metric']} {f(base[r['metric']])}"
                 f" ({others}): the baseline to beat.")
    return told


def first_screen(r: dict, paths: dict[str, Path], problems: list[str]) -> list[str]:
    """Title, warnings and the box a reader sees first: CV mean ± std and on all OOF rows, the
    per-fold chart, the test score, the submission and what it is made from, the verdicts."""
    e, f, metric = html.escape, page.words, r["metric"]
    direction = {True: "higher is better", False: "lower is better"}.get(r["greater_is_better"], "")
    parts = [f"<h1>CV report: {e(str(r['experiment']))}</h1>",
             f"<div class='muted'>model {e(str(r['model']))}, {e(_what_is_predicted(r))}, "
             f"{r['n']} out-of-fold rows in {len(r['folds'])} fold(s)</div>"]
    warns = []
    if not r["complete"]:
        warns.append(f"Partial cross-validation: {len(r['folds'])} of {r['n_folds_config']} folds present "
                     f"(folds {f(r['folds'])}); scores cover only those folds.")
    warns += [f"Training log problem: {p}" for p in problems]
    parts += [f"<div class='warn'>{e(w)}</div>" for w in warns]
    facts = [f"<div class='headline'>CV {e(metric)} {f(r['cv_mean'])} ± {f(r['cv_std'])}</div>",
             f"<p>mean ± std of the {len(r['folds'])} fold scores ({e(direction)}); "
             f"<b>{f(r['cv'])}</b> on all {r['n']} out-of-fold rows. Per fold: "
             + e(", ".join(f"fold {k}{' (test-like)' if k == 0 and 'test_like_fold' in r else ''} {f(s)}"
                           for k, s in zip(r["folds"], r["fold_scores"])))
             + f". {e(_other_scores(r))}</p>"]
    if "test_like_fold" in r:
        facts.append(f"<p>Fold 0 holds the most test-like training images (make_folds --test-like-fold): its "
                     f"{e(metric)} <b>{f(r['test_like_fold']['score'])}</b> is the test-like estimate of the "
                     "test score; the CV above covers every fold.</p>")
    if "test_score" in r:
        facts.append(f"<p>{_test_line(r)}</p>")
    told, verdicts = facts_in_words(r.get("extra") or {}, metric)
    facts += [f"<p>{e(t)}</p>" for t in told]
    if verdicts:
        facts.append("<ul class='verdicts'>" + "".join(f"<li>{e(v)}</li>" for v in verdicts) + "</ul>")
    return parts + ["<div class='first'><div class='facts'>" + "".join(facts) + "</div>"
                    + page.img(paths["fold_scores.png"], f"{metric} per fold") + "</div>"]


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
                     f"by {page.words(lo, 2)} on average, the highest ({last}) under-predicted by "
                     f"{page.words(-hi, 2)}.</p>")
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


def files_line(paths: dict[str, Path]) -> str:
    names = sorted(n for n in paths if n != "report.html")
    return f"<p class='muted'>files beside this page: {page.links(names)}</p>"


def write_blend_page(body: dict, report_dir: str | Path) -> Path:
    """reports/<a+b>/report.html: the blend's own first screen (what predict.py's write_blend_report
    records in cv_scores.json: its nested CV, test score, plan in words, verdicts) and links to each
    member's own report, so no figure of a member is shown as the blend's or the other way round."""
    e, f = html.escape, page.words
    names, metric = body["experiments"], body["metric"]
    extra = {k: v for k, v in (body.get("extra") or {}).items() if k != "test_score"}
    facts = [f"<div class='headline'>CV {e(metric)} {f(body.get('cv'), 5)}</div>",
             f"<p>nested CV of the whole plan (each fold scored by weights and post-processing fitted "
             f"without it); {e(metric)} is {'higher' if METRICS[metric].greater_is_better else 'lower'} "
             "is better.</p>"]
    if body.get("test_score") is not None:
        facts.append(f"<p>{_test_line({'test_score': body['test_score'], 'metric': metric, 'extra': extra})}</p>")
    told, verdicts = facts_in_words(extra, metric)
    facts += [f"<p>{e(t)}</p>" for t in told]
    if verdicts:
        facts.append("<ul class='verdicts'>" + "".join(f"<li>{e(v)}</li>" for v in verdicts) + "</ul>")
    members = "".join(f"<li>{e(n)}: its own curves, confusion and errors in "
                      f"<a href='../{e(n, quote=True)}/report.html'>{e(n)}/report.html</a></li>" for n in names)
    parts = [f"<h1>Blend: {e(' + '.join(names))}</h1>",
             f"<div class='muted'>{len(names)} experiments; the figures of each are on its own page</div>",
             "<div class='first'><div class='facts'>" + "".join(facts) + "</div></div>",
             f"<h2>Members</h2><ul>{members}</ul>", files_line({"cv_scores.json": Path("cv_scores.json")})]
    path = Path(report_dir) / "report.html"
    atomic_write_text(path, page.document(f"Blend report: {' + '.join(names)}", parts))
    return path
