"""Building and validating a submission in the exact shape of sample_submission.csv.

Modes:
* ``label``  one value column filled with the predicted class, in the training labels' type
* ``probs``  one column per class (columns named after the classes), or, for a binary task
             with one value column (Dogs vs Cats Redux), the probability of the positive class
             (`positive_class`: --positive-class, else the class the column is named after, else
             the second in sorted order)
``auto``: one column per class -> ``probs``; one value column -> what the competition metric is
scored on (``metrics.Metric.submits``: probabilities for AUC and log loss, labels for accuracy,
F1 and QWK), whatever values the sample holds (a sample of zeros says nothing); without a known
metric, ``probs`` when the sample's values are fractional (0.5), else ``label``. `decide_mode`
says which and why; `file_metric` which metric scores the file written (a tags file by an F metric,
a probability file by a probability metric), the one its post-processing is fitted for and its
CV and test score are printed in. `write` writes numbers with six significant digits (never fewer
than six decimals), so a probability of 3e-07 or a target on a 1e-6 scale survive.
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
                metric: str | None = None, task: str = "single", positive: str = "") -> tuple[str, str]:
    """(mode, why): what the submission holds, from --submission-mode, the metric, the task kind and the
    sample's columns. Refuses a mode the sample's columns cannot hold. positive: the class whose
    probability a binary one-column file holds (positive_class; '' = the second)."""
    positive = positive or (str(classes[1]) if len(classes) == 2 else "")
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
        why = "the sample has one column per class" if mode == "auto" else "--submission-mode probs"
        return "probs", why + (f": P({positive}) in {value_cols[0]}" if len(value_cols) == 1 else "")
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
        return "probs", (f"the metric {metric} is scored on probabilities: P({positive}) in "
                         f"{value_cols[0]}, whatever values the sample holds")
    v = pd.to_numeric(sample[value_cols[0]], errors="coerce") if sample is not None else pd.Series([0])
    fractional = bool(v.notna().all() and ((v % 1) != 0).any())
    if submits == "label":
        return "label", (f"the metric {metric} is scored on labels" + (
            "; the sample holds fractional values: if the competition scores probabilities, pass "
            "--submission-mode probs" if fractional else ""))
    if fractional and len(classes) == 2:
        return "probs", f"the sample's values are fractional: P({positive}) in {value_cols[0]}"
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
                              "value column: pass --submission-mode label to submit the predicted tags (their "
                              "per-label thresholds are fitted on the OOF for f1_samples, or for --tag-metric)")
    return "label", f"the predicted tags in {value_cols[0]}" + (" (--submission-mode label)" if mode == "label" else "")


def check_positive_class(positive: str, classes: list, task: str, metric: str | None = None,
                         why: str = "--positive-class") -> None:
    """Refuse, in one line, a positive class that is not one of a binary task's two classes, and binary f1
    of the first class (metrics scores f1 of the second class in sorted order)."""
    if not positive:
        return
    names = [str(c) for c in classes]
    if not (TASKS[task].exclusive and len(names) == 2):
        raise SubmissionError(f"{why} {positive} is for a binary competition; this one has "
                              f"{TASKS[task].describe(classes)}: remove it")
    if positive not in names:
        raise SubmissionError(f"{why} {positive!r} is not a class of this competition: use {names[0]} or {names[1]}")
    if metric == "f1" and positive != names[1]:
        raise SubmissionError(f"--metric f1 scores the F1 of the second class in sorted order ({names[1]}); f1 of "
                              f"{positive} is not supported yet: use --metric f1_macro, or f1 with "
                              f"--positive-class {names[1]}")


# the probability metric that scores a probability file when the training metric scores labels or tags
_PROBS_METRIC = {"tags": lambda n: "map", "class": lambda n: "auc" if n == 2 else "logloss"}
TAG_METRICS = ("f1_samples", "f2_samples", "f1_micro", "f1_macro")   # --tag-metric: the F metrics of a tags file


def file_metric(task: str, mode: str, metric: str, tag_metric: str = "auto", n_classes: int = 2) -> tuple[str, str]:
    """(the metric that scores the file written, why when it is not the training metric): a tags file is
    scored by an F metric (--tag-metric; the training metric when it is one, else f1_samples), a
    probability file by a probability metric (the training metric when it is one, else mAP for tags, AUC
    for two classes, log loss for more), a file of class labels by a label metric (accuracy when the
    training metric ranks probabilities). The plan's post-processing is fitted for it, and the CV and
    test score printed are its."""
    kind = TASKS[task].label
    submits = METRICS[metric].submits if metric in METRICS else "label"
    tags_file = kind == "tags" and mode == "label"
    if tag_metric not in ("auto", *TAG_METRICS):
        raise SubmissionError(f"--tag-metric {tag_metric!r}: use auto or one of {', '.join(TAG_METRICS)}")
    if tag_metric != "auto" and not tags_file:
        raise SubmissionError(f"--tag-metric scores a file of multi-label tags; this submission holds "
                              f"{'probabilities' if mode == 'probs' else 'the predicted ' + kind}: remove it")
    if kind == "number":
        return metric, ""
    if tags_file:
        if tag_metric != "auto":
            return tag_metric, ("the file holds tags: their thresholds are fitted and scored for "
                                f"--tag-metric {tag_metric}")
        if submits == "label":
            return metric, ""
        return "f1_samples", (f"the file holds tags, which {metric} does not score (it ranks probabilities): "
                              "their thresholds are fitted and scored for f1_samples (--tag-metric to choose)")
    if mode == "probs" and submits != "probs":
        alt = _PROBS_METRIC[kind](n_classes)
        return alt, (f"the file holds probabilities, scored here by {alt}: the training metric {metric} scores "
                     f"{'tags' if kind == 'tags' else 'class labels'}, not this file")
    if mode == "label" and submits == "probs":
        return "accuracy", (f"the file holds class labels, scored here by accuracy: the training metric {metric} "
                            "scores probabilities, not this file")
    return metric, ""


def choose_mode(sample: pd.DataFrame | None, classes: list, mode: str = "auto", metric: str | None = None) -> str:
    return decide_mode(sample, classes, mode, metric)[0]


def tags_separator(sample: pd.DataFrame | None, train_sep: str, given: str = "") -> str:
    """The separator a tags submission joins its tags with: predict.py --label-sep (given), else the one
    the sample's values use (Planet's sample holds 'primary clear agriculture road water'), else the
    training labels' one."""
    if given:
        return given
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
    sub = build(ids, preds, plan.classes, sample, plan.submission_mode, id_col, label_col, plan.task, plan.label_sep,
                plan.positive)
    validate(sub, sample, plan.classes, plan.submission_mode, plan.task, plan.label_sep)
    return sub


