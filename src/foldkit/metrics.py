"""Competition metrics on class probabilities, all from scikit-learn: the one registry of metric names.

`score(name, y, probs)` takes integer targets (indexes into the class list) and an (N, C)
probability array. `METRICS` maps each name to its function and direction, so "best epoch",
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


def _accuracy(y, probs):
    from sklearn import metrics as skm
    return float(skm.accuracy_score(y, probs.argmax(1)))


def _logloss(y, probs):
    from sklearn import metrics as skm
    p = np.clip(probs, 1e-15, 1.0)
    return float(skm.log_loss(y, p / p.sum(1, keepdims=True), labels=np.arange(probs.shape[1])))


def _f1_macro(y, probs):
    from sklearn import metrics as skm
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


METRICS: dict[str, Metric] = {
    "accuracy": Metric(_accuracy, True),
    "logloss": Metric(_logloss, False, "probs"),
    "f1_macro": Metric(_f1_macro, True),
    "qwk": Metric(_qwk, True),
    "auc": Metric(_auc, True, "probs"),
    "f1": Metric(_f1, True),      # binary: F1 of the positive class
}


def score(name: str, y: np.ndarray, probs: np.ndarray) -> float:
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
    return METRICS[name].fn(np.asarray(y), np.asarray(probs, dtype=np.float64))


def is_better(name: str, new: float, best: float | None) -> bool:
    if best is None or np.isnan(best):
        return not np.isnan(new)
    return new > best if METRICS[name].greater_is_better else new < best
