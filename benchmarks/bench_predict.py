"""Fold-ensemble inference throughput: 5 models against 1, side by side in one run.

Each image is decoded once whatever the number of folds and TTA views, so a
5-fold ensemble should run at no less than 0.9 x (single-model img/s / 5).
Members are built from random-initialised checkpoints of --model (the speed
does not depend on the weights), saved and reloaded through the kit's own
checkpoint path. Images: a competition folder (default: the demo's test/).

    python benchmarks/bench_predict.py                                  # demo digits, test_resnet 32 px
    python benchmarks/bench_predict.py --input-dir ../shared/data/hymenoptera --split train \
        --model resnet18 --img-size 224                                 # photos
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from foldkit.runtime.device import amp_dtype, pick_device  # noqa: E402
from foldkit.data.reading import read_competition  # noqa: E402
from foldkit.predict.inference import Member, predict_ensemble  # noqa: E402
from foldkit.runtime.model import create_model, data_config, load_checkpoint, make_checkpoint, save_checkpoint  # noqa: E402
from foldkit.predict.predicting import make_sources  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input-dir", default=str(REPO / "input" / "demo"))
    ap.add_argument("--split", default="test", choices=["train", "test"])
    ap.add_argument("--model", default="test_resnet")
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--tta", default="none,hflip")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if not Path(args.input_dir).exists():
        sys.path.insert(0, str(REPO / "src"))
        from foldkit.data.demo import build_demo
        build_demo(args.input_dir)
    comp = read_competition(args.input_dir)
    table = comp.test if args.split == "test" else comp.train
    device = pick_device(args.device)
    dtype = amp_dtype(device, "auto")
    members = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.folds):
            torch.manual_seed(k)
            m = create_model(args.model, 10, in_chans=3)
            dcfg = data_config(args.model, args.img_size, 3)
            ck = make_checkpoint(m, model_name=args.model, classes=list(range(10)), data_cfg=dcfg, fold=k, epoch=1,
                                 metric_name="accuracy", metric_value=0.0, config={}, folds_sha256="")
            save_checkpoint(ck, Path(tmp) / f"fold{k}.pt")
            members.append(Member(Path(tmp) / f"fold{k}.pt", load_checkpoint(Path(tmp) / f"fold{k}.pt")))
    views = ["none"] + [v for v in args.tta.split(",") if v and v != "none"]
    kw = dict(tta=views, device=device, dtype=dtype, batch_size=args.batch_size, workers=args.workers,
              progress=False, channels_last=device.type == "cuda")
    rates = {1: [], args.folds: []}
    for _ in range(args.repeats):
        for n in rates:
            sources = make_sources(comp, table, args.split, members[:n])
            t0 = time.perf_counter()
            p = predict_ensemble(members[:n], sources, **kw)
            rates[n].append(len(p) / (time.perf_counter() - t0))
    one, ens = max(rates[1]), max(rates[args.folds])
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"{args.model} {args.img_size}px, {len(table)} images of {args.input_dir} ({args.split}), TTA {views}, {where}")
    print(f"single model      : {one:8.1f} img/s")
    print(f"{args.folds}-fold ensemble   : {ens:8.1f} img/s")
    print(f"ratio to single/{args.folds}: {ens / (one / args.folds):.2f}x  (target >= 0.9: each image decoded once)")


if __name__ == "__main__":
    main()
