"""Stratified (and grouped) cross-validation folds, label checks, the folds file.

The folds file is a contract (docs/ARCHITECTURE.md): ``folds/train_folds.csv``
is the sample table plus a ``fold`` column, row order as read from the input;
``folds/folds_meta.json`` records layout, settings, classes and the SHA-256 of
the CSV so later steps can tell when the folds changed.

This module never decodes images.
"""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from foldkit.errors import FoldkitError
from foldkit.io import atomic_write_bytes, atomic_write_text, atomic_write_with, sha256_file
from foldkit.tasks import TASKS, task_of

FOLDS_CSV = "train_folds.csv"
FOLDS_META = "folds_meta.json"
FOLD_COUNTS_CSV = "fold_counts.csv"
# how the competition is read: recorded in folds_meta.json by make_folds, used by every later step
READING = ("input_dir", "train_csv", "id_col", "label_col", "image_ext", "skip_bad_images", "task", "label_sep")


class FoldsError(FoldkitError, ValueError):
    """Input that cannot be split into folds; the message says why and what to do."""


def check_table(table: pd.DataFrame, n_folds: int, group_col: str = "", rare_classes: str = "warn") -> None:
    """Refuse, with a clear message, what StratifiedKFold would choke on or silently get wrong."""
    if n_folds < 2:
        raise FoldsError(f"--n-folds must be at least 2 (got {n_folds})")
    lab = table["label"]
    empty = lab.isna() | (lab.astype(str).str.strip() == "")
    if empty.any():
        rows = np.flatnonzero(empty.to_numpy())[:20]
        raise FoldsError(f"labels are empty/NaN in data rows {[int(r) + 1 for r in rows]}; "
                         "fill them in or delete those rows")
    dup = table["id"].duplicated(keep=False)
    if dup.any():
        d = table.loc[dup, "id"]
        first = d.unique()[:10].tolist()
        raise FoldsError(f"{d.nunique()} id(s) appear more than once, e.g. {first} "
                         f"(data rows {[int(r) + 1 for r in np.flatnonzero(dup.to_numpy())[:10]]}); "
                         "ids must be unique: remove the duplicates")
    counts = lab.value_counts()
    small = counts[counts < n_folds]
    if len(small) and rare_classes == "error":
        desc = ", ".join(f"{c!r} has {int(n)}" for c, n in small.items())
        raise FoldsError(f"class(es) with fewer samples than folds ({n_folds}): {desc}. Each fold needs "
                         f"at least one sample of every class: use --n-folds {max(2, int(small.min()))} "
                         "or fewer, merge or drop the rare class(es), add samples, or pass --rare-classes "
                         "warn (split anyway) or train-only (train on them, validate on none).")
    if group_col:
        if group_col not in table.columns:
            raise FoldsError(f"--group-col {group_col!r} is not a column of the table; "
                             f"columns are {list(table.columns)}")
        g = table[group_col]
        if g.isna().any():
            rows = np.flatnonzero(g.isna().to_numpy())[:20]
            raise FoldsError(f"group column {group_col!r} is empty in data rows {[int(r) + 1 for r in rows]}")
        if g.nunique() < n_folds:
            raise FoldsError(f"group column {group_col!r} has {g.nunique()} groups, fewer than "
                             f"{n_folds} folds; use fewer folds")


