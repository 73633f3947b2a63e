"""CMATERdb handwritten Bangla numerals, run through the kit for real.

Builds the numpy-array competition from the dataset's npz files
(../shared/data/cmaterdb/bangla-numerals/): `images` (N,32,32,3) uint8 and `labels` of
training-images.npz become x_train.npy / y_train.npy (5,000 images), those of
testing-images.npz x_test.npy / y_test.npy (1,000 images; the kit scores its test predictions
with y_test.npy). The three channels are identical: the kit detects grey data and trains with
one channel. Then make_folds.py -> train.py -> predict.py, and one result line.

    python benchmarks/scenarios/bangla.py                  # budget: <= 15 min on 2 CPU cores
    python benchmarks/scenarios/bangla.py --mode full      # all 5 folds, more epochs (GPU)
    python benchmarks/scenarios/bangla.py --record         # append the result to benchmarks/RESULTS.md
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

DATASET = "bangla"
RAW = ("training-images.npz", "testing-images.npz")
REFERENCE = "-"
# The demo's digit recipe (Keras-style shifts/rotations/zoom, no flips) at the native 32 px.
DIGITS = ["--crop-pct", "1.0", "--aug", "medium", "--no-hflip", "--lr", "3e-3", "--batch-size", "64"]
MODES = {
    "budget": dict(n_folds=5, limit=0, folds="0,1", epochs=30, model="test_resnet", img=32, args=DIGITS),
    "full": dict(n_folds=5, limit=0, folds="all", epochs=60, model="test_resnet", img=32, args=DIGITS),
}


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return z["images"], z["labels"]


def build(raw_dir: str | Path, out_dir: str | Path, limit: int = 0) -> Path:
    """Write the numpy layout into out_dir from the npz files of raw_dir.
    limit: at most this many training and this many test rows (a seeded random slice)."""
    raw = Path(raw_dir)
    x_tr, y_tr = _load(raw / RAW[0])
    x_te, y_te = _load(raw / RAW[1])
    tr, te = common.subset(len(x_tr), limit), common.subset(len(x_te), limit)
    return common.write_numpy_layout(out_dir, x_tr[tr], y_tr[tr], x_te[te], y_te[te])


def main(argv=None) -> list:
    return common.main_single(argv, doc=__doc__, dataset=DATASET, raw_names=RAW, build=build, modes=MODES,
                              reference=REFERENCE, what="the numpy layout")


if __name__ == "__main__":
    main()
