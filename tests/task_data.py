"""Small real multi-label and regression competitions for the end-to-end tests (issue 16), in the CSV +
images layout with a test folder, sample_submission.csv and solution.csv (the test labels):

    digit_pairs(root)   two real digits side by side (32 x 64 px); the labels are the set of the two
                        digits as space-separated tags ("3 7"; one tag when both are the same digit);
                        the sample asks for one tags column (Planet-like)
    rotated_digits(root) real digits rotated by a known angle; the target is the angle in degrees
                        (fractional); the sample asks for one number column
    houses(root, source)  the real houses photos and prices (../shared/data/houses), scored by RMSLE
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    path.write_bytes(buf.tobytes())


def _files(root: Path, train: pd.DataFrame, test_ids: list, test_values: list, sample_value) -> None:
    train.to_csv(root / "train.csv", index=False)
    col = train.columns[1]
    pd.DataFrame({"id": test_ids, col: sample_value}).to_csv(root / "sample_submission.csv", index=False)
    pd.DataFrame({"id": test_ids, col: test_values}).to_csv(root / "solution.csv", index=False)


def digit_pairs(root: Path, n_train: int = 240, n_test: int = 60, seed: int = 0) -> Path:
    from foldkit.data.demo import digit_images
    x, y = digit_images(32)
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_train + n_test):
        a, b = rng.integers(0, len(x), 2)
        split = "train" if k < n_train else "test"
        _write(root / split / f"p{k:04d}.png", np.concatenate([x[a], x[b]], axis=1))
        rows.append((f"p{k:04d}", " ".join(str(d) for d in sorted({int(y[a]), int(y[b])}))))
    train = pd.DataFrame(rows[:n_train], columns=["id", "tags"])
    test = rows[n_train:]
    _files(root, train, [i for i, _ in test], [t for _, t in test], "0 1")
    return root


def rotated_digits(root: Path, n_train: int = 160, n_test: int = 40, seed: int = 0) -> Path:
    from foldkit.data.demo import digit_images
    x, _ = digit_images(32)
    rng = np.random.default_rng(seed)
    angles = np.round(rng.uniform(-60, 60, n_train + n_test), 2)
    picks = rng.choice(len(x), n_train + n_test, replace=False)
    for k, (i, a) in enumerate(zip(picks, angles)):
        m = cv2.getRotationMatrix2D((16, 16), float(a), 1.0)
        _write(root / ("train" if k < n_train else "test") / f"r{k:04d}.png", cv2.warpAffine(x[i], m, (32, 32)))
    ids = [f"r{k:04d}" for k in range(n_train + n_test)]
    train = pd.DataFrame({"id": ids[:n_train], "angle": angles[:n_train]})
    _files(root, train, ids[n_train:], angles[n_train:].tolist(), 0.0)
    return root


def houses(root: Path, source: Path, n_test: int = 107, side: int = 64, seed: int = 0) -> Path:
    """The real houses competition (source: the shared `houses/` folder): the frontal photo downscaled to
    side x side PNG, the price as the target; n_test random houses are the test images (their prices in
    solution.csv), the rest train.csv."""
    table = pd.read_csv(source / "houses.csv")
    order = np.random.default_rng(seed).permutation(len(table))
    ids = [f"h{int(h):03d}" for h in table["house"]]
    for k, i in enumerate(order):
        img = cv2.imread(str(source / "frontal" / f"{int(table['house'][i])}.jpg"))
        _write(root / ("test" if k < n_test else "train") / f"{ids[i]}.png", cv2.resize(img, (side, side),
                                                                                         interpolation=cv2.INTER_AREA))
    test, train = order[:n_test], order[n_test:]
    prices = table["price"].to_numpy()
    pd.DataFrame({"id": [ids[i] for i in train], "price": prices[train]}).to_csv(root / "train.csv", index=False)
    _files(root, pd.read_csv(root / "train.csv"), [ids[i] for i in test], prices[test].tolist(), 0.0)
    return root
