"""Splitting a training table into cross-validation folds: the checks of the table, the task kinds'
splitters (stratified, grouped, multi-label iterative, regression on target quantile bins), and fold 0
of the most test-like rows (--test-like-fold, from the audit's adversarial validation).

Pure functions over the sample table: writing the folds file is foldkit.folds.file's.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from foldkit.tags import multi_hot
from foldkit.errors import FoldkitError
from foldkit.folds.audit_files import NO_SHIFT_AUC, audit_dir, read_audit, test_like_scores

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


def check_other_task(table: pd.DataFrame, n_folds: int, group_col: str, rare_classes: str, task: str) -> None:
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

    check_other_task(table, n_folds, group_col, rare_classes, "multilabel")
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

    check_other_task(table, n_folds, group_col, rare_classes, "regression")
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

