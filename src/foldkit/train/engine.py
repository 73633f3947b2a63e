"""One epoch of training and one pass of evaluation.

AMP (bf16 where supported, fp16 + GradScaler otherwise), channels_last,
mixup/cutmix (timm Mixup), gradient accumulation and clipping, EMA
(timm ModelEmaV3) and the per-step LR schedule (timm scheduler.step_update)
all live here; the loop that calls these is foldkit.train.fit.
"""
from __future__ import annotations

import contextlib
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from foldkit.runtime.device import autocast, mean_softmax, to_device


def train_batch(model, x, y, loss_fn, device, *, dtype=None, mixup=None, accum_steps: int = 1, scaler=None,
                channels_last: bool = False, distill=None, sync: bool = True):
    """Forward and backward of one batch, the kit's training step: the batch moved to the device
    (channels_last), mixed (mixup/cutmix; an odd batch leaves its last image out), the loss under
    autocast (plus the distillation term), its gradient / accum_steps added (scaled for fp16).
    sync=False: a micro-step before an optimizer step (DDP skips the gradient all-reduce).
    Returns (loss, outputs, hard targets, images); FloatingPointError before the backward when the loss
    is not finite. train_one_epoch and foldkit.train.lrfind both train with it."""
    x, y = to_device(x, device, channels_last), y.to(device, non_blocking=True)
    if mixup is not None and len(x) % 2:   # timm's Mixup mixes pairs (it asserts an even batch)
        x, y = x[:-1], y[:-1]
    y_hard = y
    if mixup is not None:
        x, y = mixup(x, y)
    # DistributedDataParallel: a forward under no_sync() skips the gradient all-reduce of its backward
    no_sync = model.no_sync() if not sync and hasattr(model, "no_sync") else contextlib.nullcontext()
    with no_sync, autocast(device, dtype):
        out = model(x)
        loss = loss_fn(out, y)
        if distill is not None:
            loss = (1 - distill.alpha) * loss + distill.alpha * distillation_loss(out, distill.probs(x),
                                                                                   distill.temperature)
    value = loss.item()
    if not math.isfinite(value):
        raise FloatingPointError(f"the loss became {value}")
    (scaler.scale(loss / accum_steps) if scaler else loss / accum_steps).backward()
    return value, out, y_hard, len(x)


def optimizer_step(model, optimizer, scaler=None, clip_grad: float = 0.0) -> None:
    """One optimizer update from the gradients gathered by train_batch: unscaled and clipped when asked,
    stepped (through the GradScaler for fp16), zeroed."""
    if clip_grad:
        if scaler:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def train_one_epoch(tr, loader, *, model=None, step0: int = 0, desc: str = "train", progress: bool = True,
                    distill=None, batch_aug=None) -> dict:
    """Train over the loader once with `tr` (foldkit.train.training.Training: the model and optimizer, loss,
    mixup, schedule, EMA, AMP, accumulation and clipping). model: what the step runs (the DDP-wrapped model
    under torchrun; default tr.run_model). Returns mean loss, images/s, the optimizer step count and the
    side of the images the model was given; step0: the optimizer steps done before this epoch.
    batch_aug: --aug-device device (foldkit.data.batchaug.BatchAugment): the loader gives uint8 batches, augmented
    and normalised here on the device (per-sample draws seeded by batch), before mixup and channels_last.
    distill: the --teacher models (foldkit.train.teacher.Distiller: alpha, temperature, probs(x)); the loss is then
    (1 - alpha) x the label loss + alpha x `distillation_loss` against their probabilities on the same batch."""
    model = tr.run_model if model is None else model
    tr.train_mode()
    device, optimizer = tr.device, tr.optimizer
    total, n_seen, steps, correct, n_hard, size = 0.0, 0, step0, 0, 0, 0
    t0 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    n_batches = len(loader)
    bar = tqdm(loader, desc=desc, leave=False, disable=None if progress else True, unit="batch")
    for i, (x, y) in enumerate(bar):
        if batch_aug is not None:        # --aug-device device: the whole batch augmented where it trains
            x = batch_aug(x.to(device, non_blocking=True), i)
        size = x.shape[-1]
        step_now = (i + 1) % tr.accum_steps == 0 or (i + 1) == n_batches
        try:
            loss, out, y_hard, n = train_batch(model, x, y, tr.loss_fn, device, dtype=tr.dtype, mixup=tr.mixup,
                                               accum_steps=tr.accum_steps, scaler=tr.scaler,
                                               channels_last=tr.channels_last, distill=distill, sync=step_now)
        except FloatingPointError as e:
            raise FloatingPointError(f"{e} at batch {i + 1} (optimizer step {steps + 1})") from None
        if step_now:
            optimizer_step(model, optimizer, tr.scaler, tr.clip_grad)
            steps += 1
            if tr.scheduler is not None:
                tr.scheduler.step_update(num_updates=steps)
            if tr.ema is not None:
                tr.ema.update(getattr(model, "_orig_mod", model), step=steps)
        total += loss * n
        n_seen += n
        if tr.mixup is None and y_hard.dim() == 1 and not y_hard.is_floating_point():   # single-label
            correct += (out.detach().argmax(1) == y_hard).sum().item()
            n_hard += n
        bar.set_postfix(loss=f"{total / n_seen:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"loss": total / max(1, n_seen), "accuracy": correct / n_hard if n_hard else float("nan"),
            "img_per_s": n_seen / max(dt, 1e-9), "steps": steps, "seconds": dt, "img_size": int(size)}


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Knowledge distillation (Hinton et al. 2015): T^2 x KL(teacher || student), both softened by the
    temperature T (the T^2 keeps its gradients on the scale of the label loss), mean over the batch."""
    log_p = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_p, teacher_probs.float(), reduction="batchmean") * temperature ** 2


@torch.no_grad()
def predict_probs(model, loader, device, *, dtype=None, channels_last: bool = False,
                  desc: str = "valid", progress: bool = True, activation: str = "softmax") -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (or the task's activation of the outputs) and the targets of every batch."""
    model.eval()
    probs, targets = [], []
    for x, y in tqdm(loader, desc=desc, leave=False, disable=None if progress else True, unit="batch"):
        probs.append(mean_softmax(model, [to_device(x, device, channels_last)], device, dtype, activation))
        targets.append(y)
    return torch.cat(probs).numpy().astype(np.float64), torch.cat(targets).numpy()


def probs_loss(probs: np.ndarray, y: np.ndarray) -> float:
    """Cross-entropy of predicted probabilities against class indices."""
    p = np.clip(probs[np.arange(len(y)), y], 1e-15, 1.0)
    return float(-np.log(p).mean())


def output_loss(probs: np.ndarray, y: np.ndarray, activation: str = "softmax") -> float:
    """Cross-entropy for softmax outputs; other tasks score their loss themselves (foldkit.tasks): nan."""
    return probs_loss(probs, y) if activation == "softmax" else float("nan")


def evaluate(model, loader, device, gather=None, **kw) -> tuple[float, np.ndarray, np.ndarray]:
    """Validation: (cross-entropy loss, probabilities, targets). gather: (probs, y) -> every process's rows
    (foldkit.runtime.distributed.all_rows), before the loss."""
    probs, y = predict_probs(model, loader, device, **kw)
    if gather is not None:
        probs, y = gather(probs, y)
    return output_loss(probs, y, kw.get("activation", "softmax")), probs, y
