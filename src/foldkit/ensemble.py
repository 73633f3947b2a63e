"""How predictions are combined: the one owner of the averaging arithmetic and of the TTA view names.

    weighted_mean, weighted_geometric   (E, N, C) probabilities + (E,) weights -> (N, C)
    ENSEMBLE_MODES                      --ensemble: how one experiment's folds are averaged
    TTA_VIEWS                           view name -> axes flipped on an (N, C, H, W) batch
    views_of, trained_with_flips        the TTA views of a --tta value for an experiment's settings: what
                                        predict.py predicts the test with, training its OOF with, and
                                        stack.py reads its image features with
    log_probs, softmax                  the clipped log and the softmax every step shares

numpy and scipy only (config reads the names for `--help` without importing torch; the bundle's
ONNX runner uses them without torch).
"""
from __future__ import annotations

import numpy as np

from foldkit.errors import FoldkitError

EPS = 1e-15


class EnsembleError(FoldkitError, ValueError):
    """Checkpoints that cannot be ensembled; the message says which and why."""


def softmax(z: np.ndarray) -> np.ndarray:
    """Row softmax (scipy's), in the input's float type."""
    from scipy.special import softmax as _softmax
    return _softmax(z, axis=1)


def log_probs(p: np.ndarray) -> np.ndarray:
    """Log-probabilities, clipped: the logits up to a per-row constant, which softmax ignores."""
    return np.log(np.clip(p, EPS, 1.0))


def weighted_mean(probs: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.tensordot(w, probs, axes=1)


def weighted_geometric(probs: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted mean of log-probabilities, renormalised (= a weighted logit mean): more robust to
    one overconfident member."""
    return softmax(np.tensordot(w, log_probs(probs), axes=1))


ENSEMBLE_MODES = {"mean": weighted_mean, "geometric": weighted_geometric, "logit": weighted_geometric}

# axes of an (N, C, H, W) batch each view flips (torch.flip and np.flip both take them)
TTA_VIEWS: dict[str, tuple[int, ...]] = {"none": (), "hflip": (-1,), "vflip": (-2,)}


def combine(probs: list[np.ndarray] | np.ndarray, how: str = "mean") -> np.ndarray:
    """Equal-weight average of member probabilities (N, C) with one of ENSEMBLE_MODES."""
    if how not in ENSEMBLE_MODES:
        raise ValueError(f"unknown ensemble method {how!r}: {', '.join(ENSEMBLE_MODES)}")
    p = np.stack(probs)
    return ENSEMBLE_MODES[how](p, np.full(len(p), 1.0 / len(p)))


def trained_with_flips(settings: dict) -> bool:
    """Whether an experiment's settings (config.json, or a Config's dict) trained it on flipped images."""
    return bool(settings.get("hflip", True)) and settings.get("aug", "light") != "none"


def views_of(tta: str, flips: bool) -> list[str]:
    """The TTA views of a --tta value, "none" first: auto = hflip when the models trained with flips
    (`flips`), else no TTA; or the named views of ensemble.TTA_VIEWS. predict.py predicts the test images
    with them and training predicts its OOF rows with them (foldkit.train.oof_tta), so that the
    post-processing is fitted on the kind of prediction it is applied to."""
    if tta == "auto":
        return ["none", "hflip"] if flips else ["none"]
    views = [v.strip() for v in tta.split(",") if v.strip() and v.strip() != "none"]
    bad = [v for v in views if v not in TTA_VIEWS]
    if bad:
        raise EnsembleError(f"unknown --tta view(s) {bad}: use {', '.join(TTA_VIEWS)}")
    return ["none"] + views
