"""How ensemble members' probabilities are averaged: the one registry of ensemble modes.

numpy only (config reads the names for `--help` without importing torch).
"""
from __future__ import annotations

import numpy as np


def _mean(p: np.ndarray) -> np.ndarray:
    return p.mean(0)


def _geometric(p: np.ndarray) -> np.ndarray:
    # the mean of log-probabilities (= of logits up to a per-sample constant), renormalised:
    # more robust to one overconfident member
    lp = np.log(np.clip(p, 1e-15, 1.0)).mean(0)
    e = np.exp(lp - lp.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


ENSEMBLE_MODES = {"mean": _mean, "geometric": _geometric, "logit": _geometric}


def combine(probs: list[np.ndarray], how: str = "mean") -> np.ndarray:
    """Average member probabilities (N, C) with one of ENSEMBLE_MODES."""
    if how not in ENSEMBLE_MODES:
        raise ValueError(f"unknown ensemble method {how!r}: {', '.join(ENSEMBLE_MODES)}")
    return ENSEMBLE_MODES[how](np.stack(probs))
