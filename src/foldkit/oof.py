"""The out-of-fold (OOF) arithmetic: an experiment's OOF files and logs read and checked, its CV scores.

Inputs (file contracts, docs/ARCHITECTURE.md):

- ``models/<exp>/oof_fold{k}.csv``: ``id, fold, label, pred, prob_<class>...`` with the
  probability columns in class order (sorted label values).
- ``models/<exp>/log_fold{k}.csv``: ``epoch, train_loss, valid_loss, valid_accuracy,
  valid_metric, lr, seconds``.
- ``models/<exp>/config.json``: at least ``metric``, ``classes``, ``model``, ``experiment``.

On the ground floor because training (the best epoch, a teacher's OOF), prediction (the blend's CV),
the search (trials, the leaderboard) and the report all read the same figures. Competition metrics come
from ``foldkit.metrics.score``; hand-written here, because no library does it: reading and checking the
OOF files of all folds. Also the one way a figure is written as text (``score_text``, ``words``), and
which OOF rows a plan is fitted on (``oof_for_plan``: those predicted the way the test images are; the
test predictions average each fold model over the TTA views, training records its OOF with the views it
expected predict.py to use, ``oof_tta_fold{k}.csv``; stack.py reads its image features the same way).

This module must not import torch.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from foldkit.errors import FoldkitError
from foldkit.experiment import Experiment
from foldkit.metrics import METRICS, score
from foldkit.tags import multi_hot
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


def load_oof(exp_dir: str | Path, folds: list[int] | None = None, kind: str = "oof") -> tuple[pd.DataFrame, list]:
    """The ``oof_fold*.csv`` of an experiment, concatenated, sorted by fold then original order.
    ``folds``: only these folds (callers pass the finished folds, `Experiment.finished_folds`, so
    that a fold killed mid-run never counts); None reads every OOF file present. ``kind`` "oof_tta": the
    same rows predicted with predict.py's TTA views (foldkit.train.oof_tta).

    Returns (oof, classes). ``id`` is read as str; single-label ``label``/``pred`` keep the user's label
    type (ints stay ints, strings such as "007" stay strings); multi-label ``label``/``pred`` are the
    tags as written (text, '' = no tag); regression ``label``/``pred`` are numbers and classes is [].
    Raises ReportError naming the files when there is no OOF file, when the class columns differ
    between folds, or when a file is malformed (missing columns, unknown labels, wrong fold number,
    duplicate ids).
    """
    exp_dir = Path(exp_dir)
    task, sep = Experiment(exp_dir).task()
    files = [(k, p) for k, p in Experiment(exp_dir).fold_files(kind).items() if folds is None or k in folds]
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


def oof_probs(oof: pd.DataFrame, classes: list) -> np.ndarray:
    return oof[prob_columns(classes)].to_numpy(dtype=np.float64)


def class_index(values: pd.Series, classes: list) -> np.ndarray:
    pos = {c: i for i, c in enumerate(classes)}
    return np.array([pos[v] for v in values.tolist()], dtype=np.int64)


def finite(x: float) -> float | None:
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
        return multi_hot(oof["label"], sep, [str(c) for c in classes]).astype(np.float64), oof_probs(oof, classes)
    return class_index(oof["label"], classes), oof_probs(oof, classes)


def cv_summary(oof: pd.DataFrame, classes: list, metric: str, task: str = "single", sep: str = "",
               scorer: Callable[[np.ndarray, np.ndarray], float] | None = None) -> dict:
    """Competition metric on all OOF rows and per fold (mean and std across folds), row count and folds
    present; single-label also accuracy and log loss. std is the population std (numpy's default, ddof=0).
    scorer(y, p): how the metric is read (predict.calibrate.cv_scorer: a threshold metric at the threshold
    fitted on the rows scored, as the submission is cut; `scored_at_threshold` says so); default as it is."""
    y, p = oof_arrays(oof, classes, task, sep)
    at_threshold = scorer is not None
    scorer = scorer or (lambda yy, pp: score(metric, yy, pp))
    extras = ("accuracy", "logloss") if TASKS[task].exclusive else ()
    folds = sorted(int(f) for f in oof["fold"].unique())
    per_fold = []
    for f in folds:
        m = (oof["fold"] == f).to_numpy()
        per_fold.append({"fold": f, "n": int(m.sum()), metric: finite(scorer(y[m], p[m])),
                         **{x: finite(score(x, y[m], p[m])) for x in extras}})
    fold_scores = [r[metric] for r in per_fold]
    arr = np.array([np.nan if s is None else s for s in fold_scores], dtype=np.float64)
    return {
        "metric": metric,
        "greater_is_better": METRICS[metric].greater_is_better,
        "task": task,
        "cv": finite(scorer(y, p)),
        "scored_at_threshold": at_threshold,
        "fold_scores": fold_scores,
        "cv_mean": finite(arr.mean()),
        "cv_std": finite(arr.std()),
        **{x: finite(score(x, y, p)) for x in extras},
        "n": int(len(oof)),
        "folds": folds,
        "per_fold": per_fold,
    }


def test_like_score(summary: dict, exp_config: dict) -> float | None:
    """Fold 0's score when the experiment's folds made fold 0 the test-like fold (make_folds
    --test-like-fold; config.json `test_like_fold`): the CV's estimate of the test score. Else None."""
    if not exp_config.get("test_like_fold") or 0 not in summary["folds"]:
        return None
    return summary["fold_scores"][summary["folds"].index(0)]


def best_row(log: pd.DataFrame, metric: str):
    """The index of a log's best epoch by `metric` (the last epoch when no epoch was scored)."""
    vm = pd.to_numeric(log["valid_metric"], errors="coerce")
    if not vm.notna().any():
        return log.index[-1]
    return vm.idxmax() if METRICS[metric].greater_is_better else vm.idxmin()


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
        best = best_row(log, metric)
        rows.append({"fold": k, "epochs": len(log), "best_epoch": log.at[best, "epoch"],
                     f"best valid {metric}": log.at[best, "valid_metric"],
                     "valid_loss at best": log.at[best, "valid_loss"],
                     "valid_accuracy at best": log.at[best, "valid_accuracy"],
                     "train minutes": float(log["seconds"].sum()) / 60})
    return pd.DataFrame(rows), problems


# --------------------------------------------------------------------------- figures as text

def score_text(x: Any, digits: int = 5) -> str:
    """A score as the logs and pages write it: `digits` decimals, "n/a" when there is none (None, NaN)."""
    if x is None or (isinstance(x, (float, np.floating)) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def humanise(key: str) -> str:
    """An internal key as words: `test_accuracy` -> `test accuracy`."""
    return str(key).replace("_", " ")


def in_words(value: Any, digits: int = 4) -> str:
    """Any recorded value as plain text (no JSON): numbers rounded, dicts as `name value, ...`,
    lists joined with commas. Hand-written: a page or log line must never show braces or quotes to a reader."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return score_text(value, digits)
    if isinstance(value, dict):
        return ", ".join(f"{humanise(k)} {in_words(v, digits)}" for k, v in value.items())
    if isinstance(value, (list, tuple, np.ndarray)):
        return ", ".join(in_words(v, digits) for v in value)
    return str(value)


def value_text(v: float) -> str:
    """A target value as written by a person: 34, 0.5, 1.2346 (no trailing zeros)."""
    return np.format_float_positional(round(float(v), 4), trim="-")


def oof_for_plan(exp: Experiment, tta: list[str] | None, log=print) -> pd.DataFrame:
    """The experiment's OOF of its finished folds, with the TTA views `tta` ("none" first) when every
    finished fold recorded them, else the one-view OOF (the log says which folds lack them). A stacked
    experiment's OOF is its trees' (read as written); the log says when its trees were fitted on image
    predictions made with other views than `tta`, which the test images would then be predicted with."""
    folds = exp.finished_folds()
    stacked = exp.config().get("stacked")
    if stacked:
        fitted = stacked.get("tta") or ["none"]
        if tta and list(tta) != list(fitted):
            log(f"note: {exp.name}: its trees were fitted on image predictions made with the TTA views "
                f"{', '.join(fitted)}, but the test images are predicted with {', '.join(tta)}: the trees would be "
                f"given another kind of prediction than they learnt on. Predict with --tta "
                f"{','.join(v for v in fitted if v != 'none') or 'none'}, or stack again with --tta {','.join(tta)}")
        return load_oof(exp.dir, folds)[0]
    if not tta or list(tta) == ["none"]:
        return load_oof(exp.dir, folds)[0]
    recorded = {k: exp.summary(k).get("oof_tta") for k in folds}
    lacking = [k for k, v in recorded.items() if v != list(tta) or not exp.oof_tta(k).is_file()]
    if not lacking:
        return load_oof(exp.dir, folds, kind="oof_tta")[0]
    other = sorted({", ".join(v) for k, v in recorded.items() if k in lacking and v})
    log(f"note: {exp.name}: fold(s) {lacking} have no OOF predicted with the TTA views {', '.join(tta)}"
        + (f" (recorded: {'; '.join(other)})" if other else "")
        + ": post-processing is fitted on the one-view OOF, more confident than the test predictions it is "
        f"applied to. Train a new experiment with --tta {','.join(v for v in tta if v != 'none')}, or predict "
        "with the views its folds recorded")
    return load_oof(exp.dir, folds)[0]
