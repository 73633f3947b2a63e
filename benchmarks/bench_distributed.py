"""More than one device, side by side in one run: data-parallel (torchrun + DDP) and fold-parallel
(--devices) against one process, wall time and CV, through the real CLIs on the demo competition.

    python benchmarks/bench_distributed.py cpu [--threads 1]   # every machine (gloo on CPU)
    python benchmarks/bench_distributed.py gpu --timm-dir pytorch-image-models \\
        --jpeg-dir ../shared/data/hymenoptera                  # a GPU machine (see below)

cpu: the demo digits (1,437 training rows, 2 folds), test_resnet at 32 px:
  fold 0 on 1 process (batch 32)  vs  torchrun --nproc_per_node 2 (--batch-size 32 is global: 16 per process)
  folds 0,1 in sequence            vs  --devices cpu,cpu (one worker process per fold)
gpu: resnet50 at 224 px, bf16, channels_last, torch.compile off and on:
  the kit's training loop (foldkit.train.engine.train_one_epoch) on synthetic tensors against timm's own
  benchmark.py (synthetic) and train.py (the same JPEG folder); the kit's input pipeline alone on
  real JPEGs (workers, pinned memory, reduced-size JPEG decoding) against the model's appetite, and a
  training epoch from real JPEGs against synthetic (target >= 0.9x); fold-parallel with 2 processes
  sharing GPU 0 against one process. timm's scripts are not part of the pip package: pass a clone of
  github.com/huggingface/pytorch-image-models as --timm-dir (skipped without it).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
TRAIN = str(REPO / "src" / "train.py")


def sh(cmd, env=None) -> tuple[float, str]:
    """Run a command; (wall seconds, stdout). Stops the benchmark on failure."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if r.returncode:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0, r.stdout


def cv(models: Path, exp: str, folds) -> float:
    """Mean best validation score of the folds (their fold{k}.json)."""
    return sum(json.loads((models / exp / f"fold{k}.json").read_text())["value"] for k in folds) / len(folds)


# --------------------------------------------------------------------------- CPU

def bench_cpu(args):
    from foldkit import config
    from foldkit.data.demo import build_demo
    from foldkit.folds.file import make_folds

    root = Path(tempfile.mkdtemp(prefix="foldkit-dist-"))
    build_demo(root / "input")
    make_folds(config.resolve({"input_dir": str(root / "input"), "folds_dir": str(root / "folds"),
                               "n_folds": 2, "limit": args.limit}), log=lambda *_: None)
    common = ["--input-dir", str(root / "input"), "--folds-dir", str(root / "folds"), "--models-dir",
              str(root / "models"), "--model", args.model, "--no-pretrained", "--img-size", str(args.img_size),
              "--crop-pct", "1.0", "--no-hflip", "--epochs", str(args.epochs), "--lr", str(args.lr), "--no-progress",
              "--workers", "0"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    b = args.batch_size
    runs = [  # name, command, folds
        ("fold 0, 1 process", [sys.executable, TRAIN, *common, "--fold", "0", "--batch-size", str(b)], [0]),
        ("fold 0, torchrun 2 processes (gloo)", [*torchrun, TRAIN, *common, "--fold", "0",
                                                 "--batch-size", str(b)], [0]),     # global batch
        ("folds 0,1 in sequence", [sys.executable, TRAIN, *common, "--fold", "all", "--batch-size", str(b)], [0, 1]),
        ("folds 0,1 --devices cpu,cpu", [sys.executable, TRAIN, *common, "--fold", "all", "--batch-size", str(b),
                                         "--devices", "cpu,cpu"], [0, 1]),
    ]
    print(f"demo digits, {args.limit or 'all'} rows, 2 folds, {args.model} {args.img_size}px, {args.epochs} epochs, "
          f"global batch {b}, {os.cpu_count()} cores, OMP_NUM_THREADS of single processes "
          f"{args.threads or 'unset'}; load average before: {os.getloadavg()}")
    rows = []
    # torchrun gives each of its processes OMP_NUM_THREADS=1; fold-parallel CPU workers get cores/workers
    env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    for i, (name, cmd, folds) in enumerate(runs):
        wall, _ = sh(cmd + ["--experiment", f"run{i}"], env=env)
        rows.append((name, wall, cv(root / "models", f"run{i}", folds)))
        print(f"{name:38s} wall {wall:6.1f}s  CV {rows[-1][2]:.4f}", flush=True)
    print(f"data-parallel: {rows[0][1] / rows[1][1]:.2f}x faster than 1 process, CV {rows[1][2] - rows[0][2]:+.4f}")
    print(f"fold-parallel: {rows[2][1] / rows[3][1]:.2f}x faster than sequential, CV {rows[3][2] - rows[2][2]:+.4f}")
    print(f"load average after: {os.getloadavg()}; outputs in {root}")


# --------------------------------------------------------------------------- GPU (commands ready)

def kit_train_rate(model_name, batch, size, compile, steps=50) -> float:
    """The kit's training loop on synthetic tensors already on the GPU: images/s."""
    import torch
    from timm.optim import create_optimizer_v2

    from foldkit.train import engine
    from foldkit.runtime.model import create_model
    dev = torch.device("cuda")
    model = create_model(model_name, 1000).to(dev).to(memory_format=torch.channels_last)
    run = torch.compile(model) if compile else model
    xs = [torch.randn(batch, 3, size, size, device=dev) for _ in range(4)]
    ys = [torch.randint(0, 1000, (batch,), device=dev) for _ in range(4)]
    opt = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05)
    loss = torch.nn.CrossEntropyLoss()
    kw = dict(dtype=torch.bfloat16, channels_last=True, progress=False)
    engine.train_one_epoch(run, [(xs[i % 4], ys[i % 4]) for i in range(10)], opt, loss, dev, **kw)  # warm-up
    batches = [(xs[i % 4], ys[i % 4]) for i in range(steps)]
    return engine.train_one_epoch(run, batches, opt, loss, dev, **kw)["img_per_s"]


