"""Competition metrics on class probabilities, all from scikit-learn: the one registry of metric names.

`score(name, y, probs)` takes, per task kind: single-label, integer targets (indexes into the class
list) and an (N, C) probability array; multi-label, the (N, C) multi-hot targets and (N, C) sigmoid
probabilities (F scores at 0.5 before fitted thresholds); regression, (N,) targets and (N,) predictions.
(rmsle, written out here, equals scikit-learn's root_mean_squared_log_error for predictions >= 0.)
`METRICS` maps each name to its function, direction, the task kinds it scores and, for regression, the target
transform training uses (rmsle: log1p, foldkit.tasks.TRANSFORMS), so "best epoch",
early stopping and the CLI's `--metric` choices all come from here.
This module must not import torch (config reads the names for `--help`).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from foldkit.errors import ConfigError


class Metric(NamedTuple):
    fn: Callable[[np.ndarray, np.ndarray], float]
    greater_is_better: bool
    submits: str = "label"   # what a submission scored by it must hold: label, or probs (the ranking/loss)
    tasks: tuple = ("single",)   # the task kinds it scores (single, multilabel, regression)
    target: str = "none"         # regression: the target transform training uses (foldkit.tasks.TRANSFORMS)


# the metric a run of each task kind uses when --metric is not given


def for_task(task: str) -> list[str]:
    """The metric names that score a task kind."""
    return [k for k, m in METRICS.items() if task in m.tasks]


def _accuracy(y, probs):
    from sklearn import metrics as skm
    return float(skm.accuracy_score(y, probs.argmax(1)))


def _logloss(y, probs):
    from sklearn import metrics as skm
    p = np.clip(probs, 1e-15, 1.0)
    return float(skm.log_loss(y, p / p.sum(1, keepdims=True), labels=np.arange(probs.shape[1])))


def _f1_macro(y, probs):
    from sklearn import metrics as skm
    if y.ndim == 2:      # multi-label: F1 per label, averaged
        return float(skm.f1_score(y, probs >= 0.5, average="macro", zero_division=0))
    return float(skm.f1_score(y, probs.argmax(1), average="macro", labels=np.arange(probs.shape[1]),
                              zero_division=0))


def _f1(y, probs):
    from sklearn import metrics as skm
    if probs.shape[1] != 2:
        raise ConfigError(f"metric f1 is the binary F1 of the positive (second) class; this task has "
                          f"{probs.shape[1]} classes: use --metric f1_macro")
    return float(skm.f1_score(y, probs.argmax(1), pos_label=1, labels=[0, 1], zero_division=0))


def _qwk(y, probs):
    from sklearn import metrics as skm
    return float(skm.cohen_kappa_score(y, probs.argmax(1), weights="quadratic", labels=np.arange(probs.shape[1])))


def _auc(y, probs):
    from sklearn import metrics as skm
    if len(np.unique(y)) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(skm.roc_auc_score(y, probs[:, 1]))
    return float(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=np.arange(probs.shape[1])))


def _fbeta(average: str, beta: float):
    def fn(y, probs):
        from sklearn import metrics as skm
        return float(skm.fbeta_score(y, probs >= 0.5, beta=beta, average=average, zero_division=0))
    return fn


def _per_label(name: str):
    """Macro average over the labels that have positives and negatives (sklearn refuses the others)."""
    def fn(y, probs):
        from sklearn import metrics as skm
        ok = (y.min(0) == 0) & (y.max(0) == 1)
        if not ok.any():
            return float("nan")
        f = skm.average_precision_score if name == "map" else skm.roc_auc_score
        return float(f(y[:, ok], probs[:, ok], average="macro"))
    return fn


def _rmsle(y, pred):
    """Root mean squared log error, sqrt(mean((log1p(pred) - log1p(y))^2)), as Kaggle scores prices: NaN when a
    target is negative (undefined; train.py refuses such targets); predictions below 0 count as 0 (for a target
    >= 0 that is never worse, and the log of a negative price is undefined)."""
    y = np.asarray(y, dtype=np.float64)
    if len(y) and y.min() < 0:
        return float("nan")
    return float(np.sqrt(np.mean((np.log1p(np.clip(pred, 0.0, None)) - np.log1p(y)) ** 2)))


def _regression(name: str):
    def fn(y, pred):
        from sklearn import metrics as skm
        pred = pred.reshape(len(y))
        if name == "rmsle":
            return _rmsle(y, pred)
        if name == "rmse":
            return float(np.sqrt(skm.mean_squared_error(y, pred)))
        return float(skm.mean_absolute_error(y, pred) if name == "mae" else skm.r2_score(y, pred))
    return fn


ML, REG = ("multilabel",), ("regression",)
METRICS: dict[str, Metric] = {
    "accuracy": Metric(_accuracy, True),
    "logloss": Metric(_logloss, False, "probs"),
    "f1_macro": Metric(_f1_macro, True, tasks=("single", "multilabel")),
    "qwk": Metric(_qwk, True),
    "auc": Metric(_auc, True, "probs"),
    "f1": Metric(_f1, True),      # binary: F1 of the positive class
    "f1_samples": Metric(_fbeta("samples", 1.0), True, tasks=ML),
    "f1_micro": Metric(_fbeta("micro", 1.0), True, tasks=ML),
    "f2_samples": Metric(_fbeta("samples", 2.0), True, tasks=ML),    # Planet
    "map": Metric(_per_label("map"), True, "probs", tasks=ML),        # macro average precision
    "auc_macro": Metric(_per_label("auc"), True, "probs", tasks=ML),
    "rmse": Metric(_regression("rmse"), False, tasks=REG),
    "mae": Metric(_regression("mae"), False, tasks=REG),
    "rmsle": Metric(_regression("rmsle"), False, tasks=REG, target="log1p"),   # trained on log1p(target)
    "r2": Metric(_regression("r2"), True, tasks=REG),
}


def score(name: str, y: np.ndarray, probs: np.ndarray) -> float:
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
    return METRICS[name].fn(np.asarray(y), np.asarray(probs, dtype=np.float64))


def signed(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """(y, p) -> the metric with its sign set so that greater is better (what a search maximises)."""
    sign = 1.0 if METRICS[name].greater_is_better else -1.0
    return lambda y, p: sign * score(name, y, p)


def is_better(name: str, new: float, best: float | None) -> bool:
    if best is None or np.isnan(best):
        return not np.isnan(new)
    return new > best if METRICS[name].greater_is_better else new < best
