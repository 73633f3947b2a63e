"""The kit's fine-tuning against timm's own train.py on the same fold, side by side in one run (issue 17).

Hymenoptera (ants vs bees, ../shared/data/hymenoptera, train/ + val/ merged: 397 photos) as a CSV
competition, 3 stratified folds by make_folds.py; fold 0 is also written as an ImageFolder (train/<class>/,
val/<class>/, symlinks) for timm, which expects one. Both fine-tune the ImageNet mobilenetv2_100 of
../shared/weights at 160 px with one recipe: AdamW lr 1e-3, weight decay 0.05, cosine with 1 warmup
epoch, label smoothing 0.1, batch 32, random-resized crops of scale 0.35-1 + horizontal flips (the kit's
`light`; timm: --scale 0.35 1 --color-jitter 0), validation every epoch.

* kit:  python src/train.py ... --fold 0 (the kit's defaults beyond that: pretrained BatchNorm handling,
        backbone LR, its DataLoader workers and store)
* timm: python <timm-dir>/train.py --data-dir <fold 0 ImageFolder> ... (timm's scripts are not in the pip
        package: --timm-dir is a clone of github.com/huggingface/pytorch-image-models)

    python benchmarks/bench_timm.py --timm-dir pytorch-image-models [--epochs 3] [--timm-workers 1]

Prints the wall seconds of each whole run, its training images/s, and its best validation accuracy.
"""
import argparse
import csv
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
WEIGHTS = SHARED / "weights" / "mobilenetv2_100_imagenet.pth"


def competition(root: Path) -> Path:
    rows = []
    for split in ("train", "val"):
        for cls_dir in sorted((SHARED / "data" / "hymenoptera" / split).iterdir()):
            for f in sorted(cls_dir.glob("*.jpg")):
                (root / "train").mkdir(parents=True, exist_ok=True)
                iid = f"{split}_{f.stem}"
                shutil.copyfile(f, root / "train" / f"{iid}.jpg")
                rows.append({"id": iid, "label": cls_dir.name})
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    return root


def image_folder(folds_csv: Path, comp: Path, out: Path) -> Path:
    t = pd.read_csv(folds_csv, dtype={"id": str})
    for _, r in t.iterrows():
        d = out / ("val" if r["fold"] == 0 else "train") / str(r["label"])
        d.mkdir(parents=True, exist_ok=True)
        (d / Path(r["path"]).name).symlink_to(comp / r["path"])
    return out


def run(cmd) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0, r.stdout + r.stderr


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timm-dir", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--img-size", type=int, default=160)
    ap.add_argument("--timm-workers", type=int, default=1, help="timm's DataLoader workers (-j)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="foldkit-timm-"))
    comp = competition(work / "input")
    paths = ["--input-dir", str(comp), "--folds-dir", str(work / "folds")]
    run([sys.executable, str(REPO / "src" / "make_folds.py"), *paths, "--n-folds", "3"])
    folder = image_folder(work / "folds" / "train_folds.csv", comp, work / "fold0")
    common = dict(lr="1e-3", wd="0.05", b="32", e=str(args.epochs), size=str(args.img_size))
    kit_wall, kit_out = run([sys.executable, str(REPO / "src" / "train.py"), *paths, "--models-dir",
                             str(work / "models"), "--cache-dir", str(work / "cache"), "--model", "mobilenetv2_100",
                             "--pretrained-file", str(WEIGHTS), "--img-size", common["size"], "--aug", "light",
                             "--lr", common["lr"], "--weight-decay", common["wd"], "--batch-size", common["b"],
                             "--epochs", common["e"], "--warmup-epochs", "1", "--fold", "0", "--experiment", "kit",
                             "--no-progress"])
    log = pd.read_csv(work / "models" / "kit" / "log_fold0.csv")
    kit_acc = json.loads((work / "models" / "kit" / "fold0.json").read_text())["value"]
    timm_wall, timm_out = run([sys.executable, str(Path(args.timm_dir) / "train.py"), "--data-dir", str(folder),
                               "--train-split", "train", "--val-split", "val", "--model", "mobilenetv2_100",
                               "--pretrained", "--pretrained-path", str(WEIGHTS), "--num-classes", "2",
                               "--img-size", common["size"], "-b", common["b"], "--epochs", common["e"],
                               "--opt", "adamw", "--lr", common["lr"], "--weight-decay", common["wd"],
                               "--sched", "cosine", "--warmup-epochs", "1", "--smoothing", "0.1",
                               "--scale", "0.35", "1", "--color-jitter", "0", "-j", str(args.timm_workers),
                               "--log-interval", "1", "--output", str(work / "timm"), "--device", "cpu"])
    rates = [float(x) for x in re.findall(r"Time: [\d.]+s,\s*([\d.]+)/s", timm_out)]
    [summary] = list((work / "timm").rglob("summary.csv"))
    timm_acc = max(float(r["eval_top1"]) for r in csv.DictReader(summary.open())) / 100
    print(f"hymenoptera fold 0 ({len(list((folder / 'train').rglob('*.jpg')))} train / "
          f"{len(list((folder / 'val').rglob('*.jpg')))} valid), mobilenetv2_100 ImageNet, {args.img_size} px, "
          f"{args.epochs} epochs, batch 32")
    kit_ips = log["img_per_s"].iloc[1:].mean() if len(log) > 1 else log["img_per_s"].iloc[0]
    n = len(rates) // args.epochs     # timm's per-step rates after its first epoch
    timm_ips = sum(rates[n:]) / max(len(rates[n:]), 1) if len(rates) > n else sum(rates) / max(len(rates), 1)
    print(f"kit : {kit_wall:6.1f} s wall, training {kit_ips:6.1f} img/s (epochs 2+), best accuracy {kit_acc:.4f}")
    print(f"timm: {timm_wall:6.1f} s wall, training {timm_ips:6.1f} img/s (steps after epoch 1, -j "
          f"{args.timm_workers}), best accuracy {timm_acc:.4f}")
    print(f"kit / timm: {timm_wall / kit_wall:.2f}x by wall time, {kit_ips / max(timm_ips, 1e-9):.2f}x by training img/s")
    print("\n".join(ln for ln in kit_out.splitlines() if ln.startswith(("augmentation", "BatchNorm", "note"))))


if __name__ == "__main__":
    main()
