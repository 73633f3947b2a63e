"""Reading a competition: layout detection, the four readers, the sample table.

Four layouts are understood (see docs/input.md):

* ``csv_images``    train.csv / labels.csv / train_labels.csv, or the CSV whose ids name a train* folder's
                    files (id, label, or one-hot class columns) + train/ (train-jpg/ ...) images
                    (+ test/ or test* folders, sample_submission*.csv)
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
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from foldkit.data.files import (check_files, check_labels, count_named, find_test_problems, image_folders,
                                one_hot_columns, pick_column, pixel_columns, read_numpy_images, read_numpy_labels,
                                read_pixel_csv, resolve_paths, scan_images)
from foldkit.data.images import InputError
from foldkit.data.kinds import LABEL_SEPS, REGRESSION_MIN_DISTINCT, guess_sep, integers_task, tags_or_names
from foldkit.tags import join_tags, tag_names

ID_CANDIDATES = ["id", "image_id", "imageid", "image", "image_name", "filename", "file_name",
                 "file", "fname", "name", "img", "path"]
LABEL_CANDIDATES = ["label", "labels", "target", "class", "class_name", "category", "y", "diagnosis"]
IMAGE_DIR_CANDIDATES = ["train", "train_images", "images", "train_imgs", "imgs"]
TEST_DIR_CANDIDATES = ["test", "test_images", "test_imgs"]
TRAIN_CSV_CANDIDATES = ["train.csv", "labels.csv", "train_labels.csv"]
SAMPLE_NAME = re.compile(r"sample_?submission.*\.csv", re.IGNORECASE)     # Planet: sample_submission_v2.csv
NOT_TRAINING_CSV = re.compile(r"(sample|test|solution|submission)", re.IGNORECASE)   # name starts
NAMED_SHARE = 0.8      # a CSV whose first rows' ids name files of a training folder (this share) is the training CSV
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
    train_dir: str = ""          # the folder of the training images (file layouts), relative to root
    test_dirs: list = field(default_factory=list)   # the folders of the test images, in the order ids are looked up
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


def find_train_csv(root: str | Path, name: str = "", train_dir: str = "") -> Path | None:
    """The training CSV of a competition folder: `name` (--train-csv) when given, else the first of
    TRAIN_CSV_CANDIDATES that exists (Kaggle ships train.csv, labels.csv or train_labels.csv), else the
    CSV whose ids name the files of a training image folder (Planet's train_v2.csv + train-jpg/)."""
    root = Path(root)
    if name:
        path = root / name
        if not path.is_file():
            have = sorted(p.name for p in root.glob("*.csv"))
            raise InputError(f"--train-csv {name}: no such file in {root} (CSV files there: {have or 'none'})")
        return path
    return next((root / c for c in TRAIN_CSV_CANDIDATES if (root / c).is_file()), None) \
        or _csv_naming_images(root, train_dir)


def _csv_naming_images(root: Path, train_dir: str) -> Path | None:
    """The one CSV (not a sample, test or solution file) whose first rows' ids name files of a training
    image folder; several: the one named train*, else one line asking for --train-csv."""
    csvs = [p for p in sorted(root.glob("*.csv")) if not NOT_TRAINING_CSV.match(p.name)]
    dirs = train_image_dirs(root, train_dir) if csvs else []
    hits = []
    for p in csvs:
        try:
            head = read_text_csv(p, nrows=50)
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError):
            continue        # not a table: not the training CSV
        if head.empty:
            continue
        ids = head[pick_column(list(head.columns), "", ID_CANDIDATES, "id col", str(p), 0)].tolist()
        if any(count_named(ids, d) >= NAMED_SHARE * len(ids) for d in dirs):
            hits.append(p)
    if len(hits) > 1:
        hits = [p for p in hits if p.name.lower().startswith("train")] or hits
    if len(hits) > 1:
        raise InputError(f"{root}: the CSV files {[p.name for p in hits]} all name the training images: say which "
                         "one holds the labels with --train-csv NAME")
    return hits[0] if hits else None


