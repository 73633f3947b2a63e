"""Hill climbing (`--blend hill`) against `optimize` and `mean` in nested CV, on simulated OOF of three experiments.

Each draw: a 10-class problem whose labels are sampled from softmax(logits) (so the probabilities are
calibrated), and three experiments that see the logits with independent noise of different strength
and sharpness (none is a copy of another: blending pays). The blends are fitted and scored by the kit's
own foldkit.predict.blend.score_blends (in-sample: weights fitted on all rows; nested: fitted on the other
folds), then scored on a fresh test set drawn from the same process with the weights fitted on all rows.
Prints one row per metric: the mean over the draws and how often hill >= optimize. No model, no torch.

    python benchmarks/bench_hill.py --draws 10 --rows 1000
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.special import softmax

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from foldkit.metrics import METRICS, score  # noqa: E402
from foldkit.predict.blend import BLENDS, score_blends  # noqa: E402

MODES = ("mean", "hill", "optimize")


def draw(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(3, 2*rows, 10) probabilities and (2*rows,) labels: the first half is the OOF, the second the test."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(2 * rows, 10)) * 2.0
    y = np.minimum((softmax(logits, 1).cumsum(1) < rng.random(2 * rows)[:, None]).sum(1), 9)
    noise = rng.uniform(0.8, 2.0, 3)
    sharp = rng.uniform(0.5, 1.5, 3)
    return np.stack([softmax(logits * a + rng.normal(size=logits.shape) * s, 1) for a, s in zip(sharp, noise)]), y


def one(metric: str, rows: int, folds: int, seed: int) -> dict:
    probs, y = draw(rows, seed)
    oof, test = slice(0, rows), slice(rows, 2 * rows)
    out = {}
    for mode in MODES:
        r = score_blends(probs[:, oof], y[oof], np.arange(rows) % folds, metric, mode)
        p = BLENDS[mode].combine(probs[:, test], r["plan"].weights)
        out[mode] = (r["blend_in_sample"], r["blend_nested"], score(metric, y[test], p))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--metrics", default="accuracy,logloss")
    a = ap.parse_args(argv)
    print("| metric | blend | CV in-sample | CV nested | test | draws where hill's nested CV >= optimize's |")
    print("|---|---|---|---|---|---|")
    for metric in a.metrics.split(","):
        sign = 1 if METRICS[metric].greater_is_better else -1
        res = [one(metric, a.rows, a.folds, seed) for seed in range(a.draws)]
        wins = sum(sign * (r["hill"][1] - r["optimize"][1]) >= 0 for r in res)
        for mode in MODES:
            m = np.mean([r[mode] for r in res], 0)
            extra = f"{wins} of {a.draws}" if mode == "hill" else ""
            print(f"| {metric} | {mode} | {m[0]:.5f} | {m[1]:.5f} | {m[2]:.5f} | {extra} |", flush=True)


if __name__ == "__main__":
    main()
