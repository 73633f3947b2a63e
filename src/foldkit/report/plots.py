"""The report's figures: confusion, the fold scores, tags given together, predicted vs true, errors by range.

Drawn on foldkit.figures' pyplot-free canvas; scikit-learn's ConfusionMatrixDisplay draws the matrices
(imported where used: it slows the start of every command). The training curves are foldkit.figures'
(training draws them too). This module must not import torch.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from foldkit.figures import figure, save_png


def plot_confusion(oof: pd.DataFrame, classes: list, path: str | Path, shown: list | None = None) -> Path:
    """Row-normalised confusion matrix PNG (each row of the full matrix sums to 1; the diagonal is
    the recall of the class). `shown`: only these classes (rows and columns of the full matrix's
    normalised values, so a row of the sub-matrix may sum to less than 1). The raw counts are in
    confusion.csv."""
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

    shown = list(classes) if shown is None else list(shown)
    cm = confusion_matrix(oof["label"], oof["pred"], labels=classes, normalize="true")
    pos = [list(classes).index(c) for c in shown]
    n = len(shown)
    side = max(5.0, 0.45 * n + 2.5)
    fig = figure(side + 1.0, side)
    ax = fig.add_subplot(1, 1, 1)
    ConfusionMatrixDisplay(cm[np.ix_(pos, pos)], display_labels=[str(c) for c in shown]).plot(
        ax=ax, values_format=".2f", include_values=n <= 20, cmap="Blues", colorbar=True,
        xticks_rotation="vertical" if n > 8 else "horizontal")
    sub = "" if n == len(classes) else f"\nthe {n} most confused of {len(classes)} classes"
    ax.set_title(f"Confusion, {len(oof)} OOF rows, share of each true class{sub}")
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    return save_png(fig, path)


def plot_fold_scores(summary: dict, path: str | Path) -> Path:
    """The competition metric of each fold as bars, the mean across folds as a line."""
    fig = figure(3.8, 2.4)
    ax = fig.add_subplot(1, 1, 1)
    scores = [np.nan if s is None else s for s in summary["fold_scores"]]
    ax.bar([str(f) for f in summary["folds"]], scores, color="tab:blue")
    if summary["cv_mean"] is not None:
        ax.axhline(summary["cv_mean"], color="black", lw=1, ls="--", label="mean")
        ax.legend(loc="lower right", fontsize=8)
    finite = [s for s in scores if math.isfinite(s)]
    if finite:   # zoom on the spread: fold differences are what this chart is for
        lo, hi = min(finite), max(finite)
        pad = max(hi - lo, abs(hi) * 0.01, 1e-6)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("fold")
    ax.set_title(f"{summary['metric']} per fold", fontsize=10)
    return save_png(fig, path)


def plot_cooccurrence(co: pd.DataFrame, path: str | Path) -> Path:
    """Share of the rows given the row's tag that are also given the column's tag (the diagonal is 1)."""
    from sklearn.metrics import ConfusionMatrixDisplay

    c = co.to_numpy().astype(np.float64)
    share = c / np.maximum(np.diag(c), 1)[:, None]
    n = len(c)
    side = max(5.0, 0.45 * n + 2.5)
    fig = figure(side + 1.0, side)
    ax = fig.add_subplot(1, 1, 1)
    ConfusionMatrixDisplay(share, display_labels=list(co.index)).plot(
        ax=ax, values_format=".2f", cmap="Greens", colorbar=True,
        xticks_rotation="vertical" if n > 8 else "horizontal")
    ax.set_title("Tags given together: the share of the rows given the row's tag\nthat are also given the column's tag")
    ax.set_xlabel("also given")
    ax.set_ylabel("rows given")
    return save_png(fig, path)


def plot_scatter(oof: pd.DataFrame, path: str | Path) -> Path:
    """Predicted against true target, one colour per fold, the y = x line of perfect predictions."""
    fig = figure(5.2, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    alpha = float(np.clip(300 / max(len(oof), 1), 0.15, 0.8))
    for i, (k, part) in enumerate(oof.groupby("fold", sort=True)):
        ax.scatter(part["label"], part["pred"], s=8, alpha=alpha, color=f"C{i % 10}", label=f"fold {k}", lw=0)
    lo = float(min(oof["label"].min(), oof["pred"].min()))
    hi = float(max(oof["label"].max(), oof["pred"].max()))
    ax.plot([lo, hi], [lo, hi], color="black", lw=1, ls="--", label="predicted = true")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted (out of fold)")
    ax.set_title(f"Predicted vs true, {len(oof)} OOF rows", fontsize=10)
    ax.legend(fontsize=8, markerscale=2)
    return save_png(fig, path)


def plot_residuals(bins: pd.DataFrame, path: str | Path) -> Path:
    """Per target range: mean error (bias, signed) and MAE as bars, the rows of each bin above them."""
    fig = figure(max(5.0, 0.7 * len(bins) + 2.0), 3.4)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(bins))
    ax.bar(x - 0.2, bins["mean_error"], width=0.4, color="tab:orange", label="mean error (predicted - true)")
    ax.bar(x + 0.2, bins["mae"], width=0.4, color="tab:blue", label="mean absolute error")
    ax.axhline(0, color="black", lw=0.8)
    for xi, (n, top) in enumerate(zip(bins["rows"], bins["mae"])):      # MAE >= |mean error|: the taller bar
        ax.annotate(f"{n}", (xi, top), ha="center", va="bottom", fontsize=7, color="#555")
    ax.set_xticks(x, bins["range"], rotation=45 if len(bins) > 5 else 0, ha="right" if len(bins) > 5 else "center")
    ax.set_xlabel("true target range (rows per bin above the bars)")
    ax.set_title("Errors by target range", fontsize=10)
    ax.legend(fontsize=8)
    return save_png(fig, path)