def kit_jpeg_rates(jpeg_dir, model_name, batch, size, workers, passes=3) -> tuple[float, float]:
    """(input pipeline alone, training) images/s on the JPEG folder, through the kit's dataset."""
    import torch

    from foldkit import config
    from foldkit.train import engine
    from foldkit.data.augment import train_transform
    from foldkit.data.dataset import EpochSampler, ImageDataset, ImageSource, SeededDataset
    from foldkit.data.reading import open_competition
    from foldkit.runtime.model import data_config
    comp, _ = open_competition(config.resolve({"input_dir": str(jpeg_dir)}))
    dcfg = data_config(model_name, size)
    # decoded from disk every pass (no RAM cache), large JPEGs at reduced size as in training
    src = ImageSource(comp, comp.train, "train", cache="off", max_side=size)
    ds = SeededDataset(ImageDataset(src, [0] * len(comp.train), train_transform(dcfg, "light")), 0)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=EpochSampler(len(ds), 0), num_workers=workers,
                                     pin_memory=True, persistent_workers=True, prefetch_factor=4, drop_last=True)
    dev = torch.device("cuda")
    t0, seen = time.perf_counter(), 0
    for _ in range(passes):
        for x, _ in dl:
            seen += len(x.to(dev, non_blocking=True))
    torch.cuda.synchronize()
    loader = seen / (time.perf_counter() - t0)
    from timm.optim import create_optimizer_v2

    from foldkit.runtime.model import create_model
    model = create_model(model_name, 1000).to(dev).to(memory_format=torch.channels_last)
    opt = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05)
    rates = [engine.train_one_epoch(model, dl, opt, torch.nn.CrossEntropyLoss(), dev, dtype=torch.bfloat16,
                                    channels_last=True, progress=False)["img_per_s"] for _ in range(passes)]
    return loader, max(rates[1:] or rates)


