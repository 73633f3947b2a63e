"""Competition metrics on class probabilities, all from scikit-learn.

`score(name, y, probs)` takes integer targets (indexes into the class list)
and an (N, C) probability array. `GREATER_IS_BETTER` says which way is up, so
early stopping and "best epoch" work for any of them.
"""
from __future__ import annotations

import numpy as np

METRICS = ("accuracy", "logloss", "f1_macro", "qwk", "auc", "f1")
GREATER_IS_BETTER = {"accuracy": True, "logloss": False, "f1_macro": True, "qwk": True, "auc": True, "f1": True}


def score(name: str, y: np.ndarray, probs: np.ndarray) -> float:
    from sklearn import metrics as skm

    y = np.asarray(y)
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = probs.shape[1]
    pred = probs.argmax(1)
    if name == "accuracy":
        return float(skm.accuracy_score(y, pred))
    if name == "logloss":
        p = np.clip(probs, 1e-15, 1.0)
        return float(skm.log_loss(y, p / p.sum(1, keepdims=True), labels=np.arange(n_classes)))
    if name == "f1_macro":
        return float(skm.f1_score(y, pred, average="macro", labels=np.arange(n_classes), zero_division=0))
    if name == "f1":  # binary F1 of the positive (second) class
        if n_classes != 2:
            raise ValueError(f"metric f1 is the binary F1 of the positive class; this task has {n_classes} "
                             "classes: use f1_macro")
        return float(skm.f1_score(y, pred, pos_label=1, labels=[0, 1], zero_division=0))
    if name == "qwk":
        return float(skm.cohen_kappa_score(y, pred, weights="quadratic", labels=np.arange(n_classes)))
    if name == "auc":
        present = np.unique(y)
        if len(present) < 2:
            return float("nan")
        if n_classes == 2:
            return float(skm.roc_auc_score(y, probs[:, 1]))
        return float(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=np.arange(n_classes)))
    raise ValueError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")


def is_better(name: str, new: float, best: float | None) -> bool:
    if best is None or np.isnan(best):
        return not np.isnan(new)
    return new > best if GREATER_IS_BETTER[name] else new < best
