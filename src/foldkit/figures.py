"""Matplotlib figures without pyplot's global state, written as PNG files atomically, and the training curves.

On the ground floor because training draws its per-fold curve and the learning-rate range test its
plot, and the report and the audit draw every figure of their pages with the same two helpers.
matplotlib is imported where a figure is made: it measurably slows the start of every command.
This module must not import torch.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from foldkit.io import atomic_write_with
from foldkit.oof import best_row


def figure(w: float, h: float):
    """A matplotlib Figure bound to the Agg canvas, without pyplot's global state.

    scikit-learn's display imports pyplot; the Agg backend is selected first unless the caller
    already chose a backend."""
    import matplotlib
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: str | Path) -> Path:
    path = Path(path)
    # the temporary file has no .png suffix, so the format is given explicitly
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
    return path


def plot_log_curve(log: pd.DataFrame, metric: str, title: str, path: str | Path) -> Path:
    """Loss and validation metric per epoch of one fold (training's curve_fold{k}.png)."""
    return plot_curves({0: log}, metric, title, path, label=False)


def plot_curves(logs: dict[int, pd.DataFrame], metric: str, title: str, path: str | Path,
                label: bool = True) -> Path:
    """Every fold in one figure: loss (train dashed, valid solid) and the validation metric per
    epoch, one colour per fold, the best epoch (the checkpoint kept) starred."""
    fig = figure(10, 3.4)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for i, (k, log) in enumerate(sorted(logs.items())):
        color, name = f"C{i % 10}", (f"fold {k}" if label else "valid")
        best = best_row(log, metric)
        ax1.plot(log["epoch"], log["train_loss"], ls="--", color=color, alpha=0.7,
                 label="train (dashed)" if i == 0 else None)
        ax1.plot(log["epoch"], log["valid_loss"], color=color, marker=".", label=name)
        ax1.plot([log.at[best, "epoch"]], [log.at[best, "valid_loss"]], marker="*", ms=13, color=color, mec="black")
        ax2.plot(log["epoch"], log["valid_metric"], color=color, marker=".", label=name)
        ax2.plot([log.at[best, "epoch"]], [log.at[best, "valid_metric"]], marker="*", ms=13, color=color,
                 mec="black", label="best epoch" if i == 0 else None)
    ax1.set_title("loss", fontsize=10)
    ax2.set_title(f"valid {metric}", fontsize=10)
    for ax in (ax1, ax2):
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return save_png(fig, path)
