"""Suspected label errors from the out-of-fold predictions (confident learning, cleanlab).

The OOF probabilities of all folds are exactly what confident learning needs: each sample was
predicted by a model that never saw it. ``cleanlab.filter.find_label_issues`` (not written
again here) flags the samples whose given label the OOF ensemble contradicts, ranked by
self-confidence (the OOF probability of the given label, lowest first).

cleanlab is an optional dependency (``pip install -e ".[audit]"``); without it the report
section says how to install it instead of failing. This module must not import torch.
"""
from __future__ import annotations

import html
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

CSV = "label_errors.csv"
PNG = "label_errors.png"
INSTALL_HINT = 'pip install "cleanlab>=2.6"  (or: pip install -e ".[audit]")'


def suspected_label_errors(oof: pd.DataFrame, classes: list) -> pd.DataFrame:
    """Ranked table of suspected label errors of an OOF frame (id, fold, label, pred, prob_<class>):
    rank, id, fold, label (given), pred, confidence (OOF probability of pred), prob_given.
    Raises ImportError when cleanlab is not installed."""
    from cleanlab.filter import find_label_issues

    probs = oof[[f"prob_{c}" for c in classes]].to_numpy(dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)
    index = {str(c): k for k, c in enumerate(classes)}
    y = oof["label"].astype(str).map(index).to_numpy()
    with warnings.catch_warnings():   # one warning per rare class would flood the user's output
        warnings.filterwarnings("ignore", message="May not flag all label issues", category=UserWarning)
        ranked = find_label_issues(labels=y, pred_probs=probs, return_indices_ranked_by="self_confidence")
    rows = np.asarray(ranked, dtype=int)
    yhat = probs[rows].argmax(1)
    return pd.DataFrame({"rank": np.arange(1, len(rows) + 1), "id": oof["id"].to_numpy()[rows],
                         "fold": oof["fold"].to_numpy()[rows], "label": oof["label"].to_numpy()[rows],
                         "pred": [classes[k] for k in yhat], "confidence": probs[rows, yhat],
                         "prob_given": probs[rows, y[rows]]})


def report_section(oof: pd.DataFrame, classes: list, load_image: Callable | None,
                   out: Callable[[str], Path], k: int = 24, heatmap: Callable | None = None) -> str:
    """Write label_errors.csv (+ label_errors.png with load_image) via out(name) -> path, and
    return the report.html section (heatmap: page.image_grid's). Without cleanlab: the section says how to install it."""
    from foldkit import page
    from foldkit.io import atomic_write_with

    head = ("<h2>Suspected label errors</h2><p class='muted'>training samples whose given label the "
            "out-of-fold ensemble contradicts most (cleanlab find_label_issues, ranked by the OOF "
            "probability of the given label): check them, fix or drop the wrong ones</p>")
    try:
        table = suspected_label_errors(oof, classes)
    except ImportError:
        return head + f"<div class='warn'>cleanlab is not installed: {html.escape(INSTALL_HINT)}</div>"
    atomic_write_with(out(CSV), lambda tmp: table.to_csv(tmp, index=False, lineterminator="\n"))
    parts = [head, f"<p>{len(table)} suspected of {len(oof)} rows; all in {page.links([CSV])}</p>"]
    if load_image is not None and len(table):
        page.image_grid(table.head(k), load_image, out(PNG), heatmap=heatmap)
        parts.append(f"<img alt='suspected label errors' src='{page.png_uri(out(PNG))}'>")
    parts.append(page.table(table.head(20).rename(columns={"label": "given label", "pred": "predicted",
                                                             "prob_given": "probability of the given label"}),
                            index=False) if len(table) else "<p>none found</p>")
    return "".join(parts)
