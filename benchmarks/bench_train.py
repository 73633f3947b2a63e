"""Training throughput: the kit's training loop against a bare PyTorch loop, side by side.

Both train the same timm model on the same in-memory tensors with AdamW
(timm create_optimizer_v2 for the kit, torch.optim.AdamW for the bare loop).
The kit's loop is foldkit.train.engine.train_one_epoch with everything it does per
step (LR schedule update, loss checks, accuracy, tqdm). A third line runs the
kit's whole input path: decoded-once uint8 images -> ImageDataset ->
augmentation -> DataLoader, twice: per image in the loader (--aug-device cpu) and batched on the
training device (--aug-device device: the loader gathers uint8, foldkit.data.batchaug augments the batch).

    python benchmarks/bench_train.py                                   # CPU: test_resnet at 32 px
    python benchmarks/bench_train.py --model resnet50 --img-size 224 --batch-size 128 \
        --device cuda --amp bf16 --channels-last                       # GPU figures
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from foldkit.runtime.device import amp_dtype, autocast, pick_device  # noqa: E402
from foldkit.train import engine  # noqa: E402
from foldkit.runtime.model import create_model  # noqa: E402


def bare_loop(model, xs, ys, batch, device, dtype, channels_last, steps):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    model.train()
    n = 0
    t0 = time.perf_counter()
    for i in range(steps):
        x = xs[i % len(xs)].to(device, non_blocking=True)
        y = ys[i % len(ys)].to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, dtype):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def kit_loop(model, xs, ys, device, dtype, channels_last, steps):
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    opt = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05)
    sched, _ = create_scheduler_v2(opt, sched="cosine", num_epochs=1, warmup_epochs=0, step_on_epochs=False,
                                   updates_per_epoch=steps)
    batches = [(xs[i % len(xs)], ys[i % len(ys)]) for i in range(steps)]
    r = engine.train_one_epoch(model, batches, opt, torch.nn.CrossEntropyLoss(label_smoothing=0.1), device,
                               scheduler=sched, dtype=dtype, channels_last=channels_last, progress=False)
    return r["img_per_s"]


def kit_input_path(args, device, dtype, channels_last, aug_device="cpu"):
    """Decoded-once images through the kit's Dataset, augmentation and DataLoader (light preset)."""
    from foldkit.data.augment import train_transform
    from foldkit.data.batchaug import BatchAugment, gather_transform
    from foldkit.data.dataset import EpochSampler, ImageDataset, SeededDataset, auto_workers
    n = args.batch_size * args.steps
    rng = np.random.default_rng(0)

    class Src:
        array = rng.integers(0, 255, (min(n, 4096), args.img_size, args.img_size, 3), dtype=np.uint8)
        cached = None

        def __len__(self):
            return n

        def __getitem__(self, i):
            return self.array[i % len(self.array)]

    model = create_model(args.model, 10).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    dcfg = {"input_size": [3, args.img_size, args.img_size], "mean": [0.5] * 3, "std": [0.5] * 3,
            "interpolation": "bilinear", "crop_pct": 1.0}
    batched = aug_device == "device"
    tf = gather_transform(dcfg, "light") if batched else train_transform(dcfg, "light")
    ds = SeededDataset(ImageDataset(Src(), rng.integers(0, 10, n), tf), 0)
    workers = args.workers if args.workers >= 0 else auto_workers(-1, True)
    dl = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, sampler=EpochSampler(n, 0),
                                     num_workers=workers, pin_memory=device.type == "cuda",
                                     persistent_workers=workers > 0)
    from timm.optim import create_optimizer_v2
    opt = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05)
    r = engine.train_one_epoch(model, dl, opt, torch.nn.CrossEntropyLoss(), device, dtype=dtype,
                               channels_last=channels_last, progress=False,
                               batch_aug=BatchAugment(dcfg, "light") if batched else None)
    return r["img_per_s"], workers


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="test_resnet")
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--workers", type=int, default=-1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device = pick_device(args.device)
    dtype = amp_dtype(device, args.amp)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=g) for _ in range(8)]
    ys = [torch.randint(0, 10, (args.batch_size,), generator=g) for _ in range(8)]
    if device.type == "cuda":
        xs, ys = [x.to(device) for x in xs], [y.to(device) for y in ys]
    res = {"bare": [], "kit": []}
    for r in range(args.repeats):   # interleaved, so drift affects both alike
        for name in ("bare", "kit"):
            torch.manual_seed(0)
            model = create_model(args.model, 10).to(device)
            if args.channels_last:
                model = model.to(memory_format=torch.channels_last)
            # one warm-up step each (allocator, cudnn autotune)
            bare_loop(model, xs, ys, args.batch_size, device, dtype, args.channels_last, 2)
            f = (bare_loop(model, xs, ys, args.batch_size, device, dtype, args.channels_last, args.steps)
                 if name == "bare" else kit_loop(model, xs, ys, device, dtype, args.channels_last, args.steps))
            res[name].append(f)
    bare, kit = np.median(res["bare"]), np.median(res["kit"])
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"{args.model} {args.img_size}px batch {args.batch_size}, {where}, amp {dtype}, torch {torch.__version__}")
    print(f"bare PyTorch loop      : {bare:8.0f} img/s (median of {args.repeats})")
    print(f"kit train_one_epoch    : {kit:8.0f} img/s  ({kit / bare:.2f}x bare)")
    full, workers = kit_input_path(args, device, dtype, args.channels_last)
    print(f"kit with input pipeline: {full:8.0f} img/s  ({full / bare:.2f}x bare; uint8 images -> augment -> "
          f"DataLoader, {workers} workers)")
    full, workers = kit_input_path(args, device, dtype, args.channels_last, "device")
    print(f"  batched augmentation : {full:8.0f} img/s  ({full / bare:.2f}x bare; uint8 images -> DataLoader -> "
          f"kornia on {device.type}, {workers} workers)")


if __name__ == "__main__":
    main()
