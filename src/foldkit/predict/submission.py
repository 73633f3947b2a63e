"""Building and validating a submission in the exact shape of sample_submission.csv.

Modes:
* ``label``  one value column filled with the predicted class, in the training labels' type
* ``probs``  one column per class (columns named after the classes), or, for a binary task
             with one value column (Dogs vs Cats Redux), the probability of the positive
             (second, in sorted order) class
``auto``: one column per class -> ``probs``; one value column -> what the competition metric is
scored on (``metrics.Metric.submits``: probabilities for AUC and log loss, labels for accuracy,
F1 and QWK), whatever values the sample holds (a sample of zeros says nothing); without a known
metric, ``probs`` when the sample's values are fractional (0.5), else ``label``. `decide_mode`
says which and why.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from foldkit.data.reading import LABEL_SEPS
from foldkit.errors import FoldkitError
from foldkit.io import atomic_write_with
from foldkit.metrics import METRICS
from foldkit.tasks import TASKS


class SubmissionError(FoldkitError, ValueError):
    """A submission that does not match the competition's sample; the message names the ids."""


def decide_mode(sample: pd.DataFrame | None, classes: list, mode: str = "auto",
                metric: str | None = None, task: str = "single") -> tuple[str, str]:
    """(mode, why): what the submission holds, from --submission-mode, the metric, the task kind and the
    sample's columns. Refuses a mode the sample's columns cannot hold."""
    value_cols = list(sample.columns[1:]) if sample is not None else ["label"]   # no sample: one label column
    class_cols = len(value_cols) > 1 and set(value_cols) == {str(c) for c in classes}
    if mode not in ("auto", "label", "probs"):
        raise SubmissionError(f"--submission-mode {mode!r}: use auto, label or probs")
    kind = TASKS[task]
    if mode not in ("auto", *kind.submission_modes):
        raise SubmissionError(f"--submission-mode {mode} is for classification; a {task} submission holds "
                              f"the predicted {kind.label}")
    if kind.label == "number":
        return _decide_number(value_cols)
    if kind.label == "tags":
        return _decide_tags(value_cols, class_cols, classes, mode, metric, sample is not None)
    if mode == "probs" or (mode == "auto" and class_cols):
        if len(value_cols) == 1 and len(classes) != 2:
            raise SubmissionError(f"--submission-mode probs with one value column needs a binary task; "
                                  f"this one has {len(classes)} classes")
        if len(value_cols) > 1 and not class_cols:
            raise SubmissionError(f"--submission-mode probs writes one column per class, but the value columns of "
                                  f"sample_submission.csv {value_cols} are not the classes {classes}: pass "
                                  "--submission-mode label, or check the competition folder")
        return "probs", ("the sample has one column per class" if mode == "auto" else "--submission-mode probs")
    if len(value_cols) != 1:
        raise SubmissionError(f"sample_submission.csv has value columns {value_cols}: not one label column and "
                              f"not one column per class {classes}. Pass --submission-mode.")
    if mode == "label":
        return "label", "--submission-mode label"
    submits = METRICS[metric].submits if metric in METRICS else None
    if submits == "probs":
        if len(classes) != 2 and sample is None:
            return "label", (f"no sample_submission.csv: one label column (the metric {metric} is scored on "
                             "probabilities: add the competition's sample to get its columns)")
        if len(classes) != 2:
            raise SubmissionError(f"the metric {metric} is scored on probabilities, but sample_submission.csv has "
                                  f"one value column and this task has {len(classes)} classes: pass "
                                  "--submission-mode label to submit class labels")
        return "probs", (f"the metric {metric} is scored on probabilities: P({classes[1]}) in "
                         f"{value_cols[0]}, whatever values the sample holds")
    v = pd.to_numeric(sample[value_cols[0]], errors="coerce") if sample is not None else pd.Series([0])
    fractional = bool(v.notna().all() and ((v % 1) != 0).any())
    if submits == "label":
        return "label", (f"the metric {metric} is scored on labels" + (
            "; the sample holds fractional values: if the competition scores probabilities, pass "
            "--submission-mode probs" if fractional else ""))
    if fractional and len(classes) == 2:
        return "probs", "the sample's values are fractional"
    return "label", "one value column with class-like values"


def _decide_number(value_cols: list) -> tuple[str, str]:
    """decide_mode for a task whose label is a number (regression): one column, the number."""
    if len(value_cols) != 1:
        raise SubmissionError(f"sample_submission.csv has value columns {value_cols}; a regression submission "
                              "fills one column with the predicted number: check the competition folder")
    return "label", f"the predicted number in {value_cols[0]}"