def find_sample(root: Path) -> Path | None:
    """sample_submission.csv, else the one sample_submission*.csv / sampleSubmission*.csv of the folder."""
    if (root / "sample_submission.csv").is_file():
        return root / "sample_submission.csv"
    found = sorted(p for p in root.glob("*.csv") if SAMPLE_NAME.fullmatch(p.name))
    if len(found) > 1:
        raise InputError(f"{root}: several sample submissions {[p.name for p in found]}: keep the one the "
                         "competition scores (move the others out of the folder)")
    return found[0] if found else None


def train_image_dirs(root: Path, given: str = "") -> list[Path]:
    """Where the training images may be: --train-dir, else the IMAGE_DIR_CANDIDATES that exist, then
    the other train* folders holding images (train-jpg, train-tif-v2 ...), in name order."""
    if given:
        d = root / given
        if not d.is_dir():
            have = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            raise InputError(f"--train-dir {given}: no such folder in {root} (folders there: {have or 'none'})")
        return [d]
    exact = [root / d for d in IMAGE_DIR_CANDIDATES if (root / d).is_dir()]
    return exact + [d for d in image_folders(root, "train") if d not in exact]


def _after(name: str, prefix: str) -> str:
    """'jpg' of train-jpg, 'jpg-additional' of test-jpg-additional, '' of train."""
    return name[len(prefix):].strip("-_").lower() if name.lower().startswith(prefix) else ""


def test_image_dirs(root: Path, train_dir: Path | None, given: str = "") -> list[Path]:
    """Where the test images are, in the order ids are looked up: --test-dir (comma-separated names),
    else the test* folders holding images that carry the training folder's suffix (train-jpg: test-jpg,
    test-jpg-additional), else the first of TEST_DIR_CANDIDATES, else every test* folder of images."""
    if given:
        dirs = [root / g.strip() for g in given.split(",") if g.strip()]
        if missing := [d.name for d in dirs if not d.is_dir()]:
            raise InputError(f"--test-dir: no folder {missing} in {root}")
        return dirs
    found = image_folders(root, "test")
    tail = _after(train_dir.name, "train") if train_dir is not None else ""
    same = [d for d in found if _after(d.name, "test").startswith(tail)] if tail else []
    if same:
        return same
    exact = next((root / d for d in TEST_DIR_CANDIDATES if (root / d).is_dir()), None)
    return [exact] if exact is not None else found


def detect_layout(root: str | Path, train_csv: str = "", train_dir: str = "") -> str:
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"competition folder {root} does not exist. Put a competition there "
                         "(see docs/input.md) or pass --input-dir.")
    if not train_csv and ((root / "x_train.npy").is_file() or (root / "y_train.npy").is_file()):
        return "numpy"
    csv = find_train_csv(root, train_csv, train_dir)
    if csv is not None:
        cols = list(pd.read_csv(csv, nrows=0).columns)
        if len(pixel_columns(cols)) >= 4:
            return "pixel_csv"
        return "csv_images"
    train = train_image_dirs(root, train_dir)[0] if train_dir else root / "train"
    if train.is_dir() and any(d.is_dir() and not d.name.startswith(".") for d in train.iterdir()):
        return "class_folders"
    found = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    raise InputError(
        f"{root}: cannot tell the input layout (found: {found or 'nothing'}). Expected one of: "
        f"a training CSV ({', '.join(TRAIN_CSV_CANDIDATES)}, or one whose ids name the files of a train* "
        "folder; else --train-csv NAME) + its images (train/, train-jpg/ ...; else --train-dir NAME); "
        "train/<class>/ folders; x_train.npy + y_train.npy; train.csv with label,pixel0..pixelN "
        "columns. See docs/input.md.")


