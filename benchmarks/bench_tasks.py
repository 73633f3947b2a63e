"""Multi-label and regression competitions through the real CLIs: CV against a plain baseline.

Builds two competitions from ../shared/data/ (a CSV + images layout each):
  planet   the 1,000-image Planet sample, `tags` = space-separated labels (multi-label)
  utkface  N UTKFace faces (every k-th file), `age` from the file name (regression, --task regression)
runs make_folds.py and train.py --fold all on each, then scores the OOF files:
  multi-label: f2_samples / f1_samples / map of the model vs the baseline that predicts, for every image,
               the label frequencies of the fold's training part (tags kept at >= 0.5)
  regression:  rmse / mae / r2 of the model vs predicting the fold's training mean
Both baselines are fitted on the training part of each fold, like the model.

    python benchmarks/bench_tasks.py --epochs 4 --img-size 32 --faces 1000
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
DATA = REPO.parent / "shared" / "data"


def kit(script: str, *args: str) -> str:
    r = subprocess.run([sys.executable, str(REPO / "src" / script), *args], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{script} failed:\n{r.stderr[-3000:]}")
    return r.stdout


def build_planet(root: Path, n: int) -> Path:
    comp = root / "planet"
    comp.mkdir()
    (comp / "train").symlink_to(DATA / "planet_sample" / "train")
    pd.read_csv(DATA / "planet_sample" / "labels.csv", dtype=str).head(n).to_csv(comp / "train.csv", index=False)
    return comp


def build_utkface(root: Path, n: int) -> Path:
    comp = root / "utkface"
    (comp / "train").mkdir(parents=True)
    src = DATA / "utkface" / "crop_part1"
    names = sorted(p.name for p in src.iterdir())
    names = names[:: max(1, len(names) // n)][:n]
    for name in names:
        (comp / "train" / name).symlink_to(src / name)
    pd.DataFrame({"id": names, "age": [int(s.split("_")[0]) for s in names]}).to_csv(comp / "train.csv", index=False)
    return comp


def run(comp: Path, work: Path, args, *extra: str) -> pd.DataFrame:
    paths = ["--folds-dir", str(work / "folds"), "--models-dir", str(work / "models")]
    print(kit("make_folds.py", "--input-dir", str(comp), "--n-folds", str(args.folds), *extra, *paths).strip())
    t0 = time.time()
    kit("train.py", "--fold", "all", "--model", "test_resnet", "--img-size", str(args.img_size), "--epochs",
        str(args.epochs), "--crop-pct", "1.0", "--lr", "3e-3", "--batch-size", "32", "--no-progress",
        "--experiment", "bench", *paths)
    print(f"train.py --fold all: {time.time() - t0:.0f}s")
    exp = work / "models" / "bench"
    return pd.concat([pd.read_csv(p, keep_default_na=False, dtype={"label": str, "pred": str} if "planet" in comp.name
                                  else None) for p in sorted(exp.glob("oof_fold*.csv"))], ignore_index=True)


def multilabel_table(oof: pd.DataFrame, folds: pd.DataFrame) -> pd.DataFrame:
    from foldkit.data import multi_hot
    from foldkit.metrics import score
    classes = [c[5:] for c in oof.columns if c.startswith("prob_")]
    y = multi_hot(oof["label"], " ", classes)
    probs = oof[[f"prob_{c}" for c in classes]].to_numpy()
    yall = multi_hot(folds["label"].fillna(""), " ", classes)
    prior = np.zeros_like(probs)
    for k in oof["fold"].unique():     # the label frequencies of the fold's training part
        prior[(oof["fold"] == k).to_numpy()] = yall[(folds["fold"] != k).to_numpy()].mean(0)
    from foldkit.blend import held_out
    from foldkit.calibrate import POSTPROCESS
    step, folds_k = POSTPROCESS["label_thresholds"], oof["fold"].to_numpy()
    tuned = held_out(lambda rows: step.fit(probs[rows], y[rows], "f2_samples"),
                     lambda t, rows: step.apply(probs[rows], t), folds_k)     # nested: fitted on the other folds
    rows = []
    for name, p in (("kit (test_resnet, threshold 0.5)", probs),
                    ("kit + per-label thresholds for f2 (nested CV)", tuned),
                    ("training label frequencies", prior)):
        rows.append({"predictor": name, **{m: round(score(m, y, p), 4) for m in ("f2_samples", "f1_samples", "map")}})
    return pd.DataFrame(rows)


def regression_table(oof: pd.DataFrame, folds: pd.DataFrame) -> pd.DataFrame:
    from foldkit.metrics import score
    y = oof["label"].to_numpy(float)
    mean = np.array([folds.loc[folds["fold"] != k, "label"].mean() for k in oof["fold"]])
    rows = []
    for name, p in (("kit (test_resnet)", oof["pred"].to_numpy(float)), ("training mean", mean)):
        rows.append({"predictor": name, **{m: round(score(m, y, p), 4) for m in ("rmse", "mae", "r2")}})
    return pd.DataFrame(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--faces", type=int, default=1000)
    ap.add_argument("--planet", type=int, default=1000, help="first N rows of the Planet sample")
    ap.add_argument("--only", choices=["planet", "utkface"], default="")
    args = ap.parse_args()
    from foldkit.folds import read_folds
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.only in ("", "planet"):
            oof = run(build_planet(root, args.planet), root / "p", args)
            folds, _ = read_folds(root / "p" / "folds")
            print("\nPlanet sample (multi-label), OOF of all folds:\n" + multilabel_table(oof, folds).to_string(index=False))
        if args.only in ("", "utkface"):
            oof = run(build_utkface(root, args.faces), root / "u", args, "--task", "regression")
            folds, _ = read_folds(root / "u" / "folds")
            print("\nUTKFace ages (regression), OOF of all folds:\n" + regression_table(oof, folds).to_string(index=False))


if __name__ == "__main__":
    main()
