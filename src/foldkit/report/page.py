"""The pieces the kit's self-contained HTML pages (report.html, audit.html) are built from.

One stylesheet, PNGs inlined as data URIs, pandas tables as HTML, relative links, and a titled image
grid (drawn with foldkit.figures). report and audit all build their pages with these. It must not
import torch.
"""
from __future__ import annotations

import base64
import html
import math
import textwrap
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from foldkit.figures import figure, save_png
from foldkit.oof import humanise

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;
color:#222;padding:0 16px}
h1{margin-bottom:4px}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
.kv td:first-child{font-weight:600}.big{font-size:20px;font-weight:600}
.warn{background:#fff3cd;border:1px solid #e0c060;padding:8px 12px;margin:12px 0}
img{max-width:100%;border:1px solid #eee;margin:6px 0}.muted{color:#777;font-size:12px}
.first{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start;background:#f7f9fc;border:1px solid #dde3ee;
padding:12px 16px}.first .facts{flex:1 1 420px}.first img{max-width:380px}.headline{font-size:22px;font-weight:600}
ul.verdicts li{margin:4px 0}
"""


def document(title: str, body: list[str]) -> str:
    """A whole self-contained page: inline CSS, no script, nothing fetched."""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def img(png: Path | bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt, quote=True)}' src='{png_uri(png)}'>"


def links(names: list[str]) -> str:
    """Relative links to the files written beside the page (they open from the report folder)."""
    return ", ".join(f"<a href='{html.escape(n, quote=True)}'>{html.escape(n)}</a>" for n in names)


def sentence(text: str) -> str:
    """Capital first letter and a full stop: verdicts are written lower-case for the log."""
    text = str(text).strip()
    if not text:
        return text
    return text[0].upper() + text[1:] + ("" if text.endswith((".", "!", "?", ")")) else ".")


def png_uri(png: Path | bytes) -> str:
    """A PNG file (or its bytes) as a data URI, so the page needs no file beside it."""
    data = png if isinstance(png, bytes) else Path(png).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def table(df: pd.DataFrame, index: bool = True) -> str:
    """A pandas table as HTML; column names are shown as words (no snake_case keys)."""
    df = df.rename(columns=lambda c: humanise(c) if isinstance(c, str) else c)
    if isinstance(df.index.name, str):
        df = df.rename_axis(index=humanise(df.index.name))
    return df.to_html(index=index, float_format=lambda v: f"{v:.4f}", border=0, na_rep="")


def _given_predicted(row) -> str:
    return f"given {row.label}\npredicted {row.pred} {row.confidence:.2f}"


def tags_title(lines: list[tuple[str, str]]) -> str:
    """A gallery tile's title of tag sets, one `what: tags` line each, wrapped to the tile's width."""
    return "\n".join(textwrap.fill(f"{what}: {tags}", 34) for what, tags in lines)


def image_grid(rows: pd.DataFrame, load_image: Callable[[Any], np.ndarray],
               path: str | Path, ncols: int = 4, heatmap: Callable[[Any], Any] | None = None,
               title: Callable[[Any], str] | None = None) -> Path:
    """Grid of images, one per row of `rows` (columns id, label, pred, confidence), each tile titled
    "given X" over "predicted Y 0.97" (the probability of Y): the worst errors and the suspected label
    errors. title(row): another tile title (tags, numbers), any number of lines.

    load_image(id) returns an HxWx3 or HxWx1 (or HxW) uint8 array. A tile whose image
    cannot be loaded shows the error message instead of stopping the report. heatmap(row): an HxWx3
    uint8 class-activation overlay drawn beside the image in its tile (None: that tile has none), titled
    with the row's `focus` (the class it explains) when the rows have one, else its `pred`."""
    n = len(rows)
    span = 2 if heatmap is not None else 1
    ncols = max(1, min(ncols, n)) if n else 1
    nrows = max(1, math.ceil(n / ncols))
    title = title or _given_predicted
    titles = [title(row) for row in rows.itertuples(index=False)]
    extra_lines = max([t.count("\n") - 1 for t in titles] + [0])   # the default title has two lines
    fig = figure(2.6 * ncols * span, (3.1 + 0.16 * extra_lines) * nrows)
    if n == 0:
        ax = fig.add_subplot(1, 1, 1)
        ax.axis("off")
        ax.text(0.5, 0.5, "no misclassified OOF rows", ha="center", va="center")
        return save_png(fig, path)
    for i, row in enumerate(rows.itertuples(index=False)):
        ax = fig.add_subplot(nrows, ncols * span, span * i + 1)
        ax.set_xticks([])
        ax.set_yticks([])
        try:
            img = np.asarray(load_image(row.id))
            if img.ndim == 3 and img.shape[2] == 1:
                img = img[:, :, 0]
            if img.ndim == 2:
                ax.imshow(img, cmap="gray", vmin=0, vmax=255)
            else:
                ax.imshow(img)
        except Exception as e:  # noqa: BLE001 - shown on the tile, the report goes on
            ax.text(0.5, 0.5, f"cannot load\n{row.id}\n{type(e).__name__}: {e}"[:120],
                    ha="center", va="center", fontsize=7, wrap=True)
        ax.set_title(titles[i], fontsize=9)
        ax.set_xlabel(str(row.id), fontsize=7)
        if heatmap is not None:
            hx = fig.add_subplot(nrows, ncols * span, span * i + 2)
            hx.axis("off")
            cam = heatmap(row)
            if cam is not None:
                hx.imshow(cam)
                hx.set_title(f"Grad-CAM: {getattr(row, 'focus', row.pred)}", fontsize=8)
    return save_png(fig, path)
