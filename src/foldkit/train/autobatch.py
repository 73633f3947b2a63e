"""`--batch-size auto`: the largest batch that fits the GPU, and the learning rate scaled to it.

How (Ultralytics' AutoBatch, the simplest published rule): train a few steps of the real model at
batches 1, 2, 4, 8, 16 on this device (same size, precision and memory format as training; forward,
backward and the AdamW step, so the optimizer's state counts), fit a line to the peak memory per batch,
and take the batch whose predicted peak is FRACTION of the device's memory, rounded down to a multiple
of 8. A batch that runs out of memory while measuring ends the measurement. Hand-written: timm and
torch have no batch-size search, and Lightning's `scale_batch_size` needs its Trainer.

The learning rate: `--lr` is read as the rate for the default batch (64) and scaled by timm's train.py
rule: by the square root of the batch ratio for adaptive optimizers (names with "ada" or "lamb"), linearly
otherwise (Goyal et al. 2017). Both resolved numbers are what the experiment records: the run is the
same as one given those numbers (its name included), and the log says so.

On a CPU there is no memory to fill: auto is the default batch (64), said in one line.
"""
from __future__ import annotations

import math

import numpy as np

from foldkit.config import with_settings
from foldkit.errors import FoldkitError
from foldkit.runtime import distributed
from foldkit.runtime.device import amp_dtype, autocast, pick_device, to_device, use_channels_last
from foldkit.runtime.model import create_model, data_config

FRACTION = 0.6          # of the device's total memory (Ultralytics' default)
PROBES = (1, 2, 4, 8, 16)
MAX_BATCH = 1024
REFERENCE_BATCH = 64    # the Config default: --lr is the rate at this batch


class AutoBatchError(FoldkitError, RuntimeError):
    """The batch search could not run one step of the model on this device."""


def choose_batch(peaks: dict[int, float], budget: float, rows: int | None = None,
                 out_of_memory_at: int | None = None) -> int:
    """The batch whose peak memory, on the line fitted to `peaks` {batch: bytes}, is `budget` bytes:
    at least 1, at most MAX_BATCH, the training rows and (when a probe ran out of memory) the largest
    batch that ran; rounded down to a multiple of 8 when at least 8. One point: a line through 0."""
    if not peaks:
        raise AutoBatchError("--batch-size auto: not even a batch of 1 fits this device; pass a number")
    b = np.array(sorted(peaks), dtype=float)
    m = np.array([peaks[k] for k in sorted(peaks)], dtype=float)
    slope, intercept = np.polyfit(b, m, 1) if len(b) > 1 else (m[0] / b[0], 0.0)
    best = (budget - intercept) / slope if slope > 0 else MAX_BATCH   # no growth: memory is no limit
    cap = min(MAX_BATCH, rows or MAX_BATCH, int(b[-1]) if out_of_memory_at else MAX_BATCH)
    best = int(min(max(best + 1e-6, 1), cap))     # + 1e-6: the fit's rounding, not a byte
    return best // 8 * 8 if best >= 8 else best


def scaled_lr(lr: float, batch: int, opt: str) -> tuple[float, str]:
    """(learning rate for `batch`, the rule's name): timm train.py's scaling from REFERENCE_BATCH."""
    ratio = batch / REFERENCE_BATCH
    rule = "sqrt" if any(o in opt.lower() for o in ("ada", "lamb")) else "linear"
    return lr * (math.sqrt(ratio) if rule == "sqrt" else ratio), rule


def measure_peaks(cfg, n_outputs: int, in_chans: int, size: int, device) -> tuple[dict[int, float], int | None]:
    """({batch: peak CUDA memory in bytes} of one training step of a fresh cfg.model at each probe batch,
    the probe that ran out of memory or None)."""
    import torch
    import torch.nn.functional as F

    dtype = amp_dtype(device, cfg.amp)
    cl = use_channels_last(cfg.channels_last, device)
    model = create_model(cfg.model, n_outputs, in_chans, img_size=size).to(device).train()
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    peaks, oom = {}, None
    for batch in PROBES:
        try:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            x = to_device(torch.randn(batch, in_chans, size, size), device, cl)
            with autocast(device, dtype):
                loss = F.cross_entropy(model(x).float().reshape(batch, -1),
                                       torch.zeros(batch, dtype=torch.long, device=device))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            torch.cuda.synchronize(device)
            peaks[batch] = float(torch.cuda.max_memory_allocated(device))
        except torch.cuda.OutOfMemoryError:
            oom = batch
            break
    del model, opt
    torch.cuda.empty_cache()
    return peaks, oom


def auto_batch(cfg, n_outputs: int, rows: int, log=print):
    """cfg with --batch-size auto (0) replaced by the batch for this device and --lr scaled to it;
    cfg unchanged when a number was given. Under torchrun every rank measures its own GPU and all take
    the smallest answer (the global batch is per-process batch x processes)."""
    if cfg.batch_size:
        return cfg
    device = pick_device(cfg.device)
    world = distributed.world()
    if device.type != "cuda":
        batch, how = REFERENCE_BATCH, f"the default on {device.type} (the search fills GPU memory)"
    else:
        import torch
        dc = data_config(cfg.model, cfg.img_size, cfg.in_chans or 3, cfg.crop_pct)
        size = dc["input_size"][-1]
        peaks, oom = measure_peaks(cfg, n_outputs, dc["input_size"][0], size, device)
        total = torch.cuda.get_device_properties(device).total_memory
        per = choose_batch(peaks, FRACTION * total, rows=max(1, rows // world), out_of_memory_at=oom)
        per = distributed.min_over_ranks(per)
        batch = per * world
        how = (f"{per} per process x {world}" if world > 1 else f"{per}") + (
            f": {FRACTION:.0%} of {total / 2**30:.0f} GiB on {torch.cuda.get_device_name(device)} at {size} px, "
            f"peaks {', '.join(f'{b}: {p / 2**20:.0f} MiB' for b, p in peaks.items())}")
    lr, rule = scaled_lr(cfg.lr, batch, cfg.opt)
    log(f"--batch-size auto: {batch} ({how}); --lr {cfg.lr:g} at batch {REFERENCE_BATCH} -> {lr:.3g} ({rule} "
        f"rule). The experiment records batch {batch} and lr {lr:.3g}: pass them to continue it elsewhere")
    return with_settings(cfg, batch_size=batch, lr=lr)
