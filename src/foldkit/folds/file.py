"""Stratified (and grouped) cross-validation folds, label checks, the folds file.

The folds file is a contract (docs/ARCHITECTURE.md): ``folds/train_folds.csv``
is the sample table plus a ``fold`` column, row order as read from the input;
``folds/folds_meta.json`` records layout, settings, classes and the SHA-256 of
the CSV so later steps can tell when the folds changed.

This module never decodes images.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

import foldkit
from foldkit.data.reading import TRAIN_CSV_CANDIDATES, open_competition, probability_hint
from foldkit.experiment import all_experiments
from foldkit.folds.audit_files import fold_groups
from foldkit.folds.split import (FoldsError, assign_folds, assign_folds_multilabel, assign_folds_regression,
                                check_other_task, check_table, rare_class_counts, split_folds,
                                stratified_subsample, target_bins)
from foldkit.io import atomic_write_bytes, atomic_write_text, atomic_write_with, sha256_file
from foldkit.tags import multi_hot
from foldkit.tasks import TASKS, task_of

FOLDS_CSV = "train_folds.csv"
FOLDS_META = "folds_meta.json"
FOLD_COUNTS_CSV = "fold_counts.csv"


def fold_counts_multilabel(table: pd.DataFrame, classes: list, sep: str) -> pd.DataFrame:
    """Per-fold positives of each label (rows: folds; columns: labels; plus the fold's rows as total)."""
    y = pd.DataFrame(multi_hot(table["label"], sep, classes).astype(np.int64), columns=classes)
    t = y.groupby(table["fold"].to_numpy()).sum()
    t.index.name = "fold"
    t["total"] = table.groupby("fold").size()
    return t


def fold_targets(table: pd.DataFrame) -> pd.DataFrame:
    """Per-fold rows and target mean/std/min/max of a regression table."""
    t = table.groupby("fold")["label"].agg(["count", "mean", "std", "min", "max"])
    return t.rename(columns={"count": "rows"})


def fold_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Per-fold class counts (rows: folds, -1 = train-only; columns: classes; plus a total)."""
    t = pd.crosstab(table["fold"], table["label"])
    t["total"] = t.sum(axis=1)
    return t


def counts_text(counts: pd.DataFrame, max_classes: int = 20, rarest: int = 10) -> str:
    """The per-fold class-count table for a terminal: in full for a few classes; for many, per fold
    the rows, classes present and min/median/max samples per class, plus the rarest classes by name
    (the full table is in fold_counts.csv)."""
    per_class = counts.drop(columns="total")
    if per_class.shape[1] <= max_classes:
        with pd.option_context("display.max_columns", max_classes + 2, "display.width", 200):
            return counts.to_string()
    summary = pd.DataFrame({"rows": counts["total"], "classes": (per_class > 0).sum(axis=1),
                            "min/class": per_class.min(axis=1), "median/class": per_class.median(axis=1),
                            "max/class": per_class.max(axis=1)})
    totals = per_class.sum(axis=0).sort_values(kind="stable")
    rare = ", ".join(f"{c} ({int(n)})" for c, n in totals.head(rarest).items())
    return (summary.to_string() + f"\n{per_class.shape[1]} classes; rarest: {rare}"
            f"\n(full per-fold table: {FOLD_COUNTS_CSV})")


def folds_csv_bytes(table: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    table.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue().encode("utf-8")


def read_meta(folds_dir: str | Path) -> dict:
    """folds_meta.json alone ({} when absent or unreadable: read_folds says why)."""
    try:
        meta = json.loads((Path(folds_dir) / FOLDS_META).read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def read_folds(folds_dir: str | Path) -> tuple[pd.DataFrame, dict]:
    """Read the folds file and its metadata, checking the hash (a hand-edited file is reported)."""
    folds_dir = Path(folds_dir)
    csv, meta_p = folds_dir / FOLDS_CSV, folds_dir / FOLDS_META
    if not csv.is_file():
        raise FoldsError(f"{csv} does not exist: run `python src/make_folds.py` first")
    try:
        meta = json.loads(meta_p.read_text()) if meta_p.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FoldsError(f"{meta_p} is not valid JSON ({e}): re-run `python src/make_folds.py` with the "
                         "settings you split with to write it again") from None
    if not isinstance(meta, dict):
        raise FoldsError(f"{meta_p} is not a folds metadata file (a JSON object): re-run "
                         "`python src/make_folds.py` with the settings you split with to write it again")
    dtypes = {"id": str, "path": str}
    if meta.get("label_dtype") == "str":
        dtypes["label"] = str
    table = pd.read_csv(csv, dtype=dtypes, keep_default_na=False, na_values=[""])
    if TASKS[task_of(meta)].label == "tags":
        table["label"] = table["label"].fillna("")     # a row with no tag
    meta["sha256_now"] = sha256_file(csv)
    return table, meta


def dependent_experiments(models_dir: str | Path, sha: str) -> list[str]:
    """Experiments under models_dir whose saved config names this folds hash."""
    out = []
    for exp in all_experiments(models_dir):
        try:
            if exp.config().get("folds_sha256") == sha:
                out.append(exp.name)
        except (OSError, ValueError):
            continue
    return out


def write_folds(table: pd.DataFrame, meta: dict, folds_dir: str | Path, models_dir: str | Path,
                force: bool = False) -> tuple[str, str]:
    """Write the folds CSV and meta atomically. Returns (status, sha256).

    status: 'written' (new), 'unchanged' (identical file already there), or
    'replaced' (a different file was there; it is kept as train_folds.<sha8>.csv).
    A different file that trained experiments depend on is refused unless force.
    """
    folds_dir = Path(folds_dir)
    csv, meta_p = folds_dir / FOLDS_CSV, folds_dir / FOLDS_META
    data = folds_csv_bytes(table)
    sha = hashlib.sha256(data).hexdigest()
    meta = dict(meta, sha256=sha)
    status = "written"
    if csv.is_file():
        old_sha = sha256_file(csv)
        if old_sha == sha:
            status = "unchanged"
        else:
            deps = dependent_experiments(models_dir, old_sha)
            if deps and not force:
                raise FoldsError(
                    f"{csv} already exists with other folds, and trained experiment(s) {deps} in "
                    f"{models_dir} depend on it. Re-running with different settings would make their "
                    "checkpoints and OOF predictions inconsistent. Use another --folds-dir, or pass "
                    "--force to replace it (the old file is kept as a backup).")
            backup = folds_dir / f"train_folds.{old_sha[:8]}.csv"
            if not backup.exists():
                atomic_write_bytes(backup, csv.read_bytes())
            if meta_p.is_file():
                atomic_write_bytes(folds_dir / f"folds_meta.{old_sha[:8]}.json", meta_p.read_bytes())
            status = "replaced"
    if status != "unchanged":
        atomic_write_bytes(csv, data)
    atomic_write_text(meta_p, json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return status, sha


def make_folds(cfg, log=print) -> dict:
    """Read the competition of cfg.input_dir, split it, write cfg.folds_dir. Returns the meta dict
    (plus status, counts and counts_text for the CLI)."""
    comp, reading = open_competition(cfg, check_train=True, check_test=True)
    for split, row, path, reason in comp.bad_files:
        log(f"skipped ({split} data row {row}): {path}: {reason}")
    if comp.bad_files:
        log(f"skipped {len(comp.bad_files)} bad image file(s) (--skip-bad-images)")
    if comp.test_problems:
        log(f"warning: {len(comp.test_problems)} test image(s) of {comp.sample_submission or 'the test set'} "
            "cannot be read; the folds do not need them, but predict.py will refuse to run until they are "
            "fixed:\n  " + "\n  ".join(comp.test_problems[:10]) + ("\n  ..." if len(comp.test_problems) > 10 else ""))
    if comp.task_note:
        log(f"note: {comp.task_note}")
    if found := found_by_content(comp):
        log(f"note: {found}")
    reading = {**reading, "task": comp.task, "label_sep": comp.label_sep}   # as detected
    if TASKS[comp.task].label != "class":
        return _make_folds_other(cfg, comp, reading, log)
    table = comp.train
    hint = probability_hint(   # a log-loss competition's sample: said once, here
        comp.sample_submission, sorted(table["label"].unique().tolist()), None)
    if hint:
        log(f"note: {hint}")
    n_read = len(table)
    if cfg.limit:
        table = stratified_subsample(table, cfg.limit, cfg.seed)
    table = table.copy()
    rare = rare_class_counts(table, cfg.n_folds)
    groups, dup_info = fold_groups(cfg, table, comp, log)   # duplicate clusters stay inside one fold
    check_table(table, cfg.n_folds, cfg.group_col, cfg.rare_classes)
    table["fold"], test_like = split_folds(
        cfg, table, groups, lambda t, k, g: assign_folds(t, k, cfg.seed, cfg.group_col, cfg.rare_classes, g), log,
        eligible=~table["label"].isin(list(rare)).to_numpy() if cfg.rare_classes == "train-only" else None)
    if rare:
        desc = ", ".join(f"{c!r} ({n})" for c, n in rare.items())
        what = {"warn": "split anyway: in some folds they are absent from training or validation",
                "train-only": "trained on in every fold, validated in none (no OOF rows)"}[cfg.rare_classes]
        log(f"warning: {len(rare)} class(es) with fewer samples than {cfg.n_folds} folds, {what}: {desc}")
    label_is_str = not pd.api.types.is_numeric_dtype(table["label"])
    meta = {
        "task": "single",
        **_common_meta(cfg, comp, reading, table, n_read, groups, dup_info),
        "classes": [c if isinstance(c, str) else c.item() if hasattr(c, "item") else c
                    for c in sorted(table["label"].unique().tolist())],
        "label_dtype": "str" if label_is_str else str(table["label"].dtype),
        "rare_classes": {"mode": cfg.rare_classes, "classes": rare,
                         "train_only_rows": int((table["fold"] < 0).sum())},
        **({"test_like": test_like} if test_like else {}),
    }
    status, sha = write_folds(table, meta, cfg.folds_dir, cfg.models_dir, force=cfg.force)
    counts = fold_counts(table)
    atomic_write_with(Path(cfg.folds_dir) / FOLD_COUNTS_CSV, lambda tmp: counts.to_csv(tmp, lineterminator="\n"))
    meta.update(sha256=sha, status=status, counts=counts, counts_text=counts_text(counts))
    return meta


def found_by_content(comp) -> str:
    """One line naming the files read when their names are not the usual ones (train_v2.csv,
    train-jpg/, several test folders), with the flags that choose others; '' otherwise."""
    usual = (not comp.train_csv or comp.train_csv in TRAIN_CSV_CANDIDATES) and comp.train_dir in ("", "train") \
        and comp.test_dirs in ([], ["test"])
    if usual:
        return ""
    what = [f"training CSV {comp.train_csv}"] if comp.train_csv else []
    what += [f"training images in {comp.train_dir}/"] if comp.train_dir else []
    what += [f"test images in {', '.join(d + '/' for d in comp.test_dirs)}"] if comp.test_dirs else []
    return f"read {'; '.join(what)} (--train-csv, --train-dir, --test-dir choose others)"


def _common_meta(cfg, comp, reading: dict, table: pd.DataFrame, n_read: int, groups, dup_info: dict) -> dict:
    """The folds_meta.json keys every task kind has."""
    return {
        "layout": comp.layout,
        "input_dir": str(Path(reading["input_dir"]).resolve()),
        "reading": {**reading, "input_dir": str(Path(reading["input_dir"]).resolve())},
        "train_csv": comp.train_csv, "one_hot_columns": comp.one_hot,
        "train_dir": comp.train_dir, "test_dirs": comp.test_dirs,
        "id_col": comp.id_col, "label_col": comp.label_col,
        "source_col": comp.source_col,
        "n_folds": cfg.n_folds, "seed": cfg.seed, "group_col": cfg.group_col,
        "limit": cfg.limit, "rows_read": n_read, "rows": len(table),
        "splitter": "StratifiedGroupKFold" if cfg.group_col or groups is not None else "StratifiedKFold",
        "duplicates": dup_info,
        "skipped_files": [{"split": s, "row": int(r), "path": p, "reason": why}
                          for s, r, p, why in comp.bad_files],
        "test_problems": comp.test_problems,
        "foldkit_version": foldkit.__version__,
    }


def _make_folds_other(cfg, comp, reading: dict, log) -> dict:
    """make_folds of a multi-label or regression competition (see assign_folds_multilabel /
    assign_folds_regression); the per-fold table is the positives per label or the target statistics."""
    table = comp.train.copy()
    n_read = len(table)
    multi = TASKS[comp.task].label == "tags"
    if 0 < cfg.limit < len(table):
        # a plain seeded subsample for multi-label (no per-row stratum); quantile bins for regression
        keep = (table.sample(cfg.limit, random_state=cfg.seed).index if multi else
                stratified_subsample(table.assign(label=target_bins(table["label"].to_numpy(float), 2)),
                                     cfg.limit, cfg.seed).index)
        table = table.loc[sorted(keep)].reset_index(drop=True)
    groups, dup_info = fold_groups(cfg, table, comp, log)   # duplicate clusters stay inside one fold
    grouped = bool(cfg.group_col) or groups is not None
    check_other_task(table, cfg.n_folds, cfg.group_col, cfg.rare_classes, comp.task)
    if multi:
        table["fold"], test_like = split_folds(cfg, table, groups, lambda t, k, g: assign_folds_multilabel(
            t, comp.classes, comp.label_sep, k, cfg.seed, cfg.group_col, cfg.rare_classes, g), log)
        counts = fold_counts_multilabel(table, comp.classes, comp.label_sep)
        positives = counts.drop(columns="total").sum(axis=0)
        rare = {c: int(n) for c, n in positives[positives < cfg.n_folds].items()}
        if rare:
            log(f"warning: {len(rare)} label(s) with fewer positives than {cfg.n_folds} folds (some folds "
                f"validate none of them): {', '.join(f'{c!r} ({n})' for c, n in rare.items())}")
        text = counts_text(counts)
        splitter = "MultilabelStratifiedKFold" + (" over groups" if grouped else "")
        extra = {"classes": comp.classes, "label_dtype": "str", "label_sep": comp.label_sep,
                 "rare_labels": rare}
    else:
        counts = None
        y = table["label"].to_numpy(float)
        table["fold"], test_like = split_folds(cfg, table, groups, lambda t, k, g: assign_folds_regression(
            t, k, cfg.seed, cfg.group_col, cfg.rare_classes, g), log)
        splitter = ("StratifiedGroupKFold" if grouped else "StratifiedKFold") + " on target quantile bins"
        extra = {"classes": [], "label_dtype": str(table["label"].dtype),
                 "target": {"mean": float(y.mean()), "std": float(y.std()), "min": float(y.min()),
                            "max": float(y.max())}}
    meta = {"task": comp.task, **_common_meta(cfg, comp, reading, table, n_read, groups, dup_info),
            "splitter": splitter, **extra, **({"test_like": test_like} if test_like else {})}
    status, sha = write_folds(table, meta, cfg.folds_dir, cfg.models_dir, force=cfg.force)
    if counts is None:
        counts = fold_targets(table)
        text = counts.to_string(float_format=lambda v: f"{v:.4g}")
    atomic_write_with(Path(cfg.folds_dir) / FOLD_COUNTS_CSV, lambda tmp: counts.to_csv(tmp, lineterminator="\n"))
    meta.update(sha256=sha, status=status, counts=counts, counts_text=text)
    return meta