def read_competition(root: str | Path, id_col: str = "", label_col: str = "", image_ext: str = "",
                     skip_bad_images: bool = False, check_train: bool = True, check_test: bool = True,
                     train_csv: str = "", task: str = "auto", label_sep: str = "", train_dir: str = "",
                     test_dir: str = "") -> Competition:
    """Detect the layout of `root` and read it into a Competition (see module doc).

    check_train / check_test: look inside every file (signature, end marker) instead of only
    whether it exists. Bad training files stop the read (or are dropped with skip_bad_images);
    test problems are recorded in `comp.test_problems`, for predict to refuse and make_folds to
    warn about (the folds do not need the test set).

    task / label_sep: what a label is (TASKS, or "auto": detect_task); a multi-label table's `label`
    holds the tags joined by comp.label_sep ('' = no tag), comp.classes the tag names.

    train_dir / test_dir: the image folders (--train-dir, --test-dir) when their names say nothing."""
    root = Path(root)
    layout = detect_layout(root, train_csv, train_dir)
    if layout in ("numpy", "pixel_csv") and (train_dir or test_dir):
        raise InputError(f"{root}: --train-dir/--test-dir name image folders; the {layout} layout holds its "
                         "images in arrays: leave them out")
    reader = {"csv_images": _read_csv_images, "class_folders": _read_class_folders,
              "numpy": _read_numpy, "pixel_csv": _read_pixel}[layout]
    comp = reader(root, train_csv=train_csv, id_col=id_col, label_col=label_col, image_ext=image_ext,
                  skip_bad=skip_bad_images, check=check_train, task=task or "auto", label_sep=label_sep,
                  train_dir=train_dir, test_dir=test_dir)
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
                     label_sep="", train_dir="", test_dir="") -> Competition:
    csv = find_train_csv(root, train_csv, train_dir)
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
    dirs = train_image_dirs(root, train_dir) or [root / "train"]
    head = df[idc].head(200).tolist()        # the folder that holds the ids' files
    image_dir = dirs[0] if len(dirs) == 1 else max(dirs, key=lambda d: count_named(head, d))
    table = pd.DataFrame({"id": df[idc], "label": labels})
    for c in df.columns:
        if c not in (idc, lab, *one_hot) and c not in ("id", "label", "path", "fold", "index"):
            table[c] = df[c].replace("", np.nan)   # other columns (e.g. groups): empty is missing
    table.insert(2, "path", resolve_paths(table["id"], root, image_dir, image_ext, fname))
    bad: list = []
    table = check_files(table, root, "train", skip_bad, bad, fname, check)
    sample = find_sample(root)
    tdirs = test_image_dirs(root, image_dir, test_dir)
    if sample is not None:
        test = _sample_test(root, sample, idc, tdirs, image_ext)
    else:
        names = [(d, n) for d in tdirs for n in scan_images(d)]
        test = pd.DataFrame({"id": [os.path.splitext(n)[0] for _, n in names],
                             "path": [f"{d.name}/{n}" for d, n in names]}) if tdirs else None
    return Competition("csv_images", root, table, test, id_col=idc, label_col=lab,
                       sample_submission=sample, bad_files=bad,
                       train_csv=csv.name, one_hot=one_hot, task="multilabel" if multi_sep else "single",
                       label_sep=multi_sep, train_dir=_rel(image_dir, root), test_dirs=[_rel(d, root) for d in tdirs])


def _rel(folder: Path, root: Path) -> str:
    return folder.relative_to(root).as_posix()


def _sample_test(root: Path, sample: Path, idc: str, tdirs: list[Path], image_ext: str) -> pd.DataFrame:
    """The test table of a sample submission: its ids as it writes them (with or without the files'
    extension), each found in the first test folder that holds it."""
    s = read_text_csv(sample)
    sid = idc if idc in s.columns else s.columns[0]
    test = pd.DataFrame({"id": s[sid]})
    if tdirs:
        paths: list = [None] * len(test)
        for d in tdirs:
            found = resolve_paths(test["id"], root, d, image_ext, str(sample))
            paths = [p if p is not None else f for p, f in zip(paths, found)]
        test["path"] = paths
    return test


