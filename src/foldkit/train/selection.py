"""Which epoch a fold keeps: each epoch scored as the submission will be scored, and the constant answer
every fold must beat.

    epoch_rule(metric, task, n_classes)  how a run's epochs are scored (EpochRule): the metric after the
        post-processing predict.py's plan applies by default (the task's post_steps with every switch at
        auto) wherever one threshold decides it:
          multi-label F metrics (plan: per-label thresholds): the metric at the epoch's best global threshold,
              fitted as the plan fits its first step (predict.calibrate.fit_global_threshold);
          two classes with the plan's thresholds (binary f1): the metric at the best threshold on the second
              class's probability (predict.calibrate.fit_class_weights: one free weight for two classes);
        otherwise the metric as it is (accuracy, AUC, log loss, map, regression; multi-class F1 keeps its
        argmax: per-class weights fitted on one fold's rows would chase its noise).
    score_epoch(rule, ...)  one validation pass's figures (EpochScore)
    keeps(metric, new, best)  whether an epoch beats the kept one: by the score; where the score is undefined
        (NaN: AUC of a fold with one class, map without positives) by the validation loss.

Why: sparse tags' sigmoid outputs sit below 0.5 for the first epochs, so an F metric cut at 0.5 is 0 at every
epoch and a fold kept its first, head-only epoch while the validation loss went on falling.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from foldkit import metrics
from foldkit.predict.calibrate import score_fitted, threshold_fit
from foldkit.tasks import TASKS, constant_answer, valid_loss


@dataclass(frozen=True)
class EpochRule:
    """How each epoch of a run is scored: `metric`, at a threshold fitted on the epoch's validation rows
    (`fit`: label (multi-label global threshold), binary (threshold on P(second class)) or none)."""
    metric: str
    fit: str = "none"

    @property
    def name(self) -> str:
        """The score's name in the log: `f1_samples@thr` when fitted at a threshold."""
        return f"{self.metric}@thr" if self.fit != "none" else self.metric

    def describe(self) -> str:
        """The rule in words, for the run's first lines."""
        how = {"label": f"{self.metric} at each epoch's best global threshold on its validation predictions "
                        "(predict.py fits per-label thresholds on all OOF rows afterwards)",
               "binary": f"{self.metric} at each epoch's best threshold on the positive class's probability "
                         "(as predict.py fits it)",
               "none": self.metric}[self.fit]
        return f"epochs kept by {how}; by the validation loss where the score is undefined"


def epoch_rule(metric: str, task: str, n_classes: int) -> EpochRule:
    return EpochRule(metric, threshold_fit(metric, task, n_classes))


@dataclass
class EpochScore:
    """One validation pass: the score the epoch is kept by (`value`), the metric without post-processing
    (`plain`), the threshold the score was taken at (None without one), accuracy (NaN but for single-label)
    and the validation loss."""
    value: float
    plain: float
    threshold: float | None
    accuracy: float
    loss: float


def score_epoch(rule: EpochRule, task: str, probs: np.ndarray, y: np.ndarray, loss: float, scale) -> EpochScore:
    """probs: the activated validation outputs; loss: the engine's (softmax cross-entropy; other task kinds
    score their loss themselves, foldkit.tasks); regression scored on the de-standardised predictions."""
    kind = TASKS[task]
    if kind.exclusive:
        accuracy = float((probs.argmax(1) == y).mean()) if len(y) else float("nan")
    else:
        accuracy, loss = float("nan"), valid_loss(task, probs, y, scale)
    scored = scale.restore(probs) if kind.standardises else probs
    plain = metrics.score(rule.metric, y, scored)
    if rule.fit == "none":
        return EpochScore(plain, plain, None, accuracy, loss)
    value, t = score_fitted(rule.fit, rule.metric, y, probs)
    return EpochScore(value, plain, t, accuracy, loss)


def keeps(metric: str, new: EpochScore, best: float | None, best_loss: float | None) -> bool:
    """Whether the new epoch beats the kept one (best: its score, best_loss: its validation loss; None before
    the first): by the score; an undefined score never beats a defined one; two undefined scores by the loss."""
    if best is None:
        return True
    if _undefined(new.value) and _undefined(best):
        return best_loss is None or _undefined(best_loss) or (not _undefined(new.loss) and new.loss < best_loss)
    return metrics.is_better(metric, new.value, best)


def _undefined(x) -> bool:
    return x is None or not math.isfinite(float(x))


def fold_constant(task: str, metric: str, y_train: np.ndarray, y_valid: np.ndarray, n_classes: int) -> dict:
    """The constant answer fitted on a fold's training rows, scored on its validation rows (foldkit.tasks)."""
    value, what = constant_answer(task, metric, y_train, y_valid, n_outputs=n_classes)
    return {"value": None if _undefined(value) else value, "what": what}


def beats_constant(metric: str, value, constant: dict) -> bool:
    """Whether a score beats the constant answer (True when either is undefined: nothing to warn about)."""
    if _undefined(value) or constant.get("value") is None:
        return True
    return metrics.is_better(metric, float(value), constant["value"])