def _decide_tags(value_cols: list, label_cols: bool, classes: list, mode: str, metric: str | None,
                 has_sample: bool = True) -> tuple[str, str]:
    """decide_mode for a task whose label is a set of tags (multi-label): one tags column, or one
    probability column per label."""
    if mode == "probs" or (mode == "auto" and label_cols):
        if not label_cols and not (len(classes) == 1 and value_cols == [str(classes[0])]):
            raise SubmissionError(f"--submission-mode probs writes one probability column per label, but the value "
                                  f"columns of sample_submission.csv {value_cols} are not the labels {classes}")
        return "probs", ("the sample has one column per label" if mode == "auto" else "--submission-mode probs")
    if len(value_cols) != 1:
        raise SubmissionError(f"sample_submission.csv has value columns {value_cols}: not one tags column and not "
                              f"one column per label {classes}. Check the competition folder.")
    if mode == "auto" and metric in METRICS and METRICS[metric].submits == "probs" and has_sample:
        raise SubmissionError(f"the metric {metric} is scored on probabilities, but sample_submission.csv has one "
                              "value column: pass --submission-mode label to submit the predicted tags")
    return "label", f"the predicted tags in {value_cols[0]}" + (" (--submission-mode label)" if mode == "label" else "")


def choose_mode(sample: pd.DataFrame | None, classes: list, mode: str = "auto", metric: str | None = None) -> str:
    return decide_mode(sample, classes, mode, metric)[0]


def tags_separator(sample: pd.DataFrame | None, train_sep: str) -> str:
    """The separator a tags submission joins its tags with: the one the sample's values use (Planet's
    sample holds 'primary clear agriculture road water'), else the training labels' one."""
    if sample is not None and len(sample.columns) == 2:
        values = sample[sample.columns[1]].astype(str).str.strip()
        for sep in LABEL_SEPS:
            if values.str.contains(sep, regex=False).mean() > 0.5:
                return sep
    return train_sep or " "


def make(ids: list[str], preds: np.ndarray, plan, sample: pd.DataFrame | None, id_col: str = "id",
         label_col: str = "label") -> pd.DataFrame:
    """The submission of a plan's predictions (blend.Plan.apply), built in the sample's shape and
    validated: what predict.py and the offline bundle both write."""
    sub = build(ids, preds, plan.classes, sample, plan.submission_mode, id_col, label_col, plan.task, plan.label_sep)
    validate(sub, sample, plan.classes, plan.submission_mode, plan.task, plan.label_sep)
    return sub


def build(ids: list[str], probs: np.ndarray, classes: list, sample: pd.DataFrame | None,
          mode: str = "auto", id_col: str = "id", label_col: str = "label", task: str = "single",
          sep: str = " ") -> pd.DataFrame:
    """The submission frame: the sample's columns and row order, filled from (ids, predictions)."""
    ids = [str(i) for i in ids]
    if sample is None:
        sample = pd.DataFrame({id_col: ids, label_col: classes[0] if TASKS[task].label == "class" else ""})
    sample = sample.copy()
    sid = sample.columns[0]
    sample[sid] = sample[sid].astype(str)
    mode = decide_mode(sample, classes, mode, None, task)[0]
    pos = {i: k for k, i in enumerate(ids)}
    missing = [i for i in sample[sid] if i not in pos]
    if missing:
        raise SubmissionError(f"{len(missing)} id(s) of sample_submission.csv have no prediction, first: "
                              f"{missing[:5]}. Are the test images all there?")
    order = np.array([pos[i] for i in sample[sid]])
    p = probs[order]
    value_cols = list(sample.columns[1:])
    if mode == "label":
        values = {value_cols[0]: TASKS[task].label_values(p, classes, sep)}
    elif len(value_cols) == 1 and TASKS[task].exclusive:
        values = {value_cols[0]: p[:, 1]}
    else:   # all columns at once: one insert per class fragments the frame (and warns) for many classes
        cmap = {str(c): j for j, c in enumerate(classes)}
        values = dict(zip(value_cols, p[:, [cmap[c] for c in value_cols]].T))
    return pd.DataFrame({sid: sample[sid].to_numpy(), **values}, columns=[sid, *value_cols])


