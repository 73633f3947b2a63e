"""Suspected label errors from the out-of-fold predictions (confident learning, cleanlab).

The OOF probabilities of all folds are exactly what confident learning needs: each sample was
predicted by a model that never saw it. ``cleanlab.filter.find_label_issues`` (not written
again here) flags the samples whose given label the OOF ensemble contradicts, ranked by
self-confidence (the OOF probability of the given label, lowest first). Multi-label:
cleanlab's multi-label confident learning (``cleanlab.multilabel_classification``) on the OOF
sigmoid probabilities, which also names the tags in doubt. Regression: no search (a numeric
target has no class probabilities; cleanlab's regression scores rank nearly as the absolute
error does: 49 of their 50 lowest-scored UTKFace faces are among the 50 largest errors of a
ridge model, so the report's worst errors are the list to check).

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

from foldkit.io import atomic_write_with
from foldkit.report import page
from foldkit.tags import multi_hot
from foldkit.tasks import TASKS

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


def suspected_tag_errors(oof: pd.DataFrame, classes: list, sep: str) -> pd.DataFrame:
    """Ranked table of suspected label errors of multi-label OOF rows (label/pred = tags joined by sep,
    prob_<label> = sigmoid probabilities): rank, id, fold, label (given tags), pred (tags predicted at 0.5),
    quality (cleanlab's label quality score of the row, lowest = most suspect), doubtful (given tags cleanlab
    flags), missing (tags not given that cleanlab flags), focus (the flagged tag the model is surest of).
    The rows and their order are cleanlab's multi-label ``find_label_issues(..., return_indices_ranked_by=
    "self_confidence")``: the rows with a flagged tag (``find_multilabel_issues_per_class``, which also
    names the tags) by ``get_label_quality_scores``. Raises ImportError when cleanlab is not installed."""
    from cleanlab.multilabel_classification.filter import find_multilabel_issues_per_class
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    names = np.array([str(c) for c in classes], dtype=object)
    y = multi_hot(oof["label"], sep, list(names)).astype(np.int64)
    probs = oof[[f"prob_{c}" for c in classes]].to_numpy(dtype=np.float64)
    labels = [np.flatnonzero(row).tolist() for row in y]
    with warnings.catch_warnings():   # one warning per rare label would flood the user's output
        warnings.filterwarnings("ignore", message="May not flag all label issues", category=UserWarning)
        # n_jobs=1: cleanlab would start a process pool per label (2 s per 100 labels of forks alone)
        flagged = np.asarray(find_multilabel_issues_per_class(labels=labels, pred_probs=probs, n_jobs=1), dtype=bool)
        quality = get_label_quality_scores(labels, probs, method="self_confidence")
    rows = np.flatnonzero(flagged.any(1))
    rows = rows[np.argsort(quality[rows], kind="stable")]
    doubt = np.where(flagged, np.abs(y - probs), -1.0)      # how far the model is from each flagged tag
    tags = lambda r, given: " ".join(names[flagged[r] & (y[r] == given)])   # noqa: E731
    return pd.DataFrame({"rank": np.arange(1, len(rows) + 1), "id": oof["id"].to_numpy()[rows],
                         "fold": oof["fold"].to_numpy()[rows], "label": oof["label"].to_numpy()[rows],
                         "pred": oof["pred"].to_numpy()[rows], "quality": quality[rows],
                         "doubtful": [tags(r, 1) for r in rows], "missing": [tags(r, 0) for r in rows],
                         "focus": names[doubt[rows].argmax(1)] if len(rows) else np.array([], dtype=object)})


_HEAD = ("<h2>Suspected label errors</h2><p class='muted'>training samples whose given label the "
         "out-of-fold ensemble contradicts most (cleanlab find_label_issues, ranked by the OOF "
         "probability of the given label): check them, fix or drop the wrong ones</p>")
_HEAD_TAGS = ("<h2>Suspected label errors</h2><p class='muted'>training samples whose given tags the "
              "out-of-fold predictions contradict most (cleanlab's multi-label find_label_issues, ranked by "
              "its label quality score): doubtful, the given tags it flags; missing, the tags it expects and "
              "that are not given. Check them, fix or drop the wrong ones</p>")
NO_SEARCH_REGRESSION = ("<h2>Suspected label errors</h2><p>Not searched for a numeric target: the worst errors "
                        "above, predicted by a model that never saw them, are the rows to check first.</p>")
_WORDS = {"label": "given label", "pred": "predicted", "prob_given": "probability of the given label"}
_WORDS_TAGS = {"label": "given tags", "pred": "predicted tags", "quality": "label quality",
               "doubtful": "given, doubtful", "missing": "not given, likely present"}


def report_section(oof: pd.DataFrame, classes: list, load_image: Callable | None,
                   out: Callable[[str], Path], k: int = 24, heatmap: Callable | None = None,
                   task: str = "single", sep: str = "") -> str:
    """Write label_errors.csv (+ label_errors.png with load_image) via out(name) -> path, and
    return the report.html section (heatmap: page.image_grid's). Without cleanlab: the section says how to
    install it. task "multilabel" (tags joined by sep): suspected_tag_errors; "regression": no search, a
    sentence that says so."""
    if TASKS[task].label == "number":
        return NO_SEARCH_REGRESSION
    tags = TASKS[task].label == "tags"
    head = _HEAD_TAGS if tags else _HEAD
    try:
        table = suspected_tag_errors(oof, classes, sep) if tags else suspected_label_errors(oof, classes)
    except ImportError:
        return head + f"<div class='warn'>cleanlab is not installed: {html.escape(INSTALL_HINT)}</div>"
    atomic_write_with(out(CSV), lambda tmp: table.to_csv(tmp, index=False, lineterminator="\n"))
    parts = [head, f"<p>{len(table)} suspected of {len(oof)} rows; all in {page.links([CSV])}</p>"]
    if load_image is not None and len(table):
        page.image_grid(table.head(k), load_image, out(PNG), heatmap=heatmap, title=_doubt_title if tags else None)
        parts.append(f"<img alt='suspected label errors' src='{page.png_uri(out(PNG))}'>")
    shown = table.head(20).drop(columns=["focus"], errors="ignore").rename(columns=_WORDS_TAGS if tags else _WORDS)
    parts.append(page.table(shown, index=False) if len(table) else "<p>none found</p>")
    return "".join(parts)


def _doubt_title(row) -> str:
    """A gallery tile of a suspected multi-label error: the tags in doubt and the ones likely missing."""
    doubt = [(what, tags) for what, tags in (("doubtful", row.doubtful), ("missing", row.missing)) if tags]
    return page.tags_title([("given", row.label or "(none)")] + doubt)
