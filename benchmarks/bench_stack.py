"""Stacking on the houses competition (../shared/data/houses: 535 houses, frontal photo + bedrooms, bathrooms,
area, zip code; price as regression): CV of (a) the image model alone, (b) trees on the table alone,
(c) trees on the table + the image model's OOF prediction, all on the same 5 folds.

The competition is built in a work folder (train.csv + train/<house>.jpg links), make_folds splits it, train.py
trains a small image model on every fold, stack.py stacks. Besides the kit's metric (rmse, what the image
model is trained and scored with) the RMSLE of every OOF file is printed, computed here (Kaggle's house-price
metric; the kit has no rmsle yet).

    python benchmarks/bench_stack.py --work DIR --epochs 4 --img-size 64
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
HOUSES = REPO.parent / "shared" / "data" / "houses"
WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenetv2_100_imagenet.pth"


def kit(script: str, *args: str) -> str:
    r = subprocess.run([sys.executable, str(REPO / "src" / script), *args], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    return r.stdout


def build(work: Path) -> Path:
    comp = work / "in"
    if not (comp / "train.csv").is_file():
        (comp / "train").mkdir(parents=True, exist_ok=True)
        table = pd.read_csv(HOUSES / "houses.csv")
        for h in table["house"]:
            link = comp / "train" / f"{h}.jpg"
            if not link.exists():
                os.symlink(HOUSES / "frontal" / f"{h}.jpg", link)
        table.rename(columns={"house": "id"}).to_csv(comp / "train.csv", index=False)
    return comp


def rmsle_of(oof_dir: Path) -> float:
    oof = pd.concat([pd.read_csv(p) for p in sorted(oof_dir.glob("oof_fold*.csv"))])
    return float(np.sqrt(np.mean((np.log1p(oof["pred"].clip(lower=0)) - np.log1p(oof["label"])) ** 2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    a = ap.parse_args()
    work = Path(a.work)
    comp = build(work)
    paths = ["--input-dir", str(comp), "--folds-dir", str(work / "folds"), "--models-dir", str(work / "models"),
             "--submissions-dir", str(work / "subs")]
    kit("make_folds.py", *paths, "--label-col", "price", "--n-folds", str(a.folds))
    t0 = time.time()
    kit("train.py", *paths, "--model", "mobilenetv2_100", "--pretrained-file", str(WEIGHTS), "--img-size",
        str(a.img_size), "--epochs", str(a.epochs), "--batch-size", "32", "--fold", "all", "--experiment", "img",
        "--no-progress")
    t_train = time.time() - t0
    out = kit("stack.py", *paths, "--experiments", "img", "--experiment", "stack", "--seeds", str(a.seeds))
    print(out)
    print(f"image model: mobilenetv2_100 (ImageNet weights), {a.img_size} px, {a.epochs} epochs, {a.folds} folds: "
          f"{t_train:.0f} s")
    print(f"RMSLE of the OOF files: image model {rmsle_of(work / 'models' / 'img'):.4f}, "
          f"stacked {rmsle_of(work / 'models' / 'stack'):.4f}")


if __name__ == "__main__":
    main()