def validate(sub: pd.DataFrame, sample: pd.DataFrame | None, classes: list, mode: str, task: str = "single",
             sep: str = " ") -> None:
    """Refuse a submission Kaggle would reject or score wrongly; name the first offending ids."""
    sid = sub.columns[0]
    ids = sub[sid].astype(str)
    if sample is not None:
        if list(sub.columns) != list(sample.columns):
            raise SubmissionError(f"columns {list(sub.columns)} differ from the sample's {list(sample.columns)}")
        sids = sample[sample.columns[0]].astype(str)
        if len(sub) != len(sample):
            raise SubmissionError(f"{len(sub)} rows but the sample has {len(sample)}")
        bad = ids.to_numpy() != sids.to_numpy()
        if bad.any():
            k = np.flatnonzero(bad)[:5]
            raise SubmissionError(f"ids differ from the sample's (row order matters), first at rows {k.tolist()}: "
                                  f"{ids.iloc[k].tolist()} vs {sids.iloc[k].tolist()}")
    dup = ids.duplicated()
    if dup.any():
        raise SubmissionError(f"duplicate ids: {ids[dup].unique()[:5].tolist()}")
    values = sub.iloc[:, 1:]
    nan = values.isna().any(axis=1)
    if nan.any():
        raise SubmissionError(f"empty values for ids {ids[nan].tolist()[:5]}")
    if mode == "probs":
        v = values.to_numpy(dtype=np.float64)
        out = ((v < 0) | (v > 1)).any(1)
        if out.any():
            raise SubmissionError(f"probabilities outside [0, 1] for ids {ids[out].tolist()[:5]}")
        if v.shape[1] > 1 and TASKS[task].exclusive:    # multi-label probabilities are independent per label
            off = np.abs(v.sum(1) - 1) > 1e-3
            if off.any():
                raise SubmissionError(f"class probabilities do not sum to 1 for ids {ids[off].tolist()[:5]}")
    elif TASKS[task].label == "number":
        v = pd.to_numeric(values.iloc[:, 0], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(v)
        if bad.any():
            raise SubmissionError(f"predictions that are not finite numbers for ids {ids[bad].tolist()[:5]}")
    elif TASKS[task].label == "tags":
        allowed = {str(c) for c in classes}
        bad = np.array([any(t not in allowed for t in str(v).split(sep) if t) for v in values.iloc[:, 0]], dtype=bool)
        if bad.any():
            raise SubmissionError(f"tags not among the labels for ids {ids[bad].tolist()[:5]}")
    else:
        allowed = {str(c) for c in classes}
        bad = ~values.iloc[:, 0].astype(str).isin(allowed)
        if bad.any():
            raise SubmissionError(f"labels not among the classes for ids {ids[bad].tolist()[:5]}")


def unused_path(folder: Path, stem: str, suffix: str = ".csv") -> Path:
    """folder/stem.csv, or stem_2.csv, stem_3.csv ... : an existing submission is never overwritten."""
    p = folder / f"{stem}{suffix}"
    k = 2
    while p.exists():
        p = folder / f"{stem}_{k}{suffix}"
        k += 1
    return p


def write(sub: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        raise SubmissionError(f"{path} exists; submissions are never overwritten")
    atomic_write_with(path, lambda tmp: sub.to_csv(tmp, index=False, float_format="%.6f"))
    return path


KAGGLE_TIMEOUT_S = 600


def kaggle_command(competition: str, path: Path, message: str) -> list[str]:
    return ["kaggle", "competitions", "submit", "-c", competition or "<competition>", "-f", str(path), "-m", message]


def upload_line(competition: str, path: Path, message: str) -> str:
    """The upload command as one shell-quoted line (paste it into a shell as printed)."""
    return shlex.join(kaggle_command(competition, path, message))


def kaggle_submit(competition: str, path: Path, message: str) -> str:
    """Run the Kaggle CLI upload; say clearly what is missing when it cannot."""
    if not shutil.which("kaggle"):
        raise SubmissionError("the kaggle CLI is not installed: `pip install kaggle`, then place your API token "
                              "in ~/.kaggle/kaggle.json (Kaggle > Settings > API > Create New Token)")
    token = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")) / "kaggle.json"
    if not token.is_file() and not (os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")):
        raise SubmissionError(f"the kaggle CLI has no credentials: put your API token in {token} "
                              "or set KAGGLE_USERNAME and KAGGLE_KEY")
    try:
        r = subprocess.run(kaggle_command(competition, path, message), capture_output=True, text=True,
                           timeout=KAGGLE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SubmissionError(f"the kaggle CLI did not finish the upload in {KAGGLE_TIMEOUT_S} s (network?); "
                              f"{path} is written: upload it later with: "
                              f"{upload_line(competition, path, message)}") from None
    if r.returncode != 0:
        raise SubmissionError(f"kaggle upload failed: {(r.stderr or r.stdout).strip()[:500]}")
    return r.stdout.strip()