def build(ids: list[str], probs: np.ndarray, classes: list, sample: pd.DataFrame | None,
          mode: str = "auto", id_col: str = "id", label_col: str = "label", task: str = "single",
          sep: str = " ", positive: str = "") -> pd.DataFrame:
    """The submission frame: the sample's columns and row order, filled from (ids, predictions); a binary
    one-column probability file holds P(positive) ('' = the second class)."""
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
        values = {value_cols[0]: p[:, [str(c) for c in classes].index(positive) if positive else 1]}
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
    atomic_write_with(path, lambda tmp: sub.to_csv(tmp, index=False, float_format=number_text))
    return path


def number_text(x: float) -> str:
    """A submission's number: never fewer than six decimals, six significant digits of a small value and
    of a probability's distance to 1, trailing zeros dropped (3e-07, 1.23457e-06, 0.9999996, 0.5,
    5858123.456789). A fixed six decimals writes a probability below 5e-7 as 0 (or above 1 - 5e-7 as 1),
    which a log loss clips to 1e-15, and a target on a 1e-6 scale as 0; a float64's seventeen digits
    would only carry the float noise between the kit's runners (torch, ONNX)."""
    a = abs(x)
    if not a or not np.isfinite(a):
        return f"{x:g}"
    if a < 1e-4:
        return f"{x:.6g}"
    decimals = max(6, 5 - int(np.floor(np.log10(a))))
    if a < 1:
        decimals = max(decimals, 5 - int(np.floor(np.log10(1 - a))))
    return f"{x:.{min(decimals, 17)}f}".rstrip("0").rstrip(".")


KAGGLE_TIMEOUT_S = 600


def kaggle_command(competition: str, path: Path, message: str) -> list[str]:
    """The Kaggle CLI's documented form (the competition positional, as export.py --push prints it too)."""
    return ["kaggle", "competitions", "submit", competition or "<competition>", "-f", str(path), "-m", message]


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