def _read_class_folders(root, train_csv, id_col, label_col, image_ext, skip_bad, check, task="auto",
                           label_sep="", train_dir="", test_dir="") -> Competition:
    rows = []
    first = train_dir or "train"
    for split in (first, "val", "valid", "validation"):
        d = root / split
        if not d.is_dir():
            continue
        for name in scan_images(d):
            if "/" not in name:
                continue   # files directly under train/ have no class
            cls = name.split("/", 1)[0]
            rows.append({"id": f"{split}/{name}" if split != first else name, "label": cls,
                         "path": f"{split}/{name}", "split": split})
    if not rows:
        raise InputError(f"{root / first}: no image files in its class folders")
    table = pd.DataFrame(rows)
    bad: list = []
    table = check_files(table, root, "train", skip_bad, bad, str(root / first), check)
    test = None
    tdirs = test_image_dirs(root, root / first, test_dir)
    names = [(d, n) for d in tdirs for n in scan_images(d)]
    labelled = bool(names) and all("/" in n for _, n in names)
    sample = find_sample(root)
    if sample is not None and tdirs and not labelled:    # ids as the sample writes them (Plant Seedlings: 'x.png')
        test = _sample_test(root, sample, "", tdirs, image_ext)
    elif tdirs:
        stems = [os.path.splitext(n)[0] for _, n in names]
        ids = stems if len(set(stems)) == len(stems) and not labelled else [n for _, n in names]
        test = pd.DataFrame({"id": ids, "path": [f"{d.name}/{n}" for d, n in names]})
        if labelled:
            test["label"] = [n.split("/", 1)[0] for _, n in names]
    return Competition("class_folders", root, table, test, sample_submission=sample, bad_files=bad,
                       train_dir=first, test_dirs=[_rel(d, root) for d in tdirs])


def _read_numpy(root, train_csv, id_col, label_col, image_ext, skip_bad, check, task="auto",
                   label_sep="", train_dir="", test_dir="") -> Competition:
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
    comp.sample_submission = find_sample(root)
    return comp


def _read_pixel(root, train_csv, id_col, label_col, image_ext, skip_bad, check, task="auto",
                   label_sep="", train_dir="", test_dir="") -> Competition:
    fname = find_train_csv(root, train_csv)
    cols = list(pd.read_csv(fname, nrows=0).columns)
    lab = pick_column([c for c in cols if c not in pixel_columns(cols)] or cols, label_col,
                LABEL_CANDIDATES, "label col", str(fname), 0)
    x, rest = read_pixel_csv(fname, lab)
    table = pd.DataFrame({"id": np.arange(len(x)).astype(str), "label": labels_as_written(rest[lab]).to_numpy(),
                          "index": np.arange(len(x))})
    comp = Competition("pixel_csv", root, table, label_col=lab, train_csv=fname.name)
    comp._arrays["train"] = x
    comp.sample_submission = find_sample(root)
    if (root / "test.csv").is_file():
        xt, trest = read_pixel_csv(root / "test.csv", lab)
        comp._arrays["test"] = xt
        ids = np.arange(1, len(xt) + 1).astype(str)   # Digit Recognizer's ImageId is 1-based
        if comp.sample_submission is not None:
            s = read_text_csv(comp.sample_submission)
            comp.id_col = s.columns[0]
            if len(s) == len(xt):
                ids = s[s.columns[0]].to_numpy()
        comp.test = pd.DataFrame({"id": ids, "index": np.arange(len(xt))})
        if lab in trest.columns:
            comp.test["label"] = labels_as_written(trest[lab]).to_numpy()
    return comp


# --------------------------------------------------------------------------- opening with the recorded settings

# how the competition is read: recorded in folds_meta.json by make_folds, used by every later step
READING = ("input_dir", "train_csv", "id_col", "label_col", "image_ext", "skip_bad_images", "task", "label_sep",
           "train_dir", "test_dir")


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
                            task=reading["task"], label_sep=reading["label_sep"], train_dir=reading["train_dir"],
                            test_dir=reading["test_dir"], check_test=check_test), reading


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
