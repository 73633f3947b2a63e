"""The demo's training against a bare PyTorch loop, side by side in one run (issue 17's CPU ratio).

Both train fold 0 of the demo digits (1,437 training rows, 5 folds: 1,149 train / 288 valid) with the
demo's recipe: test_resnet on the 32 px grey digits, AdamW lr 3e-3, weight decay 0.05, batch 64,
cosine schedule with 1 warmup epoch, label smoothing 0.1, and the `medium` augmentation (rotation 30
deg, shift 0.2, zoom 0.8-1.2) without flips, validating every epoch.

* kit:  `python src/train.py` (the real CLI: store, DataLoader, augmentation, checkpoints, OOF, logs),
        once per `--aug-device` given (extra flags with --kit-flags)
* bare: what a competitor would hand-write: every image in one uint8 tensor, each batch augmented at
        once with per-sample random affine matrices (torch affine_grid + grid_sample), the same model,
        optimizer, schedule and loss, accuracy on the validation rows each epoch.

    python benchmarks/bench_demo.py --epochs 10 [--threads 2] [--kit-flags "--aug-device cpu" "--aug-device device"]
    python benchmarks/bench_demo.py --epochs 30 --folds 5      # the demo's own run: 5 folds x 30 epochs

Prints wall seconds (the kit's whole process, and its own training seconds summed over fold{k}.json)
and the mean best validation accuracy of each, and the ratio kit / bare. With --folds N both sides train
folds 0..N-1 (the kit in one process, as the demo does: its one-time imports and plotting are paid once).
"""
import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

RECIPE = ["--model", "test_resnet", "--no-pretrained", "--img-size", "32", "--crop-pct", "1.0", "--aug", "medium",
          "--no-hflip", "--lr", "3e-3", "--batch-size", "64", "--no-progress"]


def bare(root: Path, epochs: int, seed: int = 0, fold: int = 0) -> tuple[float, float]:
    """(wall seconds, best validation accuracy) of the hand-written loop on `fold`."""
    import cv2
    import pandas as pd
    import torch
    import torch.nn.functional as F
    from timm.scheduler import create_scheduler_v2

    from foldkit.runtime.model import create_model
    torch.manual_seed(seed)
    folds = pd.read_csv(root / "folds" / "train_folds.csv", dtype={"id": str})
    imgs = np.stack([cv2.imread(str(root / "input" / p), cv2.IMREAD_GRAYSCALE) for p in folds["path"]])
    x_all = torch.from_numpy(imgs)[:, None]                       # N,1,32,32 uint8
    y_all = torch.as_tensor(folds["label"].to_numpy().copy(), dtype=torch.long)
    # timed from here, like the kit's fold seconds (its images come from the store opened before the fold)
    t0 = time.perf_counter()
    tr = torch.as_tensor(np.flatnonzero(folds["fold"].to_numpy() != fold))
    va = torch.as_tensor(np.flatnonzero(folds["fold"].to_numpy() == fold))
    model = create_model("test_resnet", 10, in_chans=1)
    mean, std = 0.5, 0.5   # test_resnet's data config (single channel: the mean of its three)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    steps = len(tr) // 64
    sched, _ = create_scheduler_v2(opt, sched="cosine", num_epochs=epochs, warmup_epochs=1, min_lr=1e-6,
                                   step_on_epochs=False, updates_per_epoch=steps)

    def augment(x):   # per-sample rotation +-30 deg, shift +-0.2, zoom 0.8-1.2 in one grid_sample
        n = len(x)
        a = (torch.rand(n) * 2 - 1) * math.radians(30)
        s = 1 / (0.8 + torch.rand(n) * 0.4)
        t = (torch.rand(n, 2) * 2 - 1) * 0.4        # 0.2 of the side = 0.4 in [-1, 1] coordinates
        theta = torch.stack([torch.stack([s * torch.cos(a), -s * torch.sin(a), t[:, 0]], 1),
                             torch.stack([s * torch.sin(a), s * torch.cos(a), t[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)

    best, step = 0.0, 0
    for _ in range(epochs):
        model.train()
        order = tr[torch.randperm(len(tr))]
        for b in range(steps):
            idx = order[b * 64:(b + 1) * 64]
            x = (augment(x_all[idx].float() / 255) - mean) / std
            loss = F.cross_entropy(model(x), y_all[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            sched.step_update(step)
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model((x_all[va[i:i + 128]].float() / 255 - mean) / std).argmax(1)
                              for i in range(0, len(va), 128)])
        best = max(best, float((pred == y_all[va]).float().mean()))
    return time.perf_counter() - t0, best


def kit(root: Path, epochs: int, name: str, extra: list[str], folds: int = 1) -> tuple[float, float, float]:
    """(wall seconds of train.py, its own fold seconds summed, mean best validation accuracy) on folds
    0..folds-1, one process."""
    cmd = [sys.executable, str(REPO / "src" / "train.py"), "--input-dir", str(root / "input"), "--folds-dir",
           str(root / "folds"), "--models-dir", str(root / "models"), "--cache-dir", str(root / "cache"),
           *RECIPE, "--epochs", str(epochs), "--fold", ",".join(map(str, range(folds))), "--experiment", name,
           *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stderr[-3000:])
    wall = time.perf_counter() - t0
    infos = [json.loads((root / "models" / name / f"fold{k}.json").read_text()) for k in range(folds)]
    aug_line = next((ln for ln in r.stdout.splitlines() if ln.startswith("augmentation")), "")
    if aug_line:
        print(f"  {aug_line}")
    return wall, sum(i["seconds"] for i in infos), float(np.mean([i["value"] for i in infos]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="OMP threads of both sides (0 = torch's default)")
    ap.add_argument("--kit-flags", nargs="*", default=[""], help="one kit run per string of extra flags")
    ap.add_argument("--folds", type=int, default=1, help="train folds 0..N-1 (the demo: 5)")
    args = ap.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from foldkit import config
    from foldkit.data.demo import build_demo
    from foldkit.folds.file import make_folds
    root = Path(tempfile.mkdtemp(prefix="foldkit-demo-bench-"))
    build_demo(root / "input")
    make_folds(config.resolve({"input_dir": str(root / "input"), "folds_dir": str(root / "folds")}),
               log=lambda *_: None)
    print(f"demo folds 0-{args.folds - 1}, {args.epochs} epochs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    # the kit's store is built by a first short run, so each timed run reads prepared images like a second fold
    kit(root, 1, "warm", [])
    runs = [bare(root, args.epochs, fold=k) for k in range(args.folds)]
    b_wall, b_acc = sum(r[0] for r in runs), float(np.mean([r[1] for r in runs]))
    print(f"bare loop            : {b_wall:6.1f} s, best accuracy {b_acc:.4f}")
    for i, flags in enumerate(args.kit_flags):
        wall, own, acc = kit(root, args.epochs, f"k{i}", shlex.split(flags), args.folds)
        print(f"kit {flags or '(defaults)':17s}: {wall:6.1f} s wall ({own:.1f} s in its fold), best accuracy "
              f"{acc:.4f}; {wall / b_wall:.2f}x bare wall, {own / b_wall:.2f}x bare in the fold")


if __name__ == "__main__":
    main()
