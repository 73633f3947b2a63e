"""The competition folder's files, below the four layout readers (foldkit.data.reading): image files found
and ids mapped to them (never outside the folder), every file checked, array files and pixel CSVs read,
label columns picked and checked.

Decoding an image is foldkit.data.images'; this module only opens a file to check or read it.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from foldkit.data.images import ImageError, InputError, check_image_file

IMAGE_EXTS = {".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
              ".ppm", ".pgm", ".pbm", ".pnm"}


def pick_column(columns: list[str], wanted: str, candidates: list[str], what: str, fname: str, fallback: int) -> str:
    if wanted:
        if wanted not in columns:
            raise InputError(f"{fname}: no column {wanted!r} ({what}); columns are {columns}. "
                             f"Pass the right name with --{what.replace(' ', '-')}.")
        return wanted
    lower = {c.lower(): c for c in columns}
    for c in candidates:
        if c in lower:
            return lower[c]
    if len(columns) <= fallback:
        raise InputError(f"{fname}: cannot tell which column is the {what}; columns are {columns}")
    return columns[fallback]


def scan_images(folder: Path) -> list[str]:
    """Image file names (relative to folder, '/'-separated) under folder, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, folder)
        for f in filenames:
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTS:
                out.append(f if rel == "." else f"{rel}/{f}".replace(os.sep, "/"))
    return sorted(out)


