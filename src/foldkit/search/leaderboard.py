"""The experiment leaderboard: one row per experiment under models/, best CV first.

Columns: experiment, model, img_size, settings (only those that differ between the listed
experiments), teachers (what a student learnt from: --soft-labels, --pseudo, --teacher, in words), folds (finished / configured), metric, cv (the metric on all OOF rows of the
finished folds), cv_mean and cv_std (across folds), train_min (sum of the finished folds'
training time) and submissions (files of submissions/ made from the experiment, alone or in a
blend, with the CV in their name). Sorted by CV in the metric's direction (experiments scored
with different metrics are grouped by metric); experiments without a finished fold come last.

This module must not import torch.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from foldkit.config import RUN_ONLY
from foldkit.experiment import all_experiments
from foldkit.metrics import METRICS
from foldkit.oof import cv_summary, load_oof
from foldkit.predict.calibrate import cv_scorer
from foldkit.train.teacher import DEPENDENT, OPTIONS, describe

# shown in words in the `teachers` column (foldkit.train.teacher.describe), not among the settings
TEACHER_SETTINGS = (*OPTIONS, *DEPENDENT)

COLUMNS = ["experiment", "model", "img_size", "settings", "teachers", "folds", "metric", "cv", "cv_mean", "cv_std",
           "train_min", "submissions"]
# config.json keys that are shown in their own column or describe the data, not a choice
_NOT_SETTINGS = RUN_ONLY | {"experiment", "folds_sha256", "classes", "n_folds", "layout", "model", "img_size",
                            "metric", "id_col", "label_col", "image_ext", "limit", "group_col"} | set(TEACHER_SETTINGS)
_SUBMISSION_RE = re.compile(r"^(?P<tag>.+)_cv(?P<cv>-?\d+(?:\.\d+)?)(?:_\d+)?$")


def submissions_by_experiment(submissions_dir: str | Path) -> dict[str, list[str]]:
    """{experiment: ["file (cv)", ...]} from the names submissions/<exp>[+<exp2>...]_cv<score>.csv."""
    out: dict[str, list[str]] = {}
    folder = Path(submissions_dir)
    for p in sorted(folder.glob("*.csv")) if folder.is_dir() else []:
        m = _SUBMISSION_RE.match(p.stem)
        tag, cv = (m.group("tag"), m.group("cv")) if m else (p.stem, None)
        for name in tag.split("+"):
            out.setdefault(name, []).append(p.name + (f" ({cv})" if cv else ""))
    return out


def differing_settings(configs: dict[str, dict]) -> dict[str, str]:
    """{experiment: "key=value ..."} for the learning settings whose values differ between experiments."""
    keys = sorted({k for c in configs.values() for k in c} - _NOT_SETTINGS)
    differ = [k for k in keys if len({repr(c.get(k)) for c in configs.values()}) > 1]
    return {name: " ".join(f"{k}={c.get(k)}" for k in differ) for name, c in configs.items()}


def _row(exp, cfg: dict) -> dict:
    folds = exp.finished_folds()
    metric = cfg.get("metric", "accuracy")
    row = {"experiment": exp.name, "model": cfg.get("model"), "img_size": cfg.get("img_size") or None,
           "teachers": describe(cfg),
           "folds": f"{len(folds)}/{cfg.get('n_folds', '?')}", "metric": metric,
           "cv": None, "cv_mean": None, "cv_std": None, "train_min": None}
    if folds:
        oof, classes = load_oof(exp.dir, folds)
        task, sep = exp.task()
        rep = cv_summary(oof, classes, metric, task, sep, cv_scorer(metric, task, len(classes)))
        row.update(cv=rep["cv"], cv_mean=rep["cv_mean"], cv_std=rep["cv_std"])
        seconds = [exp.summary(k).get("seconds") for k in folds]
        row["train_min"] = round(sum(s for s in seconds if s is not None) / 60, 1)
    return row


def leaderboard(models_dir: str | Path, submissions_dir: str | Path) -> pd.DataFrame:
    exps = all_experiments(models_dir)
    configs = {e.name: e.config() for e in exps}
    settings = differing_settings(configs)
    subs = submissions_by_experiment(submissions_dir)
    rows = []
    for e in exps:
        row = _row(e, configs[e.name])
        row["settings"] = settings[e.name]
        row["submissions"] = "; ".join(subs.get(e.name, []))
        rows.append(row)
    df = pd.DataFrame(rows, columns=COLUMNS)

    def key(r):
        cv = r["cv"]
        missing = cv is None or (isinstance(cv, float) and math.isnan(cv))
        up = r["metric"] not in METRICS or METRICS[r["metric"]].greater_is_better
        return (r["metric"], missing, 0.0 if missing else (-cv if up else cv))
    order = sorted(range(len(df)), key=lambda i: key(df.iloc[i]))
    return df.iloc[order].reset_index(drop=True)


def format_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "no experiments"
    shown = df.copy()
    for c in ("cv", "cv_mean", "cv_std"):
        shown[c] = [("" if v is None or pd.isna(v) else f"{v:.5f}") for v in shown[c]]
    shown["cv_mean"] = [f"{m} ± {s}" if m else "" for m, s in zip(shown["cv_mean"], shown["cv_std"])]
    shown = shown.drop(columns="cv_std").rename(columns={"cv_mean": "folds mean ± std"})
    return shown.fillna("").to_string(index=False)
