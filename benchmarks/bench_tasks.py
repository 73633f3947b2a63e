"""Multi-label and regression competitions through the real CLIs: CV and test score against a plain baseline.

Builds two competitions from ../shared/data/ (a CSV + images layout each, with a held-out test set:
test/, sample_submission.csv, solution.csv):
  planet   the 1,000-image Planet sample, `tags` = space-separated labels (multi-label, f2_samples);
           the last --planet-test rows are the test set
  utkface  N UTKFace faces (every k-th file), `age` from the file name (regression, --task regression);
           every 5th face is the test set
runs make_folds.py, train.py --fold all and predict.py on each (multi-label: with the per-label thresholds
fitted on OOF, and again with --thresholds off, i.e. every label cut at 0.5), and scores the baselines:
  multi-label: every image gets the label frequencies of the training rows (tags kept at >= 0.5), OOF
               (fitted on each fold's training part) and test (fitted on all training rows)
  regression:  the training mean (likewise)

    python benchmarks/bench_tasks.py --epochs 6 --img-size 64 --faces 1500
"""
from __future__ import annotations

import argparse
import re
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
WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenetv2_100_imagenet.pth"


def kit(script: str, *args: str) -> str:
    r = subprocess.run([sys.executable, str(REPO / "src" / script), *args], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{script} failed:\n{r.stderr[-3000:]}")
    return r.stdout


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src)


def _split(comp: Path, table: pd.DataFrame, test: np.ndarray, src: Path, ext: str, sample_value) -> None:
    for name, is_test in zip(table.iloc[:, 0], test):
        _link(src / f"{name}{ext}", comp / ("test" if is_test else "train") / f"{name}{ext}")
    table[~test].to_csv(comp / "train.csv", index=False)
    table[test].to_csv(comp / "solution.csv", index=False)
    table[test].assign(**{table.columns[1]: sample_value}).to_csv(comp / "sample_submission.csv", index=False)


def build_planet(root: Path, n: int, n_test: int) -> Path:
    comp = root / "planet"
    labels = pd.read_csv(DATA / "planet_sample" / "labels.csv", dtype=str).head(n)
    _split(comp, labels, np.arange(len(labels)) >= len(labels) - n_test, DATA / "planet_sample" / "train", ".jpg",
           "primary clear")
    return comp


def build_utkface(root: Path, n: int) -> Path:
    comp = root / "utkface"
    src = DATA / "utkface" / "crop_part1"
    names = sorted(p.name for p in src.iterdir())
    names = names[:: max(1, len(names) // n)][:n]
    table = pd.DataFrame({"id": names, "age": [int(s.split("_")[0]) for s in names]})
    _split(comp, table, np.arange(len(table)) % 5 == 4, src, "", 0)
    return comp


def train_args(args) -> list[str]:
    model = (["--model", "mobilenetv2_100", "--pretrained-file", str(WEIGHTS)] if args.model == "mobilenetv2_100"
             else ["--model", args.model, "--no-pretrained"])
    return [*model, "--img-size", str(args.img_size), "--epochs", str(args.epochs), "--crop-pct", "1.0",
            "--lr", str(args.lr), "--batch-size", "32", "--no-progress", "--experiment", "bench"]


def run(comp: Path, work: Path, args, task: str, metric: str = "") -> dict:
    paths = ["--folds-dir", str(work / "folds"), "--models-dir", str(work / "models"),
             "--submissions-dir", str(work / "subs"), "--reports-dir", str(work / "reports")]
    print(kit("make_folds.py", "--input-dir", str(comp), "--n-folds", str(args.folds), "--task", task, *paths).strip())
    t0 = time.time()
    kit("train.py", "--fold", "all", *train_args(args), *(["--metric", metric] if metric else []), *paths)
    print(f"train.py --fold all: {time.time() - t0:.0f}s")
    out = {"auto": kit("predict.py", *paths)}
    if task == "multilabel":      # the plain 0.5 cut as well
        out["off"] = kit("predict.py", *paths, "--thresholds", "off", "--no-report")
    for k, text in out.items():
        print(f"--- predict.py ({'thresholds ' + k if len(out) > 1 else ''}):\n" + "\n".join(
            line for line in text.splitlines() if re.match(r"(bench|  |test |submission:)", line)))
    return out


def figures(text: str, metric: str) -> tuple[float, float]:
    """(CV: nested CV of the plan, test score) as predict.py printed them."""
    nested = re.search(r"nested [-\d.]+ -> ([-\d.]+)", text)
    cv = float(nested.group(1)) if nested else float(re.search(rf"CV {metric} ([-\d.]+)", text).group(1))
    return cv, float(re.search(rf"test {metric}: ([-\d.]+)", text).group(1))


def baseline(comp: Path, work: Path, task: str, metrics: list[str]) -> dict:
    """The label frequencies (multi-label, tags at >= 0.5) or the training mean, OOF and test."""
    from foldkit.data.reading import read_text_csv
    from foldkit.tags import multi_hot
    from foldkit.folds.file import read_folds
    from foldkit.metrics import score
    folds, meta = read_folds(work / "folds")
    sol = read_text_csv(comp / "solution.csv")
    if task == "multilabel":
        classes = meta["classes"]
        y, yt = multi_hot(folds["label"].fillna(""), " ", classes), multi_hot(sol.iloc[:, 1], " ", classes)
        oof = np.stack([y[(folds["fold"] != k).to_numpy()].mean(0) for k in folds["fold"]])
        test = np.tile(y.mean(0), (len(yt), 1))
    else:
        y, yt = folds["label"].to_numpy(float), sol.iloc[:, 1].astype(float).to_numpy()
        oof = np.array([y[(folds["fold"] != k).to_numpy()].mean() for k in folds["fold"]])
        test = np.full(len(yt), y.mean())
    return {m: (score(m, y, oof), score(m, yt, test)) for m in metrics}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--model", default="mobilenetv2_100", help="mobilenetv2_100 (ImageNet weights of shared/) or "
                                                               "any timm name, from scratch (test_resnet)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--faces", type=int, default=1500)
    ap.add_argument("--planet", type=int, default=1000, help="first N rows of the Planet sample")
    ap.add_argument("--planet-test", type=int, default=200)
    ap.add_argument("--only", choices=["planet", "utkface"], default="")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.only in ("", "planet"):
            comp = build_planet(root, args.planet, args.planet_test)
            out = run(comp, root / "p", args, "multilabel", "f2_samples")
            base = baseline(comp, root / "p", "multilabel", ["f2_samples"])["f2_samples"]
            print("\nPlanet sample (multi-label), f2_samples | CV (nested for fitted thresholds) | test")
            print("kit + per-label thresholds | %.4f | %.4f" % figures(out["auto"], "f2_samples"))
            print("kit, every label at 0.5    | %.4f | %.4f" % figures(out["off"], "f2_samples"))
            print("training label frequencies | %.4f | %.4f" % base)
        if args.only in ("", "utkface"):
            comp = build_utkface(root, args.faces)
            out = run(comp, root / "u", args, "regression")
            base = baseline(comp, root / "u", "regression", ["rmse"])["rmse"]
            print("\nUTKFace ages (regression), rmse | CV | test")
            print("kit (clipped to the training range) | %.4f | %.4f" % figures(out["auto"], "rmse"))
            print("training mean                       | %.4f | %.4f" % base)


if __name__ == "__main__":
    main()
