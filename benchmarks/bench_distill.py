"""After the first submission, measured: soft labels, pseudo-labels and distillation on real Fashion-MNIST.

Builds a numpy-layout competition from ../shared/data/fashion_mnist/: --train rows of the official training
set (a seeded random slice) and --test rows of the official test set, whose labels (y_test.npy) only score
predict.py's submission. Then, through the real CLIs (make_folds.py, train.py, predict.py):

  base     test_resnet at 28 px, no augmentation (the scenario's budget recipe)
  soft     the same, --soft-labels base (self-distillation, Plant Pathology 2020's recipe)
  pseudo   the same, --pseudo base: the pool is the competition's test images, i.e. the held-out test set that
           is then scored (transductive, as on Kaggle: pseudo-labels never see a test label)
  conv     test_convnext at 32 px (a second teacher; at 28 px it downsamples below one pixel)
  student  test_resnet at 20 px distilled from base + conv (--teacher base,conv)
  alone    the same student trained alone
and prints CV, test score and predict.py's img/s of each (the teacher ensemble = predict.py --experiments
base,conv). --leak adds the memorising-teacher measurement: a pool of copies of every training image, fold 0
of a student pseudo-labelled fold-safe vs by the naive construction (the teacher's whole fold ensemble).

    python benchmarks/bench_distill.py --train 3000 --test 1000 --epochs 8 --leak
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks" / "scenarios"))
DATA = REPO.parent / "shared" / "data" / "fashion_mnist"
RAW = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
       "t10k-labels-idx1-ubyte.gz")
PLAIN = ["--no-pretrained", "--crop-pct", "1.0", "--aug", "none", "--no-hflip", "--lr", "3e-3", "--batch-size",
         "64", "--no-progress", "--fold", "all"]


def kit(script: str, *args: str) -> str:
    r = subprocess.run([sys.executable, str(REPO / "src" / script), *args], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{script} {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return r.stdout


def build(work: Path, n_train: int, n_test: int) -> Path:
    import common
    x_tr, y_tr, x_te, y_te = common.read_idx_splits(DATA, RAW)
    tr, te = common.subset(len(x_tr), n_train), common.subset(len(x_te), n_test)
    return common.write_numpy_layout(work / "input", x_tr[tr], y_tr[tr].astype("int64"), x_te[te],
                                     y_te[te].astype("int64"))


def experiment(paths: list, name: str, epochs: int, *extra: str) -> dict:
    t0 = time.time()
    out = kit("train.py", *paths, *PLAIN, "--epochs", str(epochs), "--experiment", name, *extra)
    joined = [int(m) for m in re.findall(r"fold \d+: (\d+) of \d+ pool images joined", out)]
    return {"train_s": time.time() - t0, "joined": joined, "img_s_train": None}


def predict(paths: list, names: str) -> dict:
    out = kit("predict.py", *paths, "--experiments", names, "--no-report", "--tta", "none")
    speed = re.search(r"predicted (\d+) test images with (\d+) models x \d+ views in [\d.]+s \((\d+) img/s\)", out)
    test = re.search(r"test accuracy: ([\d.]+)", out)
    return {"test": float(test.group(1)) if test else None, "img_s": int(speed.group(3)), "models": int(speed.group(2))}


def cv(models: Path, name: str) -> float:
    from foldkit.experiment import Experiment
    from foldkit.oof import cv_summary, load_oof
    e = Experiment(models / name)
    oof, classes = load_oof(e.dir, e.finished_folds())
    return cv_summary(oof, classes, "accuracy")["cv"]


def leak(work: Path, epochs: int) -> dict:
    """Fold 0 of a student whose pool holds a copy of every training image: fold-safe vs naive."""
    import numpy as np

    from foldkit import config
    from foldkit.train import teacher
    from foldkit.train.fit import train
    from foldkit.data.images import InputError  # noqa: F401 - the kit's PNG writer is OpenCV's
    import cv2
    copies = work / "copies"
    copies.mkdir(exist_ok=True)
    for i, img in enumerate(np.load(work / "input" / "x_train.npy")):
        cv2.imwrite(str(copies / f"copy_{i}.png"), img)
    base = {"input_dir": str(work / "input"), "folds_dir": str(work / "folds"), "models_dir": str(work / "models"),
            "model": "test_resnet", "pretrained": False, "img_size": 28, "crop_pct": 1.0, "aug": "none",
            "hflip": False, "lr": 3e-3, "batch_size": 64, "progress": False, "epochs": epochs, "fold": "0",
            "pseudo": "base", "unlabelled": str(copies)}
    out = {}
    safe = teacher.safe_teacher_folds
    for name, rule in (("leak_safe", safe), ("leak_naive", lambda fold: [0, 1, 2])):
        teacher.safe_teacher_folds = rule
        t0 = time.time()
        [s] = train(config.resolve({**base, "experiment": name}), log=lambda *_: None)
        out[name] = {"fold0": s["value"], "train_s": time.time() - t0}
    teacher.safe_teacher_folds = safe
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, default=3000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--leak", action="store_true")
    p.add_argument("--work", default="")
    args = p.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_distill_"))
    work.mkdir(parents=True, exist_ok=True)
    build(work, args.train, args.test)
    paths = ["--input-dir", str(work / "input"), "--folds-dir", str(work / "folds"), "--models-dir",
             str(work / "models")]
    kit("make_folds.py", *paths, "--n-folds", "3", "--submissions-dir", str(work / "subs"))
    paths += ["--submissions-dir", str(work / "subs")]
    train_paths = paths[:6]
    rows = {}
    plan = [("base", ["--model", "test_resnet", "--img-size", "28"]),
            ("soft", ["--model", "test_resnet", "--img-size", "28", "--soft-labels", "base"]),
            ("pseudo", ["--model", "test_resnet", "--img-size", "28", "--pseudo", "base"]),
            ("conv", ["--model", "test_convnext", "--img-size", "32"]),
            ("student", ["--model", "test_resnet", "--img-size", "20", "--teacher", "base,conv"]),
            ("alone", ["--model", "test_resnet", "--img-size", "20"])]
    for name, extra in plan:
        rows[name] = experiment(train_paths, name, args.epochs, *extra)
        rows[name].update(cv=cv(work / "models", name), **predict(paths, name))
        print(name, json.dumps(rows[name]), flush=True)
    rows["base+conv"] = {**predict(paths, "base,conv"), "cv": None}
    print("base+conv", json.dumps(rows["base+conv"]), flush=True)
    if args.leak:
        rows.update(leak(work, args.epochs))
        print("leak", json.dumps({k: rows[k] for k in ("leak_safe", "leak_naive")}), flush=True)
    (work / "bench_distill.json").write_text(json.dumps(rows, indent=2))
    print(f"results: {work / 'bench_distill.json'}")


if __name__ == "__main__":
    main()
