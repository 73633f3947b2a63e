"""Reading a competition: layout detection, the four readers, the sample table.

Four layouts are understood (see docs/input.md):

* ``csv_images``    train.csv / labels.csv / train_labels.csv (id, label, or one-hot class columns)
                    + train/ images (+ test/, sample_submission.csv)
* ``class_folders`` train/<class>/*.jpg (+ val/<class>/, test/ flat or test/<class>/)
* ``numpy``         x_train.npy, y_train.npy (+ x_test.npy, y_test.npy)
* ``pixel_csv``     train.csv with label,pixel0..pixelN (+ test.csv), square images

Each becomes a :class:`Competition` holding one table per split with the
columns ``id``, ``label`` (train), and the pixel source: ``path`` (relative to
the competition folder) for files or ``index`` (row of the array) for arrays.
Class order is the sorted unique label values.

`open_competition` opens it with the reading settings make_folds recorded (folds_meta.json), flags
overriding: the one way every step reads the competition.

This module knows nothing about models; the folder's files below the layouts are foldkit.data.files',
decoding an image file is foldkit.data.images'.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from foldkit.data.files import (check_files, check_labels, find_test_problems, one_hot_columns, pick_column,
                                pixel_columns, read_numpy_images, read_numpy_labels, read_pixel_csv,
                                resolve_paths, scan_images)
from foldkit.data.images import InputError
from foldkit.data.kinds import LABEL_SEPS, REGRESSION_MIN_DISTINCT, guess_sep, integers_task, tags_or_names
from foldkit.tags import join_tags, tag_names

ID_CANDIDATES = ["id", "image_id", "imageid", "image", "image_name", "filename", "file_name",
                 "file", "fname", "name", "img", "path"]
LABEL_CANDIDATES = ["label", "labels", "target", "class", "class_name", "category", "y", "diagnosis"]
IMAGE_DIR_CANDIDATES = ["train", "train_images", "images", "train_imgs", "imgs"]
TEST_DIR_CANDIDATES = ["test", "test_images", "test_imgs"]
TRAIN_CSV_CANDIDATES = ["train.csv", "labels.csv", "train_labels.csv"]
TASKS = ("single", "multilabel", "regression")


@dataclass
class Competition:
    layout: str
    root: Path
    train: pd.DataFrame
    test: pd.DataFrame | None = None
    classes: list = field(default_factory=list)
    id_col: str = "id"          # the user's name for the id column (submission uses it)
    label_col: str = "label"    # the user's name for the label column
    sample_submission: Path | None = None
    bad_files: list = field(default_factory=list)   # (split, row, path, reason) skipped with skip_bad_images
    test_problems: list = field(default_factory=list)  # "data row r (id x): reason" of test images
    train_csv: str = ""          # the training CSV's file name (csv layouts)
    one_hot: list = field(default_factory=list)   # class columns of a one-hot (or multi-hot) training CSV
    task: str = "single"         # single | multilabel | regression (detect_task)
    label_sep: str = ""          # multilabel: the separator of the tags in `label`
    task_note: str = ""          # --task auto: what the labels showed and the flag that overrides it
    _arrays: dict = field(default_factory=dict, repr=False)

    @property
    def source_col(self) -> str:
        return "index" if self.layout in ("numpy", "pixel_csv") else "path"

    def pixels(self, split: str = "train") -> np.ndarray:
        """The uint8 (N,H,W,C) array of an array layout (numpy / pixel_csv)."""
        if self.layout not in ("numpy", "pixel_csv"):
            raise TypeError(f"layout {self.layout} stores images as files; use decode_image")
        if split not in self._arrays:
            if self.layout == "numpy":
                self._arrays[split] = read_numpy_images(self.root / f"x_{split}.npy")
            else:
                name = self.train_csv if split == "train" else f"{split}.csv"
                self._arrays[split] = read_pixel_csv(self.root / name, self.label_col)[0]
        return self._arrays[split]


# --------------------------------------------------------------------------- layouts

def read_text_csv(path: str | Path, **kw) -> pd.DataFrame:
    """A user's CSV (training CSV, sample_submission.csv, solution.csv) with every value the text the
    user wrote: no type inference ('007' stays '007'), no NA strings ('NA', 'None' are values; an
    empty cell is ''). Every step reads labels and ids through this."""
    return pd.read_csv(path, dtype=str, keep_default_na=False, **kw)


def labels_as_written(values: pd.Series) -> pd.Series:
    """Label texts as the user wrote them: integers when every label is an integer written plainly
    ('7', '-3', which write back as the same text; the sort order is then numeric), else the
    strings unchanged ('007', 'NA', 'None', '1.0' stay what they are)."""
    text = values.astype(str)
    if len(text) and text.str.fullmatch(r"-?(0|[1-9][0-9]{0,17})").all():
        return text.astype("int64")
    return values


def find_train_csv(root: str | Path, name: str = "") -> Path | None:
    """The training CSV of a competition folder: `name` (--train-csv) when given, else the first of
    TRAIN_CSV_CANDIDATES that exists (Kaggle ships train.csv, labels.csv or train_labels.csv)."""
    root = Path(root)
    if name:
        path = root / name
        if not path.is_file():
            have = sorted(p.name for p in root.glob("*.csv"))
            raise InputError(f"--train-csv {name}: no such file in {root} (CSV files there: {have or 'none'})")
        return path
    return next((root / c for c in TRAIN_CSV_CANDIDATES if (root / c).is_file()), None)


def detect_layout(root: str | Path, train_csv: str = "") -> str:
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"competition folder {root} does not exist. Put a competition there "
                         "(see docs/input.md) or pass --input-dir.")
    if not train_csv and ((root / "x_train.npy").is_file() or (root / "y_train.npy").is_file()):
        return "numpy"
    csv = find_train_csv(root, train_csv)
    if csv is not None:
        cols = list(pd.read_csv(csv, nrows=0).columns)
        if len(pixel_columns(cols)) >= 4:
            return "pixel_csv"
        return "csv_images"
    train = root / "train"
    if train.is_dir() and any(d.is_dir() and not d.name.startswith(".") for d in train.iterdir()):
        return "class_folders"
    found = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    raise InputError(
        f"{root}: cannot tell the input layout (found: {found or 'nothing'}). Expected one of: "
        f"a training CSV ({', '.join(TRAIN_CSV_CANDIDATES)}, or --train-csv NAME) + train/ images; "
        "train/<class>/ folders; x_train.npy + y_train.npy; train.csv with label,pixel0..pixelN "
        "columns. See docs/input.md.")


def read_competition(root: str | Path, id_col: str = "", label_col: str = "", image_ext: str = "",
                     skip_bad_images: bool = False, check_train: bool = True, check_test: bool = True,
                     train_csv: str = "", task: str = "auto", label_sep: str = "") -> Competition:
    """Detect the layout of `root` and read it into a Competition (see module doc).

    check_train / check_test: look inside every file (signature, end marker) instead of only
    whether it exists. Bad training files stop the read (or are dropped with skip_bad_images);
    test problems are recorded in `comp.test_problems`, for predict to refuse and make_folds to
    warn about (the folds do not need the test set).

    task / label_sep: what a label is (TASKS, or "auto": detect_task); a multi-label table's `label`
    holds the tags joined by comp.label_sep ('' = no tag), comp.classes the tag names."""
    root = Path(root)
    layout = detect_layout(root, train_csv)
    reader = {"csv_images": _read_csv_images, "class_folders": _read_class_folders,
              "numpy": _read_numpy, "pixel_csv": _read_pixel}[layout]
    comp = reader(root, train_csv=train_csv, id_col=id_col, label_col=label_col, image_ext=image_ext,
                  skip_bad=skip_bad_images, check=check_train, task=task or "auto", label_sep=label_sep)
    comp.train = comp.train.reset_index(drop=True)
    if comp.test is not None and "path" in comp.test.columns:
        comp.test_problems = find_test_problems(comp.test, root, check_test)
    comp.task, comp.label_sep, comp.task_note = detect_task(comp, task or "auto", label_sep)
    if comp.task == "multilabel":
        comp.classes = tag_names(comp.train["label"], comp.label_sep)
        return comp
    check_labels(comp.train, comp.layout, root)
    comp.classes = [] if comp.task == "regression" else sorted(comp.train["label"].unique().tolist())
    return comp


def detect_task(comp: Competition, task: str, label_sep: str) -> tuple[str, str, str]:
    """(task, label_sep, note) of the training labels; for a multi-hot table, replaces the label column
    by the joined tags. auto: multi-hot columns -> multilabel; text with a separator -> tags or class
    names by what the labels show (kinds.tags_or_names); numbers with more than
    REGRESSION_MIN_DISTINCT distinct values -> regression when some are fractional, else what integers
    show (kinds.integers_task); everything else single-label. The note (auto only) says what was
    inferred and the flag that overrides it; thin evidence is one line asking for --task."""
    t = comp.train
    where = f"{comp.root / comp.train_csv}" if comp.train_csv else str(comp.root)
    if comp.one_hot and comp.task == "multilabel":     # several (or no) 1s a row: multi-hot
        if task in ("single", "regression"):
            raise InputError(f"{where}: columns {comp.one_hot} are multi-hot (rows with several or no class "
                             f"set), not --task {task}: use --task multilabel, or name the label column "
                             "with --label-col.")
        return "multilabel", comp.label_sep, ""
    if comp.layout == "class_folders":
        if task in ("multilabel", "regression"):
            raise InputError(f"{comp.root}: --task {task}: a folder per class holds one class per image; give a "
                             "training CSV (id + tags or number) for a multi-label or regression competition")
        return "single", "", ""
    text = t["label"].astype(str)
    if task == "multilabel":
        return "multilabel", label_sep or guess_sep(text) or " ", ""
    if task == "single":
        return "single", "", ""
    nums = pd.to_numeric(text, errors="coerce")
    if task == "regression":
        if nums.isna().any():
            bad = np.flatnonzero(nums.isna().to_numpy())[:10]
            raise InputError(f"{where}: --task regression needs a number in every row; data rows "
                             f"{[int(b) + 1 for b in bad]} hold {[text.iloc[b] for b in bad[:3]]}")
        t["label"] = t["label"] if pd.api.types.is_integer_dtype(t["label"]) else nums.astype("float64")
        return "regression", "", ""
    if label_sep:                                      # the user named a tag separator
        return "multilabel", label_sep, ""
    if nums.isna().any():
        sep = guess_sep(text)
        kind, note = tags_or_names(text, sep, where) if sep else ("single", "")
        return kind, sep if kind == "multilabel" else "", note
    if nums.nunique() <= REGRESSION_MIN_DISTINCT:
        return "single", "", ""
    if (nums != nums.round()).any():
        t["label"] = nums.astype("float64")
        return "regression", "", ""
    kind, note = integers_task(nums.to_numpy().astype("int64"), where)
    return kind, "", note


def _multi_hot_tags(df: pd.DataFrame, cols: list[str], label_sep: str) -> tuple[pd.Series, str]:
    """The tags of a multi-hot table joined by a separator no column name contains."""
    sep = label_sep or next((s for s in LABEL_SEPS if not any(s in c for c in cols)), "|")
    hot = df[cols].apply(pd.to_numeric).to_numpy() == 1
    return pd.Series(join_tags(hot, cols, sep), dtype=object), sep


def _read_csv_images(root, train_csv, id_col, label_col, image_ext, skip_bad, check, task="auto",
                     label_sep="") -> Competition:
    csv = find_train_csv(root, train_csv)
    fname = str(csv)
    cols = list(pd.read_csv(csv, nrows=0).columns)
    idc = pick_column(cols, id_col, ID_CANDIDATES, "id col", fname, 0)
    df = read_text_csv(csv)
    if (df[idc].str.strip() == "").any():
        rows = np.flatnonzero((df[idc].str.strip() == "").to_numpy())[:20]
        raise InputError(f"{fname}: empty ids in data rows {[int(r) + 1 for r in rows]}")
    one_hot = []
    if not label_col and not any(c.lower() in LABEL_CANDIDATES for c in cols):
        one_hot = one_hot_columns(df, [c for c in cols if c != idc], fname, task)
    multi_sep = ""
    if one_hot and (task == "multilabel" or (df[one_hot].apply(pd.to_numeric).sum(axis=1) != 1).any()):
        lab = "label"
        labels, multi_sep = _multi_hot_tags(df, one_hot, label_sep)
    elif one_hot:
        lab = "label"
        hot = df[one_hot].apply(pd.to_numeric).to_numpy().argmax(1)
        labels = pd.Series(np.array(one_hot, dtype=object)[hot], dtype=object)
    else:
        lab = pick_column(cols, label_col, LABEL_CANDIDATES, "label col", fname, 1)
        labels = labels_as_written(df[lab])
    image_dir = next((root / d for d in IMAGE_DIR_CANDIDATES if (root / d).is_dir()), root / "train")
    table = pd.DataFrame({"id": df[idc], "label": labels})
    for c in df.columns:
        if c not in (idc, lab, *one_hot) and c not in ("id", "label", "path", "fold", "index"):
            table[c] = df[c].replace("", np.nan)   # other columns (e.g. groups): empty is missing
    table.insert(2, "path", resolve_paths(table["id"], root, image_dir, image_ext, fname))
    bad: list = []
    table = check_files(table, root, "train", skip_bad, bad, fname, check)
    test = None
    sample = root / "sample_submission.csv"
    test_dir = next((root / d for d in TEST_DIR_CANDIDATES if (root / d).is_dir()), None)
    if sample.is_file():
        s = read_text_csv(sample)
        sid = s.columns[0] if idc not in s.columns else idc
        test = pd.DataFrame({"id": s[sid]})
        if test_dir is not None:
            test["path"] = resolve_paths(test["id"], root, test_dir, image_ext, str(sample))
    elif test_dir is not None:
        names = scan_images(test_dir)
        test = pd.DataFrame({"id": [os.path.splitext(n)[0] for n in names],
                             "path": [f"{test_dir.name}/{n}" for n in names]})
    return Competition("csv_images", root, table, test, id_col=idc, label_col=lab,
                       sample_submission=sample if sample.is_file() else None, bad_files=bad,
                       train_csv=csv.name, one_hot=one_hot, task="multilabel" if multi_sep else "single",
                       label_sep=multi_sep)


def _read_class_folders(root, train_csv, id_col, label_col, image_ext, skip_bad, check, task="auto",
                           label_sep="") -> Competition:
    rows = []
    for split in ("train", "val", "valid", "validation"):
        d = root / split
        if not d.is_dir():
            continue
        for name in scan_images(d):
            if "/" not in name:
                continue   # files directly under train/ have no class
            cls = name.split("/", 1)[0]
            rows.append({"id": f"{split}/{name}" if split != "train" else name, "label": cls,
                         "path": f"{split}/{name}", "split": split})
    if not rows:
        raise InputError(f"{root / 'train'}: no image files in its class folders")
    table = pd.DataFrame(rows)
    bad: list = []
    table = check_files(table, root, "train", skip_bad, bad, str(root / "train"), check)
    test = None
    test_dir = next((root / d for d in TEST_DIR_CANDIDATES if (root / d).is_dir()), None)
    if test_dir is not None:
        names = scan_images(test_dir)
        labelled = names and all("/" in n for n in names)
        stems = [os.path.splitext(n)[0] for n in names]
        ids = stems if len(set(stems)) == len(stems) and not labelled else names
        test = pd.DataFrame({"id": ids, "path": [f"{test_dir.name}/{n}" for n in names]})
        if labelled:
            test["label"] = [n.split("/", 1)[0] for n in names]
    sample = root / "sample_submission.csv"
    return Competition("class_folders", root, table, test,
                       sample_submission=sample if sample.is_file() else None, bad_files=bad)


def _read_numpy(root, train_csv, id_col, label_col, image_ext, skip_bad, check, task="auto",
                   label_sep="") -> Competition:
    xp, yp = root / "x_train.npy", root / "y_train.npy"
    for p in (xp, yp):
        if not p.is_file():
            raise InputError(f"{root}: found {'y' if p is xp else 'x'}_train.npy but not {p.name}")
    x = read_numpy_images(xp)
    y = read_numpy_labels(yp, len(x))
    table = pd.DataFrame({"id": np.arange(len(x)).astype(str), "label": y, "index": np.arange(len(x))})
    test = None
    comp = Competition("numpy", root, table)
    comp._arrays["train"] = x
    if (root / "x_test.npy").is_file():
        xt = read_numpy_images(root / "x_test.npy")
        comp._arrays["test"] = xt
        test = pd.DataFrame({"id": np.arange(len(xt)).astype(str), "index": np.arange(len(xt))})
        if (root / "y_test.npy").is_file():
            test["label"] = read_numpy_labels(root / "y_test.npy", len(xt))
    comp.test = test
    sample = root / "sample_submission.csv"
    comp.sample_submission = sample if sample.is_file() else None
    return comp


def _read_pixel(root, train_csv, id_col, label_col, image_ext, skip_bad, check, task="auto",
                   label_sep="") -> Competition:
    fname = find_train_csv(root, train_csv)
    cols = list(pd.read_csv(fname, nrows=0).columns)
    lab = pick_column([c for c in cols if c not in pixel_columns(cols)] or cols, label_col,
                LABEL_CANDIDATES, "label col", str(fname), 0)
    x, rest = read_pixel_csv(fname, lab)
    table = pd.DataFrame({"id": np.arange(len(x)).astype(str), "label": labels_as_written(rest[lab]).to_numpy(),
                          "index": np.arange(len(x))})
    comp = Competition("pixel_csv", root, table, label_col=lab, train_csv=fname.name)
    comp._arrays["train"] = x
    sample = root / "sample_submission.csv"
    comp.sample_submission = sample if sample.is_file() else None
    if (root / "test.csv").is_file():
        xt, trest = read_pixel_csv(root / "test.csv", lab)
        comp._arrays["test"] = xt
        ids = np.arange(1, len(xt) + 1).astype(str)   # Digit Recognizer's ImageId is 1-based
        if comp.sample_submission is not None:
            s = read_text_csv(sample)
            comp.id_col = s.columns[0]
            if len(s) == len(xt):
                ids = s[s.columns[0]].to_numpy()
        comp.test = pd.DataFrame({"id": ids, "index": np.arange(len(xt))})
        if lab in trest.columns:
            comp.test["label"] = labels_as_written(trest[lab]).to_numpy()
    return comp


# --------------------------------------------------------------------------- opening with the recorded settings

# how the competition is read: recorded in folds_meta.json by make_folds, used by every later step
READING = ("input_dir", "train_csv", "id_col", "label_col", "image_ext", "skip_bad_images", "task", "label_sep")


def reading_settings(cfg, meta: dict) -> dict:
    """How to read the competition: the settings make_folds recorded in folds_meta.json, where the
    user set a flag (or config key) of their own, that one."""
    recorded = dict(meta.get("reading") or {})
    if "input_dir" not in recorded and meta.get("input_dir"):   # a meta without a "reading" record
        recorded["input_dir"] = meta["input_dir"]
    if meta:
        recorded.setdefault("task", "single")   # a meta that records no task kind was single-label
        recorded.setdefault("label_sep", "")
    return {k: getattr(cfg, k) if (k in cfg.given or k not in recorded) else recorded[k] for k in READING}


def open_competition(cfg, meta: dict | None = None, *, check_train: bool = False, check_test: bool = False):
    """The one way every step opens the competition: with the reading settings of folds_meta.json
    (meta), flags overriding; without meta, the flags are the settings. check_train / check_test: look
    inside every training / test file (read_competition). The task kind (single, multilabel, regression)
    and the tag separator are reading settings too: make_folds records the detected ones. Returns
    (Competition, the reading settings used)."""
    reading = {k: getattr(cfg, k) for k in READING} if meta is None else reading_settings(cfg, meta)
    return read_competition(reading["input_dir"], train_csv=reading["train_csv"], id_col=reading["id_col"],
                            label_col=reading["label_col"], image_ext=reading["image_ext"],
                            skip_bad_images=reading["skip_bad_images"], check_train=check_train,
                            task=reading["task"], label_sep=reading["label_sep"],
                            check_test=check_test), reading


def probability_hint(sample_path, classes: list, metric: str | None) -> str | None:
    """One line when sample_submission.csv asks for one probability per class (a log-loss competition)
    and the metric is accuracy (its default) or not chosen yet (make_folds): the epoch kept by accuracy
    is not the one the leaderboard scores. None otherwise (or without a readable sample)."""
    if not sample_path or metric not in (None, "accuracy"):
        return None
    try:
        cols = list(pd.read_csv(sample_path, nrows=0).columns[1:])
    except (OSError, ValueError, pd.errors.ParserError):
        return None      # the sample's problems are reported where it is used (predict)
    if len(cols) < 2 or set(cols) != {str(c) for c in classes}:
        return None
    now = "--metric is accuracy" if metric else "train with --metric logloss"
    return (f"the sample asks for probabilities (one column per class): {now}"
            + (": --metric logloss picks the epoch that the leaderboard scores" if metric else
               " to keep the epoch that the leaderboard scores"))
