"""Post-processing fitted on out-of-fold (OOF) predictions only, for the competition metric.

Pure functions over numpy arrays (probs (N, C), y (N,) class indexes). Each step is a
(fit, apply, describe) triple in the POSTPROCESS registry; foldkit.predict.blend fits them after the
blend and measures them with nested CV (fit on K-1 folds, score the held-out fold).

    temperature  one scalar T: softmax(log p / T). Fitted by scipy's minimize_scalar on the OOF
                 log loss. Label smoothing makes raw probabilities under-confident (T < 1 fixes
                 it); overfitted models are over-confident (T > 1). Argmax never changes.
    thresholds   one weight per class: predict argmax(p * w) (for a binary task, a threshold on
                 P(positive) = 1 / (1 + w1 / w0)). For F1 (binary / macro) on skewed classes.
    cutpoints    ordinal cut-points on the expected class index sum_j j * p_j (the QWK
                 "OptimizedRounder"): class k when cut[k-1] <= E < cut[k]. For QWK.
    label_thresholds  multi-label (probs (N, L) sigmoid, y (N, L) multi-hot): one global threshold
                 first, then one per label, for the F metrics. Applied as a monotone rescaling of each
                 label's probability that puts its threshold at 0.5 (what the F metrics and the
                 tags cut at), so rankings (map, auc_macro) are unchanged.
    top_tag      multi-label tags file: a row with no tag gets its most probable label (foldkit.tags.top_tag),
                 when every training row has a tag; after label_thresholds.
    clip         regression (predictions (N, 1), y (N,)): predictions clipped to the range of the targets
                 they were fitted on (a model's extrapolation beyond every training target is rarely right).

`steps_for(metric, calibrate, thresholds)` says which steps --calibrate / --thresholds turn on.
This module must not import torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from foldkit.choices import SWITCHES
from foldkit.ensemble import log_probs as _log_probs
from foldkit.ensemble import softmax
from foldkit.errors import ConfigError
from foldkit.metrics import score, signed
from foldkit.tags import fit_top_tag, top_tag
from foldkit.tasks import TASKS


# --------------------------------------------------------------------------- temperature

def apply_temperature(probs: np.ndarray, t: float) -> np.ndarray:
    return softmax(_log_probs(probs) / t)


def fit_temperature(probs: np.ndarray, y: np.ndarray, metric: str = "logloss") -> float:
    """The T in [0.05, 20] minimising the log loss of softmax(log p / T) on these rows."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax
    lp, rows = _log_probs(probs), np.arange(len(y))

    def nll(log_t):
        return -log_softmax(lp / np.exp(log_t), axis=1)[rows, y].mean()

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


# --------------------------------------------------------------------------- thresholds / cut-points

def _coordinate_search(params: np.ndarray, candidates: Callable[[np.ndarray, int], np.ndarray],
                       objective: Callable[[np.ndarray], float], passes: int = 3) -> np.ndarray:
    """Maximise objective(params) one coordinate at a time over candidate values. Hand-written:
    F1 and QWK are step functions of thresholds, where scipy's gradient and simplex methods stall
    on the first plateau; an exhaustive line search per coordinate does not."""
    params = params.astype(np.float64).copy()
    best = objective(params)
    for _ in range(passes):
        improved = False
        for i in range(len(params)):
            for v in candidates(params, i):
                trial = params.copy()
                trial[i] = v
                s = objective(trial)
                if s > best + 1e-12:
                    best, params, improved = s, trial, True
        if not improved:
            break
    return params


def apply_class_weights(probs: np.ndarray, w: np.ndarray) -> np.ndarray:
    p = probs * w
    return p / p.sum(1, keepdims=True)


def fit_class_weights(probs: np.ndarray, y: np.ndarray, metric: str, grid: int = 25) -> np.ndarray:
    """Per-class weights (class 0 fixed at 1) on a log grid over [1/20, 20] maximising the metric."""
    values = np.exp(np.linspace(np.log(0.05), np.log(20.0), grid))
    obj = signed(metric)
    return _coordinate_search(np.ones(probs.shape[1]), lambda w, i: values if i > 0 else [],
                              lambda w: obj(y, apply_class_weights(probs, w)))


def _expected_index(probs: np.ndarray) -> np.ndarray:
    return probs @ np.arange(probs.shape[1])


