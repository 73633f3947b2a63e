"""Multi-label tags: a tags column ('primary clear road', one string a row) and its multi-hot matrix.

    split_tags   each row's tags
    tag_names    the sorted tag names of a column (the labels of a multi-label task)
    multi_hot    (rows, labels) 0/1 float32 matrix of a column
    join_tags    multi_hot's inverse: each row's tags joined by the separator
    fit_top_tag / top_tag  at least one tag per row (its most probable label) when every training row has one:
                 the post-processing step `top_tag` of a tags file (foldkit.predict.calibrate)

Ground floor: reading a competition, its folds, training, blending, the submission and the report all
read tags the same way.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd


def split_tags(labels: pd.Series, sep: str) -> list[list[str]]:
    """Each row's tags ('' = none; repeated separators are one)."""
    return [[t for t in str(v).split(sep) if t.strip()] if isinstance(v, str) or pd.notna(v) else []
            for v in labels]


def tag_names(labels: pd.Series, sep: str) -> list[str]:
    """The sorted tag names of a multi-label column (numerically when every tag is an integer)."""
    names = {t.strip() for tags in split_tags(labels, sep) for t in tags}
    if names and all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def multi_hot(labels: pd.Series, sep: str, classes: list[str]) -> np.ndarray:
    """(rows, classes) 0/1 matrix of a multi-label column."""
    col = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(labels), len(classes)), dtype=np.float32)
    for r, tags in enumerate(split_tags(labels, sep)):
        for t in tags:
            out[r, col[t.strip()]] = 1.0
    return out


def join_tags(hot: np.ndarray, names: list, sep: str) -> list[str]:
    """multi_hot's inverse: each row's tags set (true) joined by sep, in label order ('' = none)."""
    return [sep.join(str(c) for c, on in zip(names, row) if on) for row in np.asarray(hot, dtype=bool)]


def fit_top_tag(probs: np.ndarray, y: np.ndarray, metric: str = "") -> np.ndarray:
    """[1.0] when every row of these targets has a tag (a row of the file without one is then surely
    wrong), else [0.0]: rows may be empty, the cut decides."""
    return np.array([1.0 if len(y) and bool((np.asarray(y) > 0.5).any(1).all()) else 0.0])


def top_tag(probs: np.ndarray, on: np.ndarray) -> np.ndarray:
    """Rows with no label at >= 0.5 (the cut the tags are taken at, after the per-label thresholds) get
    their most probable label raised to 0.5: one tag, the likeliest, instead of none."""
    p = np.array(probs, dtype=np.float64)
    if not float(np.asarray(on).reshape(-1)[0]) or p.ndim != 2 or not p.shape[1]:
        return p
    empty = ~(p >= 0.5).any(1)
    rows = np.flatnonzero(empty)
    p[rows, p[rows].argmax(1)] = 0.5
    return p
