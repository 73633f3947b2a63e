"""Multi-label tags: a label column of tag sets joined by a separator, as a 0/1 matrix and back.

On the ground floor because reading a competition (foldkit.data.reading), the task kinds (foldkit.tasks)
and the out-of-fold arithmetic (foldkit.oof) all read tags the same way.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def split_tags(labels: pd.Series, sep: str) -> list[list[str]]:
    """Each row's tags ('' = none; repeated separators are one)."""
    return [[t for t in str(v).split(sep) if t.strip()] if isinstance(v, str) or pd.notna(v) else []
            for v in labels]


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
