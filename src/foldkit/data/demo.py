"""The embedded demo competition: scikit-learn's real handwritten digits as a Kaggle-style task.

scikit-learn ships 1,797 real 8x8 digit images (no download). `build_demo`
turns them into a competition folder of the csv_images layout: train.csv
(id,label), train/<id>.png upscaled to 32x32, test/<id>.png,
sample_submission.csv, and solution.csv (the test labels, kept aside so the kit
can score its own submission). The 80/20 split is stratified and fixed:
re-running writes byte-identical files.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from foldkit.io import atomic_write_bytes

DEMO_SIZE = 32
DEMO_SEED = 0


def _write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    atomic_write_bytes(path, data)
    return True


def _csv_bytes(df: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    df.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue().encode()


def digit_images(size: int = DEMO_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as (N,size,size) uint8 images and their labels."""
    import cv2
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = np.clip(d.images * (255.0 / 16.0) + 0.5, 0, 255).astype(np.uint8)
    big = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_CUBIC) for im in imgs])
    return big, d.target.astype(np.int64)


def build_demo(root: str | Path, size: int = DEMO_SIZE) -> dict:
    """Write the demo competition under root. Returns counts (train, test, files written)."""
    import cv2
    from sklearn.model_selection import train_test_split

    root = Path(root)
    x, y = digit_images(size)
    rng = np.random.default_rng(DEMO_SEED)
    ids = np.array([f"{k:04d}" for k in rng.permutation(len(x))])   # opaque ids, leading zeros
    tr, te = train_test_split(np.arange(len(x)), test_size=0.2, stratify=y, random_state=DEMO_SEED)
    tr, te = np.sort(tr), np.sort(te)
    written = 0
    for split, idx in (("train", tr), ("test", te)):
        for i in idx:
            ok, png = cv2.imencode(".png", x[i])
            written += _write_if_changed(root / split / f"{ids[i]}.png", png.tobytes())
    files = {
        "train.csv": pd.DataFrame({"id": ids[tr], "label": y[tr]}),
        "sample_submission.csv": pd.DataFrame({"id": ids[te], "label": np.zeros(len(te), np.int64)}),
        "solution.csv": pd.DataFrame({"id": ids[te], "label": y[te]}),
    }
    for name, df in files.items():
        written += _write_if_changed(root / name, _csv_bytes(df))
    readme = ("Demo competition built by `python src/demo.py` from scikit-learn's bundled handwritten\n"
              "digits (real data, 10 classes). train.csv + train/ for training, test/ +\n"
              "sample_submission.csv for the submission, solution.csv holds the test labels.\n")
    written += _write_if_changed(root / "README.txt", readme.encode())
    return {"train": len(tr), "test": len(te), "written": written}
