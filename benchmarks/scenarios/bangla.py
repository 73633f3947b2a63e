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
RAW_SUBDIR = "cmaterdb/bangla-numerals"   # under ../shared/data/
RAW = ("training-images.npz", "testing-images.npz")
REFERENCE = "-"
# Chosen on CV (fold 0, 20 epochs: no augmentation 98.9%, --aug medium 93.6%). These digits are
# dark ink on a white page, and the medium preset's affine transforms fill the uncovered border
# with black: a frame that no evaluation image has.
PLAIN = ["--crop-pct", "1.0", "--aug", "none", "--no-hflip", "--lr", "3e-3", "--batch-size", "64"]
MODES = {
    # 2 CPU cores: all 5,000 training images, all 5 folds (4,000 images per epoch each)
    "budget": dict(n_folds=5, limit=0, folds="all", epochs=20, model="test_resnet", img=32, args=PLAIN),
    "full": dict(n_folds=5, limit=0, folds="all", epochs=40, model="test_resnet", img=32, args=PLAIN),
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
    return common.main_single(argv, doc=__doc__, dataset=DATASET, raw_subdir=RAW_SUBDIR, raw_names=RAW,
                              build=build, modes=MODES, reference=REFERENCE, what="the numpy layout")


if __name__ == "__main__":
    main()
