"""Time `python src/make_folds.py` on 100,000 training rows (issue: under 5 s).

Two competitions are built in a scratch folder: the numpy layout (100k 28x28
images) and the CSV + image-folder layout (100k small PNG files, every one
checked for existence, size, signature and end marker). Prints wall times of the
real CLI, which includes Python start-up and imports.

    python benchmarks/bench_make_folds.py [--rows 100000]
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args()
    n = args.rows
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, n)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        npy = tmp / "npy"
        npy.mkdir()
        np.save(npy / "x_train.npy", rng.integers(0, 255, (n, 28, 28), dtype=np.uint8))
        np.save(npy / "y_train.npy", labels)
        csv = tmp / "csv"
        (csv / "train").mkdir(parents=True)
        import cv2
        png = cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes()
        ids = [f"{i:06d}" for i in range(n)]
        for i in ids:
            (csv / "train" / f"{i}.png").write_bytes(png)
        pd.DataFrame({"id": ids, "label": labels}).to_csv(csv / "train.csv", index=False)
        for name, root in (("numpy", npy), ("csv_images", csv)):
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, str(REPO / "src" / "make_folds.py"), "--input-dir", str(root),
                                "--folds-dir", str(tmp / f"folds_{name}"), "--models-dir", str(tmp / "m")],
                               capture_output=True, text=True)
            dt = time.perf_counter() - t0
            assert r.returncode == 0, r.stderr
            print(f"make_folds {name:10s} {n:>7,d} rows: {dt:5.2f} s wall (CLI incl. start-up)")


if __name__ == "__main__":
    main()
