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
from foldkit.io import atomic_write_bytes, atomic_write_text, sha256_file

FOLDS_CSV = "train_folds.csv"
FOLDS_META = "folds_meta.json"


class FoldsError(FoldkitError, ValueError):
    """Input that cannot be split into folds; the message says why and what to do."""


def check_table(table: pd.DataFrame, n_folds: int, group_col: str = "") -> None:
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
    if len(small):
        desc = ", ".join(f"{c!r} has {int(n)}" for c, n in small.items())
        raise FoldsError(f"class(es) with fewer samples than folds ({n_folds}): {desc}. Each fold needs "
                         f"at least one sample of every class: use --n-folds {max(2, int(small.min()))} "
                         "or fewer, merge or drop the rare class(es), or add samples.")
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


def assign_folds(table: pd.DataFrame, n_folds: int = 5, seed: int = 42, group_col: str = "",
                 groups: np.ndarray | None = None) -> np.ndarray:
    """Fold number (0..n_folds-1) per row: StratifiedKFold, or StratifiedGroupKFold with group_col
    or with `groups` (one label per row, e.g. duplicate clusters joined with group_col)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    check_table(table, n_folds, group_col)
    y = table["label"].astype(str).to_numpy()
    folds = np.full(len(table), -1, dtype=np.int64)
    if group_col or groups is not None:
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        groups = table[group_col].astype(str).to_numpy() if groups is None else groups
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            splits = splitter.split(np.zeros(len(y)), y, groups)
    else:
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(y)), y)
    for k, (_, val_idx) in enumerate(splits):
        folds[val_idx] = k
    return folds


def fold_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Per-fold class counts (rows: folds; columns: classes; plus a total)."""
    t = pd.crosstab(table["fold"], table["label"])
    t["total"] = t.sum(axis=1)
    return t


def folds_csv_bytes(table: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    table.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue().encode("utf-8")


def read_folds(folds_dir: str | Path) -> tuple[pd.DataFrame, dict]:
    """Read the folds file and its metadata, checking the hash (a hand-edited file is reported)."""
    folds_dir = Path(folds_dir)
    csv, meta_p = folds_dir / FOLDS_CSV, folds_dir / FOLDS_META
    if not csv.is_file():
        raise FoldsError(f"{csv} does not exist: run `python src/make_folds.py` first")
    meta = json.loads(meta_p.read_text()) if meta_p.is_file() else {}
    dtypes = {"id": str, "path": str}
    if meta.get("label_dtype") == "str":
        dtypes["label"] = str
    table = pd.read_csv(csv, dtype=dtypes, keep_default_na=False, na_values=[""])
    meta["sha256_now"] = sha256_file(csv)
    return table, meta


def input_dir_for(cfg, meta: dict) -> str:
    """The competition the folds were made from: --input-dir when given, else the folder recorded
    in folds_meta.json (when it still exists), else the default input/."""
    from foldkit.config import Config
    default = Config().input_dir
    recorded = meta.get("input_dir")
    if cfg.input_dir == default and recorded and Path(recorded).is_dir():
        return recorded
    return cfg.input_dir


def dependent_experiments(models_dir: str | Path, sha: str) -> list[str]:
    """Experiments under models_dir whose saved config names this folds hash."""
    out = []
    for cfg in sorted(Path(models_dir).glob("*/config.json")):
        try:
            if json.loads(cfg.read_text()).get("folds_sha256") == sha:
                out.append(cfg.parent.name)
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
    """Read the competition of cfg.input_dir, split it, write cfg.folds_dir. Returns the meta dict."""
    import foldkit
    from foldkit.data import read_competition

    comp = read_competition(cfg.input_dir, id_col=cfg.id_col, label_col=cfg.label_col,
                            image_ext=cfg.image_ext, skip_bad_images=cfg.skip_bad_images)
    for split, row, path, reason in comp.bad_files:
        log(f"skipped ({split} data row {row}): {path}: {reason}")
    if comp.bad_files:
        log(f"skipped {len(comp.bad_files)} bad image file(s) (--skip-bad-images)")
    table = comp.train
    n_read = len(table)
    if cfg.limit:
        table = stratified_subsample(table, cfg.limit, cfg.seed)
    table = table.copy()
    from foldkit.duplicates import fold_groups   # duplicate clusters stay inside one fold
    groups, dup_info = fold_groups(cfg, table, comp, log)
    table["fold"] = assign_folds(table, cfg.n_folds, cfg.seed, cfg.group_col, groups)
    label_is_str = not pd.api.types.is_numeric_dtype(table["label"])
    meta = {
        "layout": comp.layout,
        "input_dir": str(Path(cfg.input_dir).resolve()),
        "id_col": comp.id_col, "label_col": comp.label_col,
        "source_col": comp.source_col,
        "n_folds": cfg.n_folds, "seed": cfg.seed, "group_col": cfg.group_col,
        "limit": cfg.limit, "rows_read": n_read, "rows": len(table),
        "splitter": "StratifiedGroupKFold" if cfg.group_col or groups is not None else "StratifiedKFold",
        "duplicates": dup_info,
        "classes": [c if isinstance(c, str) else c.item() if hasattr(c, "item") else c
                    for c in sorted(table["label"].unique().tolist())],
        "label_dtype": "str" if label_is_str else str(table["label"].dtype),
        "skipped_files": [{"split": s, "row": int(r), "path": p, "reason": why}
                          for s, r, p, why in comp.bad_files],
        "foldkit_version": foldkit.__version__,
    }
    status, sha = write_folds(table, meta, cfg.folds_dir, cfg.models_dir, force=cfg.force)
    meta.update(sha256=sha, status=status, counts=fold_counts(table))
    return meta
