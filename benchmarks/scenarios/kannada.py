"""Kannada-MNIST -> Dig-MNIST, run through the kit for real.

The Kannada-MNIST training images are not in ../shared/data/kannada_mnist/, so this trains on the
Kannada-MNIST test set (10,000 images) and scores on Dig-MNIST (10,240 images written by other
volunteers, collected differently: the dataset's out-of-distribution test). Numpy layout:
x_train.npy / y_train.npy from X/y_kannada_MNIST_test, x_test.npy / y_test.npy from X/y_dig_MNIST
(the kit scores its test predictions with y_test.npy). The files are ordered by label (0..9
repeating): nothing here depends on that order; the kit's folds are stratified and shuffled.
Then make_folds.py -> train.py -> predict.py, and one result line.
Reference (the dataset's paper, arXiv:1908.01242, abstract): a CNN trained on the 60,000
Kannada-MNIST training images reaches 76.1% on Dig-MNIST (96.8% on the Kannada-MNIST test set).
This scenario trains on 10,000 other images of the same kind, so the figure is a landmark, not a
like-for-like comparison.

    python benchmarks/scenarios/kannada.py                  # budget: <= 15 min on 2 CPU cores
    python benchmarks/scenarios/kannada.py --mode full      # all 5 folds, more epochs (GPU)
    python benchmarks/scenarios/kannada.py --record         # append the result to benchmarks/RESULTS.md
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

DATASET = "kannada"
RAW_SUBDIR = "kannada_mnist"   # under ../shared/data/
RAW = ("X_kannada_MNIST_test-idx3-ubyte.gz", "y_kannada_MNIST_test-idx1-ubyte.gz",
       "X_dig_MNIST-idx3-ubyte.gz", "y_dig_MNIST-idx1-ubyte.gz")
REFERENCE = "paper CNN on 60k train: 76.1% on Dig-MNIST"
# CV (fold 0, 12 epochs) tied: no augmentation 98.9% (best epoch 8), --aug medium 98.9% (best
# epoch 11, still rising). The Keras-style recipe is kept: the scored set is written by other
# hands, and shifts/rotations/zoom are the invariances that transfer (decided before any test run).
DIGITS = ["--crop-pct", "1.0", "--aug", "medium", "--no-hflip", "--lr", "3e-3", "--batch-size", "64"]
MODES = {
    # 2 CPU cores: all 10,000 training images, all 5 folds (8,000 images per epoch each)
    "budget": dict(n_folds=5, limit=0, folds="all", epochs=18, model="test_resnet", img=28, args=DIGITS),
    "full": dict(n_folds=5, limit=0, folds="all", epochs=40, model="test_resnet", img=28, args=DIGITS),
}


def build(raw_dir: str | Path, out_dir: str | Path, limit: int = 0) -> Path:
    """Write the numpy layout into out_dir from the idx files of raw_dir.
    limit: at most this many training and this many test rows (a seeded random slice, never
    the first rows: the files are ordered by label)."""
    return common.idx_to_numpy_layout(raw_dir, RAW, out_dir, limit)


def main(argv=None) -> list:
    return common.main_single(argv, doc=__doc__, dataset=DATASET, raw_subdir=RAW_SUBDIR, raw_names=RAW,
                              build=build, modes=MODES, reference=REFERENCE,
                              what="the numpy layout (train: Kannada-MNIST test set, test: Dig-MNIST)")


if __name__ == "__main__":
    main()
