"""The stack's features: the table's columns (chosen, typed, encoded) and the image experiments' OOF predictions.

    choose           the feature columns of the folds file: --features COL[:num|:cat],... or every column
                     that is not the id, label, group, fold or a path; each typed numeric or categorical
    encode           a table's feature columns as a float matrix (categories as codes of the training
                     table's values, missing as NaN: the booster decides where missing goes)
    image_features   each image experiment's OOF predictions of every training row (probabilities, per-label
                     probabilities or the regression value), one column per output, `<experiment>:<column>`
    rows_for_test    the test table's feature rows in the order of the test ids (one line per bad input)
    table_matrix     a table's rows as the trees' table features: the encoded columns, each numeric column's
                     z-score within its --norm-by group, and the target encodings of a fold's fitted encoders;
                     the one "table -> feature matrix" step of the training side (stacking) and the test side
                     (predict.stacked), so the test rows are built exactly as the training rows were
    fit_target_encoders  --target-encode: encoders fitted on a fold's training rows only, each row's own
                     encoding cross-fitted (scikit-learn's TargetEncoder.fit_transform)

Group-wise normalisation (--norm-by COL, ISIC's per-patient features): each numeric feature also as
(x - group mean) / group std over the rows sharing COL's value, from the feature values alone (no label),
within the table the rows come from (the training table for training rows, the test table for test rows).

Categories: strings, and integers that are codes rather than counts (few distinct values spread thinly
over their range, such as a zip code). The codes come from the training table's values only (no label is
used), so they are the same in every fold; a test value never seen in training is treated as missing
with a warning naming the column and the values: the trees have no branch for it, and the missing branch
is the one the booster learnt for rows it knows nothing about.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from foldkit.data.reading import read_text_csv
from foldkit.errors import FoldkitError, did_you_mean
from foldkit.ensemble import trained_with_flips, views_of
from foldkit.oof import PROB_PREFIX, oof_for_plan
from foldkit.tasks import TASKS

NOT_FEATURES = ("id", "label", "fold", "path", "index")
MAX_CATEGORIES = 250        # HistGradientBoosting's limit (255 bins, some kept for missing): more is refused
CODE_MAX_DISTINCT = 64      # an integer column with at most this many distinct values ...
CODE_SPREAD = 3             # ... spread over more than this many times as many integers is a code (zip code)
TE_INNER_FOLDS = 5          # --target-encode: the inner K-fold that encodes a fold's training rows
MISSING = "\x00missing"     # a missing value of a target-encoded column: a category of its own


class StackError(FoldkitError, ValueError):
    """A feature column, test table or experiment the stack cannot use; the message names it."""


@dataclass
class Feature:
    name: str
    kind: str                          # "num" or "cat"
    categories: list = field(default_factory=list)   # cat: the training values, in code order


def cat_text(values: pd.Series) -> pd.Series:
    """Category values as text, the same whether read as numbers or as text: 85255.0 and "85255" are "85255"."""
    def one(v):
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))
        return str(v).strip()
    return values.map(lambda v: one(v) if pd.notna(v) else np.nan)


def _looks_like_paths(values: pd.Series) -> bool:
    text = values.dropna().astype(str).head(200)
    return len(text) > 0 and bool(text.str.contains(r"[/\\]|\.(?:jpe?g|png|tiff?|bmp|webp|gif)$", case=False).all())


def _is_code(numbers: pd.Series) -> bool:
    """Integers that name things rather than count them: few distinct values, thinly spread (zip codes)."""
    x = numbers.dropna()
    if x.empty or not np.all(np.equal(np.mod(x, 1), 0)):
        return False
    distinct = x.nunique()
    return distinct <= CODE_MAX_DISTINCT and (x.max() - x.min() + 1) > CODE_SPREAD * distinct


def _typed(table: pd.DataFrame, col: str, asked: str) -> Feature:
    values = table[col]
    numbers = pd.to_numeric(values, errors="coerce")
    not_number = values.notna() & numbers.isna()
    if asked == "num" and not_number.any():
        row = int(np.flatnonzero(not_number.to_numpy())[0])
        raise StackError(f"feature column {col!r} was asked for as numeric (:num) but data row {row + 1} holds "
                         f"{values.iloc[row]!r}: ask for it as {col}:cat, or fix the value")
    kind = asked or ("cat" if not_number.any() or _is_code(numbers) else "num")
    if kind == "num":
        return Feature(col, "num")
    cats = sorted(cat_text(values).dropna().unique().tolist())
    if len(cats) > MAX_CATEGORIES:
        raise StackError(f"feature column {col!r} has {len(cats)} distinct values as a category (at most "
                         f"{MAX_CATEGORIES}): target-encode it instead (--target-encode {col}), leave it out of "
                         f"--features, or ask for it as {col}:num if it is a number")
    return Feature(col, "cat", cats)


def choose(table: pd.DataFrame, meta: dict, spec: str, encoded: tuple = ()) -> list[Feature]:
    """The table's feature columns: `spec` (--features: COL, COL:num or COL:cat, comma-separated), else
    every column that is not the id, label, fold, group column, a column of file paths or one of `encoded`
    (the --target-encode columns, which are target-encoded rather than coded)."""
    skip = set(NOT_FEATURES) | {c for c in (meta.get("group_col"), meta.get("source_col")) if c}
    if not spec.strip():
        skip |= set(encoded)
        return [_typed(table, c, "") for c in table.columns
                if c not in skip and not _looks_like_paths(table[c]) and table[c].notna().any()]
    out = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        col, _, asked = item.partition(":")
        if asked not in ("", "num", "cat"):
            raise StackError(f"--features {item}: the type after ':' is num or cat")
        if col not in table.columns or col in ("id", "label", "fold"):
            have = [c for c in table.columns if c not in skip]
            raise StackError(f"--features: no feature column {col!r} in the folds file (columns: "
                             f"{', '.join(have) or 'none'}){did_you_mean(col, have)}")
        out.append(_typed(table, col, asked))
    return out


def encode(frame: pd.DataFrame, features: list[Feature]) -> np.ndarray:
    """(N, F) float64: numbers as they are, categories as their code, missing and unseen values as NaN."""
    cols = []
    for f in features:
        if f.kind == "num":
            cols.append(pd.to_numeric(frame[f.name], errors="coerce").to_numpy(dtype=np.float64))
        else:
            code = {c: float(i) for i, c in enumerate(f.categories)}
            cols.append(cat_text(frame[f.name]).map(code).to_numpy(dtype=np.float64))
    return np.stack(cols, axis=1) if cols else np.zeros((len(frame), 0))


def group_zscores(frame: pd.DataFrame, features: list[Feature], by: str) -> np.ndarray:
    """(N, numeric features): each numeric feature's z-score within the rows of `frame` sharing `by`'s value,
    from the values alone (no label). A group of one row, or of one value, has no spread: its z-score is 0
    (the row is at its group's mean), never a division by zero; a missing value or group stays missing."""
    nums = [f.name for f in features if f.kind == "num"]
    if not by or not nums:
        return np.zeros((len(frame), 0))
    x = frame[nums].apply(pd.to_numeric, errors="coerce").astype(np.float64).reset_index(drop=True)
    groups = cat_text(frame[by]).reset_index(drop=True)
    dev = x - x.groupby(groups).transform("mean")
    std = np.sqrt((dev ** 2).groupby(groups).transform("mean"))
    z = np.where(std > 1e-12, dev / std.where(std > 1e-12, 1.0), 0.0)
    return np.where(dev.isna(), np.nan, z)


def encoded_values(frame: pd.DataFrame, cols: list[str]) -> np.ndarray:
    """The --target-encode columns as category text (N, E), a missing value as a category of its own."""
    if not cols:
        return np.zeros((len(frame), 0), dtype=object)
    return np.stack([cat_text(frame[c]).fillna(MISSING).to_numpy(dtype=object) for c in cols], axis=1)


def fit_target_encoders(values: np.ndarray, targets: np.ndarray, seed: int) -> tuple[list, np.ndarray]:
    """(one fitted encoder per target column, the rows' own encodings (N, J * E)): scikit-learn's
    TargetEncoder (smoothed toward the prior, smooth="auto"), fitted on these rows only. Each row's encoding
    comes from fit_transform's inner K-fold (statistics of the other inner folds, never its own label); the
    encoders' transform (statistics of all these rows) encodes the rows scored and the test rows. Every
    target column is encoded as a mean (target_type continuous: a class or label as 0/1, so a class absent
    from these rows is no error)."""
    import sklearn  # lazy: scikit-learn's import is slow
    from sklearn.model_selection import KFold
    from sklearn.preprocessing import TargetEncoder
    # the inner K-fold, shuffled and seeded: scikit-learn >= 1.9 takes it as a splitter (its shuffle and
    # random_state are deprecated there), older ones (from 1.3) as those two arguments
    new = tuple(int(v) for v in sklearn.__version__.split(".")[:2]) >= (1, 9)
    inner = ({"cv": KFold(TE_INNER_FOLDS, shuffle=True, random_state=seed)} if new else
             {"cv": TE_INNER_FOLDS, "shuffle": True, "random_state": seed})
    encoders, own = [], []
    for j in range(targets.shape[1]):
        enc = TargetEncoder(target_type="continuous", smooth="auto", **inner)
        own.append(enc.fit_transform(values, targets[:, j]))
        encoders.append(enc)
    return encoders, (np.concatenate(own, axis=1) if own else np.zeros((len(values), 0)))


def apply_target_encoders(encoders: list, values: np.ndarray) -> np.ndarray:
    """(N, J * E): each encoder's statistics of all its training rows (a value never seen: the prior)."""
    if not encoders:
        return np.zeros((len(values), 0))
    return np.concatenate([e.transform(values) for e in encoders], axis=1)


def spec_features(spec: dict) -> list[Feature]:
    return [f if isinstance(f, Feature) else Feature(**f) for f in spec["features"]]


def table_names(spec: dict, outputs: list[str]) -> list[str]:
    """The names of table_matrix's columns: the features, `<col>:z_by_<COL>`, `<col>:te` (one target column)
    or `<col>:te_<output>`."""
    features, by, cols = spec_features(spec), spec.get("norm_by", ""), spec.get("target_encode", [])
    names = [f.name for f in features] + [f"{f.name}:z_by_{by}" for f in features if by and f.kind == "num"]
    return names + [f"{c}:te" if len(outputs) == 1 else f"{c}:te_{o}" for o in outputs for c in cols]


def table_matrix(frame: pd.DataFrame, spec: dict, encoders: list | None = None) -> np.ndarray:
    """A table's rows as the trees' table features, in table_names' order: the encoded columns, the numeric
    ones' z-scores within their --norm-by group (computed within `frame`), then, given a fold's fitted
    encoders, the --target-encode columns encoded by them. The training side (stacking) and the test side
    (predict.stacked) both build their rows here; the training rows' own target encodings are cross-fitted
    (fit_target_encoders) and appended by the training side in the same place."""
    features = spec_features(spec)
    blocks = [encode(frame, features), group_zscores(frame, features, spec.get("norm_by", ""))]
    if encoders is not None:
        blocks.append(apply_target_encoders(encoders, encoded_values(frame, spec.get("target_encode", []))))
    return np.concatenate(blocks, axis=1)


def check_columns(table: pd.DataFrame, spec: dict, where: str) -> None:
    """The --norm-by and --target-encode columns are in the table, else one line."""
    for flag, cols in (("--norm-by", [spec.get("norm_by")] if spec.get("norm_by") else []),
                       ("--target-encode", spec.get("target_encode", []))):
        for c in cols:
            if c not in table.columns or c in ("label", "fold"):
                raise StackError(f"{flag} {c}: no column {c!r} in {where} (columns: {', '.join(table.columns)})"
                                 f"{did_you_mean(c, list(table.columns))}")


def output_columns(task: str, classes: list) -> list[str]:
    """The OOF columns an image experiment's predictions are read from: pred (regression) or prob_<class>."""
    return ["pred"] if TASKS[task].label == "number" else [f"{PROB_PREFIX}{c}" for c in classes]


def image_views(exps: list, tta: str) -> list[str]:
    """The TTA views the stacked experiment's test images will be predicted with (as predict.py resolves
    --tta for these image experiments), so its trees are fitted on OOF predicted with the same views."""
    return views_of(tta, all(trained_with_flips(e.config()) for e in exps))


def image_features(exps: list, ids: pd.Series, views: list[str] | None = None,
                   log=print) -> tuple[np.ndarray, list[str]]:
    """Each experiment's OOF prediction of every training row (made by the fold model that never saw it),
    in the order of `ids`, predicted with the TTA `views` where its folds recorded them (oof.oof_for_plan:
    the kind of prediction the test images get), else the one-view OOF; a row an experiment has no OOF
    prediction for is refused (it was not trained on all folds of these folds)."""
    blocks, names = [], []
    for e in exps:
        oof = oof_for_plan(e, views, log)
        classes = [c[len(PROB_PREFIX):] for c in oof.columns if c.startswith(PROB_PREFIX)]   # load_oof's order
        cols = output_columns(e.task()[0], classes)
        by_id = oof.set_index("id")[cols]
        missing = ~ids.isin(by_id.index)
        if missing.any():
            raise StackError(f"experiment {e.name} has no OOF prediction for {int(missing.sum())} training row(s) "
                             f"(first id {ids[missing].iloc[0]}): stack experiments trained on every fold of these folds")
        blocks.append(by_id.loc[ids.to_numpy()].to_numpy(dtype=np.float64))
        names += [f"{e.name}:{c}" for c in cols]
    return (np.concatenate(blocks, axis=1) if blocks else np.zeros((len(ids), 0))), names


def read_test_table(path: Path) -> pd.DataFrame:
    """The test table (test.csv or --test-table) as written: ids and values as text, empty cells missing."""
    if not path.is_file():
        raise StackError(f"{path}: no test table; the stack's test rows need the table's columns for every test "
                         "id (pass --test-table FILE)")
    return read_text_csv(path).replace("", np.nan)


def rows_for_test(test: pd.DataFrame, id_col: str, ids: list[str], features: list[Feature], path: Path,
                  log=print, columns: tuple = ()) -> pd.DataFrame:
    """The test table's rows in the order of `ids`, checked: every feature column (and each of `columns`: the
    --norm-by and --target-encode columns) present, every id has one row, numeric columns numeric; unseen
    categories are warned about (they become missing)."""
    idc = id_col if id_col in test.columns else ("id" if "id" in test.columns else test.columns[0])
    missing = [c for c in [f.name for f in features] + list(columns) if c not in test.columns]
    if missing:
        raise StackError(f"{path}: feature column {missing[0]!r} is missing (columns: {', '.join(test.columns)}); "
                         "the trees need every feature for every test row")
    dup = test[idc].duplicated()
    if dup.any():
        raise StackError(f"{path}: id {test[idc][dup].iloc[0]!r} has more than one row (data row "
                         f"{int(np.flatnonzero(dup.to_numpy())[0]) + 1})")
    rows = test.set_index(idc)
    absent = [i for i in ids if i not in rows.index]
    if absent:
        raise StackError(f"{path}: test id {absent[0]!r} has no row ({len(absent)} test id(s) without one)")
    rows = rows.loc[ids].reset_index()
    for f in features:
        values = rows[f.name]
        if f.kind == "num":
            bad = values.notna() & pd.to_numeric(values, errors="coerce").isna()
            if bad.any():
                raise StackError(f"{path}: numeric feature column {f.name!r} holds {values[bad].iloc[0]!r} for test "
                                 f"id {rows[idc][bad].iloc[0]!r}")
        else:
            unseen = sorted(set(cat_text(values).dropna()) - set(f.categories))
            if unseen:
                log(f"warning: {path.name}: feature column {f.name!r} has {len(unseen)} value(s) never seen in "
                    f"training ({', '.join(unseen[:5])}): treated as missing")
    return rows