def apply_cutpoints(probs: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """One-hot of the class the cut-points give (the submission writes its argmax)."""
    k = np.digitize(_expected_index(probs), np.sort(cuts))
    return np.eye(probs.shape[1])[k]


def fit_cutpoints(probs: np.ndarray, y: np.ndarray, metric: str, grid: int = 21) -> np.ndarray:
    """C-1 increasing cut-points, started at 0.5, 1.5, ... (= rounding E), each searched between
    its neighbours."""
    c = probs.shape[1]
    obj = signed(metric)

    def candidates(cuts, i):
        lo = cuts[i - 1] if i > 0 else -0.5
        hi = cuts[i + 1] if i < c - 2 else c - 0.5
        return np.linspace(lo, hi, grid)[1:-1]

    return _coordinate_search(np.arange(c - 1) + 0.5, candidates, lambda cuts: obj(y, apply_cutpoints(probs, cuts)))


# --------------------------------------------------------------------------- multi-label thresholds

def apply_label_thresholds(probs: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Each label's probability mapped monotonically so that p >= t[label] <=> mapped >= 0.5."""
    t = np.clip(np.asarray(t, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.where(probs >= t, 0.5 + 0.5 * (probs - t) / (1 - t), 0.5 * probs / t)


_ML_F = {"f1_samples": (1.0, "samples"), "f2_samples": (2.0, "samples"), "f1_micro": (1.0, "micro"),
         "f1_macro": (1.0, "macro")}


def fast_fbeta(metric: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """sklearn's fbeta_score (zero_division=0) of a multi-label F metric at 0.5, in numpy. Hand-written:
    the threshold search scores thousands of trials and sklearn's per-call checks dominate (tested
    equal to metrics.score)."""
    beta, average = _ML_F[metric]
    b2 = beta * beta

    def f(y, probs):
        pred = probs >= 0.5
        yb = y > 0.5
        axis = {"samples": 1, "macro": 0, "micro": None}[average]
        tp = (pred & yb).sum(axis)
        fp = (pred & ~yb).sum(axis)
        fn = (~pred & yb).sum(axis)
        den = (1 + b2) * tp + b2 * fn + fp
        val = np.where(den > 0, (1 + b2) * tp / np.maximum(den, 1), 0.0)
        return float(np.mean(val))
    return f


def fit_global_threshold(probs: np.ndarray, y: np.ndarray, metric: str, grid: int = 19) -> float:
    """The one threshold on [0.05, 0.95], shared by every label, maximising the metric (fit_label_thresholds'
    first step; training keeps each fold's epoch by the metric at it)."""
    obj = fast_fbeta(metric) if metric in _ML_F else signed(metric)
    return float(max(np.linspace(0.05, 0.95, grid),
                     key=lambda v: obj(y, apply_label_thresholds(probs, np.full(probs.shape[1], v)))))


def fit_label_thresholds(probs: np.ndarray, y: np.ndarray, metric: str, grid: int = 19) -> np.ndarray:
    """A global threshold on [0.05, 0.95] maximising the metric, then each label's own from there."""
    values = np.linspace(0.05, 0.95, grid)
    obj = fast_fbeta(metric) if metric in _ML_F else signed(metric)
    best = fit_global_threshold(probs, y, metric, grid)
    return _coordinate_search(np.full(probs.shape[1], best), lambda t, i: values,
                              lambda t: obj(y, apply_label_thresholds(probs, t)), passes=2)


def threshold_fit(metric: str, task: str, n_classes: int) -> str:
    """Where one threshold decides the score the plan submits (its steps with every switch at auto):
    `label` (multi-label F metrics: a global threshold, then per-label ones), `binary` (two classes with
    the plan's thresholds: one free weight) or `none` (the metric as it is)."""
    steps = steps_for(metric, task=task)
    if "label_thresholds" in steps:
        return "label"
    if "thresholds" in steps and n_classes == 2:
        return "binary"
    return "none"


def fit_cut(fit: str, metric: str, y: np.ndarray, probs: np.ndarray) -> tuple[Callable[[np.ndarray], np.ndarray], float | None]:
    """(the cut `fit` fits on these rows as a map of probabilities, its threshold): one global threshold for
    every label (`label`), one class weight (`binary`), none (`none`: the probabilities as they are)."""
    if fit == "none" or len(y) == 0:
        return (lambda p: p), None
    if fit == "label":
        t = fit_global_threshold(probs, y, metric)
        return (lambda p: apply_label_thresholds(p, np.full(p.shape[1], t))), t
    w = fit_class_weights(probs, y, metric)
    return (lambda p: apply_class_weights(p, w)), float(w[0] / (w[0] + w[1]))


def score_fitted(fit: str, metric: str, y: np.ndarray, probs: np.ndarray) -> tuple[float, float | None]:
    """(the metric at the threshold `fit` fits on these rows, that threshold; None for `none`): the score an
    epoch is kept by and the CV the report, tune and the leaderboard show, so a threshold metric is never
    read at 0.5 where the submission is not cut there."""
    cut, t = fit_cut(fit, metric, y, probs)
    return score(metric, y, cut(probs)), t


def cv_scorer(metric: str, task: str, n_classes: int) -> Callable[[np.ndarray, np.ndarray], float] | None:
    """oof.cv_summary's scorer for a threshold metric (score_fitted on each fold's rows and on all rows);
    None where the metric is read as it is."""
    fit = threshold_fit(metric, task, n_classes)
    return None if fit == "none" else (lambda y, p: score_fitted(fit, metric, y, p)[0])


# --------------------------------------------------------------------------- regression range

def fit_clip(pred: np.ndarray, y: np.ndarray, metric: str = "rmse") -> np.ndarray:
    return np.array([float(np.min(y)), float(np.max(y))])


def apply_clip(pred: np.ndarray, lo_hi: np.ndarray) -> np.ndarray:
    return np.clip(pred, lo_hi[0], lo_hi[1])


# --------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class PostProcess:
    fit: Callable[[np.ndarray, np.ndarray, str], Any]
    apply: Callable[[np.ndarray, Any], np.ndarray]
    describe: Callable[[Any], Any]


def _describe_weights(w):
    w = np.asarray(w)
    if len(w) == 2:
        return {"class_weights": [round(float(x), 4) for x in w], "threshold": round(float(w[0] / (w[0] + w[1])), 4)}
    return {"class_weights": [round(float(x), 4) for x in w]}


POSTPROCESS: dict[str, PostProcess] = {
    "temperature": PostProcess(fit_temperature, apply_temperature, lambda t: {"T": round(float(t), 4)}),
    "thresholds": PostProcess(fit_class_weights, apply_class_weights, _describe_weights),
    "cutpoints": PostProcess(fit_cutpoints, apply_cutpoints,
                             lambda c: {"cutpoints": [round(float(x), 4) for x in np.sort(c)]}),
    "label_thresholds": PostProcess(fit_label_thresholds, apply_label_thresholds,
                                    lambda t: {"label_thresholds": [round(float(x), 4) for x in t]}),
    "top_tag": PostProcess(fit_top_tag, top_tag, lambda on: {"at_least_one_tag": bool(np.asarray(on).reshape(-1)[0])}),
    "clip": PostProcess(fit_clip, apply_clip, lambda c: {"range": [round(float(x), 6) for x in c]}),
}
# the predict.py switch that turns each step on or off (steps_for); verdicts name it
SWITCH_OF = {"temperature": "--calibrate", "thresholds": "--thresholds", "cutpoints": "--thresholds",
             "label_thresholds": "--thresholds", "top_tag": "--thresholds", "clip": "--clip"}


def steps_for(metric: str, calibrate: str = "auto", thresholds: str = "auto", task: str = "single",
              clip: str = "auto") -> tuple[str, ...]:
    """Which post-processing runs, from the switches and the task kind (foldkit.tasks: Task.post_steps).
    Single-label: temperature when --calibrate on (auto: metric logloss); cut-points (qwk) or per-class
    thresholds (other metrics) when --thresholds on (auto: f1 metrics and qwk; accuracy keeps the argmax).
    Multi-label: per-label thresholds (auto: the F metrics). Regression: clipping to the training targets'
    range (--clip, auto: on). A switch that does not apply to the task kind is refused when set on, never
    ignored."""
    for flag, v in (("--calibrate", calibrate), ("--thresholds", thresholds), ("--clip", clip)):
        if v not in SWITCHES:
            raise ConfigError(f"{flag} {v!r}: use one of {', '.join(SWITCHES)}")
    return TASKS[task].post_steps(metric, calibrate, thresholds, clip)