def stratified_subsample(table: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """A stratified subsample of n rows, kept in input order (the tutorials' 'limit to 10,000')."""
    if n <= 0 or n >= len(table):
        return table
    from sklearn.model_selection import train_test_split

    n_classes = table["label"].nunique()
    if n < n_classes:
        raise FoldsError(f"--limit {n} is smaller than the number of classes ({n_classes})")
    counts = table["label"].value_counts()
    # Classes too rare to split stay whole; the rest is sampled stratified.
    rare = counts[counts < 2].index
    pool = table[~table["label"].isin(rare)]
    keep_rare = table.index[table["label"].isin(rare)]
    k = n - len(keep_rare)
    if k >= len(pool):
        return table
    idx, _ = train_test_split(pool.index.to_numpy(), train_size=k, random_state=seed,
                              stratify=pool["label"].astype(str).to_numpy())
    keep = np.sort(np.concatenate([idx, keep_rare.to_numpy()]))
    return table.loc[keep].reset_index(drop=True)


def rare_class_counts(table: pd.DataFrame, n_folds: int) -> dict:
    """{class: count} of the classes with fewer samples than folds, rarest first."""
    counts = table["label"].value_counts()
    small = counts[counts < n_folds].sort_values(kind="stable")
    return {(c.item() if hasattr(c, "item") else c): int(n) for c, n in small.items()}


def assign_folds(table: pd.DataFrame, n_folds: int = 5, seed: int = 42, group_col: str = "",
                 rare_classes: str = "warn", groups: np.ndarray | None = None) -> np.ndarray:
    """Fold number (0..n_folds-1) per row: StratifiedKFold, or StratifiedGroupKFold with group_col
    or with `groups` (one label per row, e.g. duplicate clusters joined with group_col).

    Classes with fewer samples than folds: 'warn' splits them as StratifiedKFold does (each sample
    still validated exactly once); 'train-only' gives their rows fold -1 (in the training part of
    every fold, validated in none); 'error' refuses."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    check_table(table, n_folds, group_col, rare_classes)
    folds = np.full(len(table), -1, dtype=np.int64)
    keep = np.ones(len(table), bool)
    if rare_classes == "train-only":
        keep = ~table["label"].isin(list(rare_class_counts(table, n_folds))).to_numpy()
        if keep.sum() < n_folds:
            raise FoldsError(f"only {int(keep.sum())} rows remain for validation once the rare classes are "
                             f"train-only: fewer than {n_folds} folds")
    sub = table[keep]
    y = sub["label"].astype(str).to_numpy()
    if groups is None and group_col:
        groups = table[group_col].astype(str).to_numpy()
    with warnings.catch_warnings():
        # the rare-class warning of StratifiedKFold is ours to give (make_folds names the classes)
        warnings.simplefilter("ignore")
        if groups is not None:
            splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
            splits = list(splitter.split(np.zeros(len(y)), y, np.asarray(groups)[keep]))
        else:
            splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
            splits = list(splitter.split(np.zeros(len(y)), y))
    rows = np.flatnonzero(keep)
    for k, (_, val_idx) in enumerate(splits):
        folds[rows[val_idx]] = k
    return folds


def _group_keys(table: pd.DataFrame, group_col: str, groups: np.ndarray | None) -> np.ndarray | None:
    if groups is None and group_col:
        groups = table[group_col].astype(str).to_numpy()
    return None if groups is None else np.asarray(groups)


def _check_other_task(table: pd.DataFrame, n_folds: int, group_col: str, rare_classes: str, task: str) -> None:
    if rare_classes != "warn":
        raise FoldsError(f"--rare-classes {rare_classes} is for single-label tasks; this one is {task} "
                         "(leave it at warn)")
    check_table(table.assign(label="x"), n_folds, group_col)   # ids, folds, groups: as single-label


def assign_folds_multilabel(table: pd.DataFrame, classes: list, sep: str, n_folds: int = 5, seed: int = 42,
                            group_col: str = "", rare_classes: str = "warn",
                            groups: np.ndarray | None = None) -> np.ndarray:
    """Fold per row of a multi-label table: iterative stratification (iterstrat's
    MultilabelStratifiedKFold) of the multi-hot matrix. With groups (group_col and/or duplicate
    clusters), the groups are split instead: each group's row is the union of its rows' labels, and
    every row of a group gets the group's fold (no group spans folds)."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
    from foldkit.tags import multi_hot

    _check_other_task(table, n_folds, group_col, rare_classes, "multilabel")
    y = multi_hot(table["label"], sep, classes)
    keys = _group_keys(table, group_col, groups)
    if keys is not None:
        uniq, inverse = np.unique(keys, return_inverse=True)
        gy = np.zeros((len(uniq), y.shape[1]), dtype=y.dtype)
        np.maximum.at(gy, inverse, y)
        y_split = gy
    else:
        y_split = y
    splitter = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    part = np.full(len(y_split), -1, dtype=np.int64)
    for k, (_, val_idx) in enumerate(splitter.split(np.zeros(len(y_split)), y_split)):
        part[val_idx] = k
    return part[inverse] if keys is not None else part


def target_bins(y: np.ndarray, n_folds: int) -> np.ndarray:
    """Quantile bins of a regression target to stratify on: up to 10, at least 2 rows per fold in each."""
    q = int(min(10, max(1, len(y) // (2 * n_folds))))
    return pd.qcut(pd.Series(y).rank(method="first"), q, labels=False).to_numpy()


def assign_folds_regression(table: pd.DataFrame, n_folds: int = 5, seed: int = 42, group_col: str = "",
                            rare_classes: str = "warn", groups: np.ndarray | None = None) -> np.ndarray:
    """Fold per row of a regression table: StratifiedKFold (StratifiedGroupKFold with groups) on the
    quantile bins of the target, so every fold sees the whole range."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    _check_other_task(table, n_folds, group_col, rare_classes, "regression")
    bins = target_bins(table["label"].to_numpy(dtype=float), n_folds)
    keys = _group_keys(table, group_col, groups)
    folds = np.full(len(table), -1, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if keys is not None:
            splits = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(bins, bins, keys)
        else:
            splits = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(bins, bins)
        for k, (_, val_idx) in enumerate(splits):
            folds[val_idx] = k
    return folds


def test_like_rows(p_test: np.ndarray, keys: np.ndarray, n_rows: int) -> np.ndarray:
    """Mask of the most test-like rows, about n_rows of them, taken as whole groups (keys: one group
    per row): groups ranked by the mean p_test of their rows (a group goes where most of its p_test
    mass says), taken until the nearest total to n_rows."""
    g = (pd.DataFrame({"key": keys, "p": p_test}).groupby("key", sort=False)["p"].agg(["mean", "size"])
         .sort_values("mean", ascending=False, kind="stable"))
    cum = g["size"].cumsum().to_numpy()
    i = int(np.searchsorted(cum, n_rows))          # the first group that reaches n_rows
    below = int(cum[i - 1]) if i > 0 else 0
    take = i + 1 if i < len(cum) and (cum[i] - n_rows <= n_rows - below or i == 0) else i
    return pd.Series(keys).isin(g.index[:take]).to_numpy()


def assign_test_like(table: pd.DataFrame, p_test: np.ndarray, n_folds: int, split, group_col: str = "",
                     groups: np.ndarray | None = None, eligible: np.ndarray | None = None) -> np.ndarray:
    """--test-like-fold: fold 0 holds the most test-like 1/n_folds of the eligible rows (whole groups of
    group_col and duplicate clusters, `test_like_rows`); the other rows are split into folds
    1..n_folds-1 by split(rows, n_folds - 1, their groups) (the task's usual splitter). Rows that are
    not eligible (rare classes trained on only) keep fold -1."""
    n = len(table)
    eligible = np.ones(n, bool) if eligible is None else np.asarray(eligible, bool)
    keys = _group_keys(table, group_col, groups)
    keys = np.arange(n) if keys is None else keys
    folds = np.full(n, -1, dtype=np.int64)
    first = np.zeros(n, bool)
    first[eligible] = test_like_rows(p_test[eligible], keys[eligible], int(round(eligible.sum() / n_folds)))
    folds[first] = 0
    rest = eligible & ~first
    if n_folds == 2:
        folds[rest] = 1
        return folds
    part = split(table[rest].reset_index(drop=True), n_folds - 1, None if groups is None else np.asarray(groups)[rest])
    folds[rest] = np.where(part >= 0, part + 1, -1)
    return folds


def split_folds(cfg, table: pd.DataFrame, groups: np.ndarray | None, split, log=print,
                eligible: np.ndarray | None = None) -> tuple[np.ndarray, dict | None]:
    """The fold column: split(table, n_folds, groups), or with cfg.test_like_fold fold 0 from the audit's
    adversarial validation and split over the rest (`assign_test_like`). Returns (folds, the
    folds_meta.json `test_like` record or None)."""
    if not cfg.test_like_fold:
        return split(table, cfg.n_folds, groups), None
    from foldkit.audit.duplicates import audit_dir, read_audit
    from foldkit.audit.shift import NO_SHIFT_AUC, test_like_scores

    where = audit_dir(cfg)
    p_test, info = test_like_scores(read_audit(where, cfg.input_dir), where, cfg.input_dir, table["id"])
    folds = assign_test_like(table, p_test, cfg.n_folds, split, cfg.group_col, groups, eligible)
    zero = folds == 0
    record = {"fold": 0, **info, "rows": int(zero.sum()), "mean_p_test": round(float(p_test[zero].mean()), 4),
              "mean_p_test_other_folds": round(float(p_test[folds > 0].mean()), 4)}
    if info["adversarial_auc"] < NO_SHIFT_AUC:
        log(f"note: adversarial validation AUC {info['adversarial_auc']:.3f}: no detectable train/test shift, "
            "so the test-like fold 0 is close to a random fold")
    return folds, record


def fold_counts_multilabel(table: pd.DataFrame, classes: list, sep: str) -> pd.DataFrame:
    """Per-fold positives of each label (rows: folds; columns: labels; plus the fold's rows as total)."""
    from foldkit.tags import multi_hot

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


def reading_settings(cfg, meta: dict) -> dict:
    """How to read the competition: the settings make_folds recorded in folds_meta.json, where the
    user set a flag (or config key) of their own, that one."""
    recorded = dict(meta.get("reading") or {})
    if "input_dir" not in recorded and meta.get("input_dir"):   # folds files written before "reading"
        recorded["input_dir"] = meta["input_dir"]
    if meta:
        recorded.setdefault("task", "single")   # folds files written before task kinds: single-label
        recorded.setdefault("label_sep", "")
    return {k: getattr(cfg, k) if (k in cfg.given or k not in recorded) else recorded[k] for k in READING}


def open_competition(cfg, meta: dict | None = None, *, check_train: bool = False, check_test: bool = False):
    """The one way every step opens the competition: with the reading settings of folds_meta.json
    (meta), flags overriding. make_folds passes no meta (the flags are the settings) and checks every
    file; train checks none (the folds file lists the good ones); predict checks the test images. The task
    kind (single, multilabel, regression) and the tag separator are reading settings too: make_folds
    records the detected ones."""
    from foldkit.data.reading import read_competition
    reading = {k: getattr(cfg, k) for k in READING} if meta is None else reading_settings(cfg, meta)
    return read_competition(reading["input_dir"], train_csv=reading["train_csv"], id_col=reading["id_col"],
                            label_col=reading["label_col"], image_ext=reading["image_ext"],
                            skip_bad_images=reading["skip_bad_images"], check_train=check_train,
                            task=reading["task"], label_sep=reading["label_sep"],
                            check_test=check_test), reading


def dependent_experiments(models_dir: str | Path, sha: str) -> list[str]:
    """Experiments under models_dir whose saved config names this folds hash."""
    from foldkit.experiment import all_experiments

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
    import hashlib
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
    reading = {**reading, "task": comp.task, "label_sep": comp.label_sep}   # as detected
    if TASKS[comp.task].label != "class":
        return _make_folds_other(cfg, comp, reading, log)
    table = comp.train
    from foldkit.predict.submission import probability_hint   # a log-loss competition's sample, said once here
    hint = probability_hint(comp.sample_submission, sorted(table["label"].unique().tolist()), None)
    if hint:
        log(f"note: {hint}")
    n_read = len(table)
    if cfg.limit:
        table = stratified_subsample(table, cfg.limit, cfg.seed)
    table = table.copy()
    rare = rare_class_counts(table, cfg.n_folds)
    from foldkit.audit.duplicates import fold_groups   # duplicate clusters stay inside one fold
    groups, dup_info = fold_groups(cfg, table, comp, log)
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


def _common_meta(cfg, comp, reading: dict, table: pd.DataFrame, n_read: int, groups, dup_info: dict) -> dict:
    """The folds_meta.json keys every task kind has."""
    import foldkit

    return {
        "layout": comp.layout,
        "input_dir": str(Path(reading["input_dir"]).resolve()),
        "reading": {**reading, "input_dir": str(Path(reading["input_dir"]).resolve())},
        "train_csv": comp.train_csv, "one_hot_columns": comp.one_hot,
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
    from foldkit.audit.duplicates import fold_groups   # duplicate clusters stay inside one fold
    groups, dup_info = fold_groups(cfg, table, comp, log)
    grouped = bool(cfg.group_col) or groups is not None
    _check_other_task(table, cfg.n_folds, cfg.group_col, cfg.rare_classes, comp.task)
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