def holds_images(folder: Path) -> bool:
    """Whether an image file is anywhere under folder (stops at the first)."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTS for f in filenames):
            return True
    return False


def image_folders(root: Path, prefix: str) -> list[Path]:
    """root's folders whose name starts with prefix (train, train-jpg, train_images, test-jpg-additional ...)
    and that hold image files, in name order."""
    return [d for d in sorted(root.iterdir()) if d.is_dir() and d.name.lower().startswith(prefix)
            and holds_images(d)]


def count_named(ids: list[str], folder: Path) -> int:
    """How many of ids name an image file in folder, with or without its extension."""
    listing = scan_images(folder) if folder.is_dir() else []
    known = set(listing) | {os.path.splitext(n)[0] for n in listing}
    return sum(str(i) in known for i in ids)


def _refuse_escaping_ids(ids: pd.Series, fname: str) -> None:
    """Refuse, by name and before any file is touched, ids that would resolve outside the
    competition folder (absolute paths, '..' components)."""
    for row, i in enumerate(ids.tolist()):
        parts = str(i).replace("\\", "/").split("/")
        if str(i).startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", str(i)):
            raise InputError(f"{fname}: data row {row + 1}: id {i!r} points outside the competition's "
                             "image folder. Ids must be file names (or paths inside the folder); fix that row.")


def resolve_paths(ids: pd.Series, root: Path, image_dir: Path, image_ext: str, fname: str) -> list[str | None]:
    """Map ids to file paths relative to root; None where no file is found.

    Ids may carry an extension or not (then it is inferred from the files in
    image_dir, or taken from image_ext), and may be paths relative to root.
    """
    _refuse_escaping_ids(ids, fname)
    rel_dir = image_dir.relative_to(root).as_posix()
    listing = scan_images(image_dir) if image_dir.is_dir() else []
    by_name = set(listing)
    by_stem: dict[str, str] = {}
    for name in listing:
        by_stem.setdefault(os.path.splitext(name)[0], name)
    ext = image_ext if (not image_ext or image_ext.startswith(".")) else "." + image_ext
    out: list[str | None] = []
    for i in ids:
        if ext:
            name = i + ext if not i.lower().endswith(ext.lower()) else i
            out.append(f"{rel_dir}/{name}" if name in by_name else None)
        elif i in by_name:
            out.append(f"{rel_dir}/{i}")
        elif i in by_stem:
            out.append(f"{rel_dir}/{by_stem[i]}")
        elif (root / i).is_file():
            out.append(Path(i).as_posix())
        else:
            out.append(None)
    return out


def read_numpy_images(path: Path) -> np.ndarray:
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{path}: cannot read as a numpy array ({e})") from None
    if x.ndim == 3:
        x = x[..., None]
    elif x.ndim == 4:
        if x.shape[-1] not in (1, 3, 4) and x.shape[1] in (1, 3, 4):
            x = np.transpose(x, (0, 2, 3, 1))
        elif x.shape[-1] not in (1, 3, 4):
            raise InputError(f"{path}: shape {x.shape} has no channel axis of size 1, 3 or 4; "
                             "expected (N,H,W), (N,H,W,C) or (N,C,H,W)")
    else:
        raise InputError(f"{path}: shape {x.shape}; expected (N,H,W), (N,H,W,C) or (N,C,H,W)")
    if x.dtype != np.uint8:
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise InputError(f"{path}: dtype {x.dtype} is not numeric")
        lo, hi = float(np.min(x)), float(np.max(x))
        if lo < 0 or hi > 255:
            raise InputError(f"{path}: values span [{lo}, {hi}]; expected uint8 0..255 or floats in "
                             "0..1 / 0..255. Undo any normalisation before saving.")
        scale = 255.0 if (np.issubdtype(x.dtype, np.floating) and hi <= 1.0) else 1.0
        x = np.clip(np.asarray(x, dtype=np.float32) * scale + 0.5, 0, 255).astype(np.uint8)
    if x.shape[-1] == 4:
        x = x[..., :3]
    return np.ascontiguousarray(x)


def read_numpy_labels(path: Path, n: int) -> np.ndarray:
    try:
        y = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{path}: cannot read as a numpy array ({e})") from None
    if y.ndim == 2 and y.shape[1] > 1:     # one-hot (Keras to_categorical)
        if not ((y == 0) | (y == 1)).all() or (y.sum(1) != 1).any():
            raise InputError(f"{path}: shape {y.shape} but not one-hot (rows with several, no or non-0/1 "
                             "values): a multi-label numpy layout is not read; give a training CSV of tags")
        y = y.argmax(1)
    y = y.reshape(-1) if y.ndim == 2 else y
    if y.ndim != 1:
        raise InputError(f"{path}: shape {y.shape}; expected (N,) labels or (N,K) one-hot")
    if len(y) != n:
        raise InputError(f"{path}: {len(y)} labels but the images file has {n} images")
    return y


def pixel_columns(columns: list[str]) -> list[str]:
    return [c for c in columns if re.fullmatch(r"(pixel|px|p)_?\d+", str(c).lower())]


def read_pixel_csv(path: Path, label_col: str) -> tuple[np.ndarray, pd.DataFrame]:
    # the label column as text, numbers for the pixels (an empty or non-numeric pixel is refused below)
    df = pd.read_csv(path, dtype={label_col: str}, keep_default_na=False, na_values=[""])
    pix = pixel_columns(list(df.columns))
    if not pix:
        pix = [c for c in df.columns if c != label_col and pd.api.types.is_numeric_dtype(df[c])]
    n = len(pix)
    side = math.isqrt(n)
    if side * side == n:
        shape = (side, side, 1)
    elif n % 3 == 0 and math.isqrt(n // 3) ** 2 == n // 3:
        side = math.isqrt(n // 3)
        shape = (side, side, 3)
    else:
        raise InputError(f"{path}: {n} pixel columns is not a square image (side*side or side*side*3)")
    bad_cols = [c for c in pix if not pd.api.types.is_numeric_dtype(df[c])]
    if bad_cols:
        raise InputError(f"{path}: non-numeric pixel values in column(s) {bad_cols[:5]}")
    vals = df[pix].to_numpy()
    if np.isnan(vals).any() if np.issubdtype(vals.dtype, np.floating) else False:
        bad = np.flatnonzero(np.isnan(vals).any(1))[:10]
        raise InputError(f"{path}: empty pixel values in data rows {[int(b) + 1 for b in bad]}")
    hi = vals.max() if vals.size else 0
    scale = 255.0 if np.issubdtype(vals.dtype, np.floating) and hi <= 1.0 else 1.0
    x = np.clip(vals * scale + (0.5 if scale != 1.0 else 0), 0, 255).astype(np.uint8)
    return x.reshape((len(df),) + shape), df.drop(columns=pix)


def check_files(table: pd.DataFrame, root: Path, split: str, skip_bad: bool, bad: list,
                  fname: str, check: bool = True) -> pd.DataFrame:
    """Check every file of a file-based table; raise on the first bad ones or drop them."""
    paths = table["path"].tolist()
    if check:
        reasons = [check_image_file(root / p) if isinstance(p, str) else "missing" for p in paths]
    else:
        reasons = [None if isinstance(p, str) else "missing" for p in paths]
    bad_rows = [(i, paths[i], r) for i, r in enumerate(reasons) if r]
    if not bad_rows:
        return table
    ids = table["id"].tolist()
    desc = [f"data row {i + 1} (id {ids[i]!r}): {root / p if isinstance(p, str) else 'no file for this id'}: {r}" for i, p, r in bad_rows]
    if not skip_bad:
        more = f"\n  ... and {len(desc) - 10} more" if len(desc) > 10 else ""
        raise ImageError(f"{fname}: {len(desc)} bad image file(s):\n  " + "\n  ".join(desc[:10]) + more
                         + "\nFix or remove them, or pass --skip-bad-images to leave them out.")
    bad.extend((split, i + 1, p if isinstance(p, str) else f"(id {ids[i]})", r) for i, p, r in bad_rows)
    keep = np.ones(len(table), bool)
    keep[[i for i, _, _ in bad_rows]] = False
    return table[keep].reset_index(drop=True)


def find_test_problems(test: pd.DataFrame, root: Path, check: bool) -> list[str]:
    """'data row r (id x): path: reason' for each test image that is missing or (check) unreadable."""
    out = []
    for i, (tid, p) in enumerate(zip(test["id"].tolist(), test["path"].tolist())):
        if not isinstance(p, str):
            out.append(f"data row {i + 1} (id {tid!r}): no image file for this id")
        elif check and (reason := check_image_file(root / p)):
            out.append(f"data row {i + 1} (id {tid!r}): {root / p}: {reason}")
    return out


def check_labels(train: pd.DataFrame, layout: str, root: Path) -> None:
    """NaN/empty labels are reported by row (a sample without a label cannot be trained on)."""
    lab = train["label"]
    empty = lab.isna() | (lab.astype(str).str.strip() == "")
    if empty.any():
        rows = np.flatnonzero(empty.to_numpy())
        where = "train.csv data rows" if layout in ("csv_images", "pixel_csv") else "rows"
        raise InputError(f"{root}: {len(rows)} sample(s) without a label, {where} "
                         f"{[int(r) + 1 for r in rows[:20]]}{' ...' if len(rows) > 20 else ''} "
                         "(1 = first data row). Fill them in or delete those rows.")


def one_hot_columns(df: pd.DataFrame, candidates: list[str], fname: str, task: str = "auto") -> list[str]:
    """The class columns of a one-hot training CSV (Plant Pathology: image_id,healthy,rust,scab), or []
    when the columns are not one-hot. Every column 0/1; exactly one 1 per row is single-label, several
    or no 1 in a row a multi-label task (detect_task), refused by row with --task single."""
    cols = list(candidates)
    if len(cols) < 2:
        return []
    num = df[cols].apply(pd.to_numeric, errors="coerce")   # the CSV is read as text
    if not (num.notna() & num.isin([0, 1])).all().all():
        return []
    sums = num.sum(axis=1).to_numpy()
    if (sums != 1).any() and task == "single":
        rows = (np.flatnonzero(sums != 1) + 1).tolist()
        raise InputError(f"{fname}: columns {cols} look one-hot, but data rows {rows[:10]} have "
                         f"{int(sums[rows[0] - 1])} classes set: that is multi-label data, not --task single. "
                         "Use --task multilabel (or auto), or name the label column with --label-col.")
    return cols