def timm_rates(timm_dir, jpeg_dir, model_name, batch, size, compile) -> tuple[float, float]:
    """timm's benchmark.py (synthetic training) and train.py (the JPEG folder): images/s."""
    flags = ["--model", model_name, "--img-size", str(size), "-b", str(batch), "--amp", "--amp-dtype", "bfloat16",
             "--channels-last"] + (["--torchcompile"] if compile else [])
    _, out = sh([sys.executable, str(Path(timm_dir) / "benchmark.py"), "--bench", "train", *flags])
    synthetic = float(re.findall(r"([\d.]+) samples/sec", out)[-1])
    with tempfile.TemporaryDirectory() as tmp:
        _, out = sh([sys.executable, str(Path(timm_dir) / "train.py"), "--data-dir", str(jpeg_dir), "--train-split",
                     "train", "--val-split", "val", *flags, "--epochs", "2", "--workers", "8", "--pin-mem",
                     "--log-interval", "5", "--output", tmp])
    real = float(re.findall(r"\(\s*[\d.]+s,\s*([\d.]+)/s\)", out)[-1])   # the running average of its log lines
    return synthetic, real


def bench_gpu(args):
    import torch
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; {args.model} {args.img_size}px batch "
          f"{args.batch_size}, bf16, channels_last")
    for compile in (False, True):
        kit = kit_train_rate(args.model, args.batch_size, args.img_size, compile)
        line = f"compile {'on ' if compile else 'off'}: kit loop {kit:7.0f} img/s (synthetic)"
        if args.timm_dir:
            t_syn, t_real = timm_rates(args.timm_dir, args.jpeg_dir, args.model, args.batch_size, args.img_size,
                                       compile)
            line += f"; timm benchmark.py {t_syn:7.0f} ({kit / t_syn:.2f}x), timm train.py on JPEGs {t_real:7.0f}"
        print(line, flush=True)
    loader, real = kit_jpeg_rates(args.jpeg_dir, args.model, args.batch_size, args.img_size, args.workers)
    syn = kit_train_rate(args.model, args.batch_size, args.img_size, False)
    print(f"real JPEGs ({args.workers} workers): input pipeline alone {loader:7.0f} img/s, training {real:7.0f} "
          f"img/s = {real / syn:.2f}x synthetic (target >= 0.9); the model alone eats {syn:.0f} img/s")
    # fold-parallel: 2 processes sharing GPU 0 against folds in sequence
    models = Path(tempfile.mkdtemp(prefix="foldkit-gpu-"))
    common = ["--input-dir", str(args.jpeg_dir), "--folds-dir", str(models / "folds"), "--models-dir", str(models),
              "--model", args.model, "--no-pretrained", "--img-size", str(args.img_size), "--epochs", "3",
              "--no-progress"]
    sh([sys.executable, str(REPO / "src" / "make_folds.py"), *common[:4], "--n-folds", "2"])
    seq, _ = sh([sys.executable, TRAIN, *common, "--fold", "all", "--experiment", "seq"])
    par, _ = sh([sys.executable, TRAIN, *common, "--fold", "all", "--experiment", "par", "--devices", "0,0"])
    print(f"2 folds: in sequence {seq:.0f}s, 2 processes on GPU 0 {par:.0f}s ({seq / par:.2f}x)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["cpu", "gpu"])
    ap.add_argument("--model", default=None, help="default: test_resnet (cpu), resnet50 (gpu)")
    ap.add_argument("--img-size", type=int, default=None, help="default: 32 (cpu), 224 (gpu)")
    ap.add_argument("--batch-size", type=int, default=None, help="global batch; default 32 (cpu), 128 (gpu)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--limit", type=int, default=0, help="cpu: training rows of the demo (0 = all 1,437)")
    ap.add_argument("--timm-dir", default="", help="gpu: a clone of pytorch-image-models (benchmark.py, train.py)")
    ap.add_argument("--jpeg-dir", default=str(REPO.parent / "shared" / "data" / "hymenoptera"),
                    help="gpu: a folder-per-class JPEG competition with train/ and val/")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="cpu: OMP_NUM_THREADS of the single-process runs "
                    "(0 = torch's default: every core)")
    args = ap.parse_args()
    gpu = args.mode == "gpu"
    args.model = args.model or ("resnet50" if gpu else "test_resnet")
    args.img_size = args.img_size or (224 if gpu else 32)
    args.batch_size = args.batch_size or (128 if gpu else 32)
    (bench_gpu if gpu else bench_cpu)(args)


if __name__ == "__main__":
    main()
