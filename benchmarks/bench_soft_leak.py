"""Soft labels and the fold-safe rule: does --soft-labels inflate the CV through a teacher that saw fold k?

The demo digits (scikit-learn's, 1,797 real 8x8 digits), optionally with their training labels replaced by
random ones (--random-labels: no image says anything about its label, so an honest CV is chance, 1/10, and
every point above it is a leak). A memorising teacher (test_resnet, no augmentation, no label smoothing,
many epochs) is trained on every fold; then students on every fold:

    hard      no teacher
    oof       --soft-labels-source oof: each training row's target mixes in its OOF probability; the models
              that made those OOF rows trained on fold k's validation rows (the construction before strict)
    fold      --soft-labels-source fold (the default): fold k's training rows are labelled by the teacher's
              fold-k model, which never saw fold k's validation rows

The CV (accuracy over all validation rows) of each, with its binomial standard error.

    python benchmarks/bench_soft_leak.py --random-labels --limit 600
    python benchmarks/bench_soft_leak.py --limit 600
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

FAST = dict(model="test_resnet", img_size=16, crop_pct=1.0, hflip=False, aug="none", pretrained=False, lr=1e-2,
            batch_size=32,
            progress=False, workers=0, label_smoothing=0.0, warmup_epochs=0.0, min_lr=1e-3, fold="all")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--random-labels", action="store_true")
    p.add_argument("--limit", type=int, default=600)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--teacher-epochs", type=int, default=20)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--alpha", type=float, default=0.7)
    p.add_argument("--variants", default="hard,oof,fold")
    args = p.parse_args(argv)
    from foldkit import config
    from foldkit.data.demo import build_demo
    from foldkit.folds.file import make_folds
    from foldkit.oof import load_oof
    from foldkit.train.fit import train
    t0 = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="foldkit-soft-leak-"))
    try:
        build_demo(root / "in")
        if args.random_labels:
            t = pd.read_csv(root / "in" / "train.csv", dtype={"id": str})
            t["label"] = np.random.default_rng(0).integers(0, 10, len(t))
            t.to_csv(root / "in" / "train.csv", index=False)
        paths = {"input_dir": str(root / "in"), "folds_dir": str(root / "folds"), "models_dir": str(root / "m")}
        make_folds(config.resolve({**paths, "limit": args.limit, "n_folds": args.folds}), log=lambda *_: None)
        quiet = lambda *_: None  # noqa: E731
        train(config.resolve({**paths, **FAST, "epochs": args.teacher_epochs, "experiment": "memo"}), log=quiet)
        rows = []
        for v in ["teacher"] + args.variants.split(","):
            name, lines = ("memo" if v == "teacher" else v), []
            if v != "teacher":
                kw = {} if v == "hard" else {"soft_labels": "memo", "soft_alpha": args.alpha,
                                             "soft_labels_source": v}
                train(config.resolve({**paths, **FAST, "epochs": args.epochs, "experiment": v, **kw}),
                      log=lines.append)
            oof, classes = load_oof(root / "m" / name)
            acc = float((oof["pred"].astype(str) == oof["label"].astype(str)).mean())
            agree = [float(m.group(1)) / 100 for ln in lines
                     if (m := re.search(r"agrees with the label on ([0-9.]+)%", str(ln)))]
            rows.append((v, acc, np.sqrt(acc * (1 - acc) / len(oof)), len(oof),
                         np.mean(agree) if agree else float("nan")))
        what = "random labels (chance 0.100)" if args.random_labels else "true labels"
        print(f"\ndigits, {what}, {args.limit} rows, {args.folds} folds; teacher {args.teacher_epochs} epochs, "
              f"students {args.epochs} epochs, soft alpha {args.alpha}; wall {time.perf_counter() - t0:.0f}s")
        print("| student | CV accuracy | ± s.e. | rows | soft targets' top class = label |\n|---|---|---|---|---|")
        for v, acc, se, n, agree in rows:
            print(f"| {v} | {acc:.4f} | {se:.4f} | {n} | {agree:.3f} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
