"""Hymenoptera (ants vs bees, the classic transfer-learning tutorial), run through the kit for real:
a network trained from scratch against the same network started from ImageNet weights.

Builds the folder-per-class competition from ../shared/data/hymenoptera/: train/<class>/ from the
dataset's train/ (245 photos), test/<class>/ from its val/ (153 photos; a labelled test folder,
which the kit scores). The files are copied as they are, quirks included (a palette GIF
placeholder, a .jpeg extension, a space in a name). Then make_folds.py once, and for each
variant train.py -> predict.py, one result line each:

* scratch: mobilenetv2_100, random initialisation (--no-pretrained), the whole network trained;
* imagenet: the same network from ../shared/weights/mobilenetv2_100_imagenet.pth
  (--pretrained-file; skipped with a note when the file is absent), as a fixed feature extractor
  (--freeze-epochs = --epochs: only the new head trains, BatchNorm kept in eval mode). Those
  weights have BatchNorm folded into the convolutions (identity BatchNorm layers, see
  ../shared/weights/README.md): batch statistics in training mode would change the function the
  weights compute, which the frozen backbone avoids.

    python benchmarks/scenarios/hymenoptera.py                 # budget: <= 15 min on 2 CPU cores
    python benchmarks/scenarios/hymenoptera.py --mode full     # all 5 folds, more epochs (GPU)
    python benchmarks/scenarios/hymenoptera.py --record        # append the results to benchmarks/RESULTS.md
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

DATASET = "hymenoptera"
RAW_SUBDIR = "hymenoptera"   # under ../shared/data/
RAW = ("train", "val")
WEIGHTS_FILE = common.WEIGHTS / "mobilenetv2_100_imagenet.pth"
MODEL, IMG = "mobilenetv2_100", 224
REFERENCE = "-"
COMMON_ARGS = ["--model", MODEL, "--img-size", str(IMG), "--aug", "light", "--batch-size", "16"]
# scratch: the kit's default learning rate. imagenet (head only): chosen on CV, fold 0, 12 epochs:
# --lr 1e-3 65.3%, 1e-2 87.8%, 3e-2 89.8%. timm initialises this model's new 2-class head with
# U(-0.71, 0.71) (its init range is 1/sqrt(num_classes)), so the logits start ~10 wide and a small
# learning rate spends the whole budget shrinking them.
VARIANT_ARGS = {"scratch": ["--no-pretrained", "--lr", "1e-3"], "imagenet": ["--lr", "3e-2"]}
MODES = {
    "budget": dict(n_folds=5, folds="0,1", epochs=12),
    "full": dict(n_folds=5, folds="all", epochs=30),
}


def build(raw_dir: str | Path, out_dir: str | Path, limit: int = 0) -> Path:
    """Copy train/<class>/ to out_dir/train/<class>/ and val/<class>/ to out_dir/test/<class>/.
    limit: at most this many files per class and split (a seeded random choice)."""
    raw, out = Path(raw_dir), Path(out_dir)
    for src_split, dst_split in (("train", "train"), ("val", "test")):
        for cls_dir in sorted(p for p in (raw / src_split).iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = sorted(p for p in cls_dir.iterdir() if p.is_file() and not p.name.startswith("."))
            dst = out / dst_split / cls_dir.name
            dst.mkdir(parents=True, exist_ok=True)
            for i in common.subset(len(files), limit):
                shutil.copyfile(files[i], dst / files[i].name)
    return out


def main(argv=None) -> list:
    p = common.scenario_parser(__doc__, DATASET, RAW_SUBDIR)
    p.add_argument("--weights", metavar="FILE", default=str(WEIGHTS_FILE),
                   help="ImageNet weights of mobilenetv2_100 (default: "
                        "../shared/weights/mobilenetv2_100_imagenet.pth beside the repository)")
    args = p.parse_args(argv)
    raw = common.check_raw(args.data_dir, *RAW)
    m = MODES[args.mode]
    t0 = time.perf_counter()
    ws = common.Workspace(args.work, args.keep, DATASET)
    results, notes = [], []
    try:
        print(f"building the folder-per-class layout in {ws.input}", flush=True)
        build(raw, ws.input)
        common.kit("make_folds.py", *ws.paths(), "--n-folds", str(m["n_folds"]))
        shared = time.perf_counter() - t0
        variants = [("scratch", [])]
        if Path(args.weights).is_file():
            weights = os.path.relpath(Path(args.weights).resolve(), common.REPO)   # the kit runs in the repo root
            variants.append(("imagenet", ["--pretrained-file", weights,
                                          "--freeze-epochs", str(m["epochs"])]))
        else:
            notes.append(f"no pretrained line: {args.weights} is absent")
            print(f"note: {args.weights} is absent: the pretrained variant is skipped", flush=True)
        for name, extra in variants:
            t1 = time.perf_counter()
            r = common.run_pipeline(
                ws, dataset=DATASET, experiment=f"{DATASET}-{MODEL}-{name}-{args.mode}",
                model_label=f"{MODEL}@{IMG}px+{name}" + ("-frozen" if name == "imagenet" else ""),
                n_folds=m["n_folds"], limit=0, train_folds=m["folds"], epochs=m["epochs"],
                train_args=COMMON_ARGS + VARIANT_ARGS[name] + extra, reference=REFERENCE, make_folds=False,
                device=args.device)
            r.wall_s = shared + (time.perf_counter() - t1)
            results.append(r)
    finally:
        ws.close()
    notes.insert(0, f"each line's wall time = its own train + predict + the shared data build and "
                    f"make_folds ({common.fmt_seconds(shared)})")
    common.finish(results, args, t0, notes="; ".join(notes))
    return results


if __name__ == "__main__":
    main()
