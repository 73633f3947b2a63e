"""Seconds and page size of write_report: a 120-class experiment (2 folds, 720 OOF rows, real 8x8 digit
images in the galleries) and, with an experiment folder given, that experiment.

    python benchmarks/bench_report.py [models/<exp>] [--repeat 3]
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def timed(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("experiment", nargs="?")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    from sklearn.datasets import load_digits

    from foldkit.report.html import write_report
    from test_report import make_many_class_experiment
    digits = load_digits().images.astype(np.uint8) * 16
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        exp, _ = make_many_class_experiment(tmp)
        s = timed(lambda: write_report(exp, tmp / "rep", load_image=lambda i: digits[hash(i) % len(digits)]), a.repeat)
        print(f"120 classes, 720 OOF rows: {s:.1f} s (best of {a.repeat}), report.html "
              f"{(tmp / 'rep' / 'report.html').stat().st_size // 1024} KiB")
        if a.experiment:
            s = timed(lambda: write_report(a.experiment, tmp / "rep2"), a.repeat)
            print(f"{a.experiment}: {s:.1f} s (best of {a.repeat}), report.html "
                  f"{(tmp / 'rep2' / 'report.html').stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
