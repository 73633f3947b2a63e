"""The learning-rate range test: `python src/train.py --lr-find` (fastai's `lr_find`, Lightning's
`Tuner.lr_find`, after Leslie Smith's LR range test).

    lr_find(cfg)  fold 0's training part, the LR growing exponentially from --lr-find-start to
                  --lr-find-end over at most --lr-find-steps optimizer steps ->
                  <models>/lr_find/<experiment>/lr_find.csv   step, lr, loss, smoothed
                  <models>/lr_find/<experiment>/lr_find.png   loss against LR (log axis), suggestions marked
                  and the suggested --lr (fastai's 'valley'; 'steepest' and 'min/10' beside it)

No library the kit uses does this: timm has no LR finder, and the `torch-lr-finder` package runs its
own loop (its own forward, loss and optimizer step), which would bypass the kit's training step. So
the test trains exactly as train.py does: the run built by `builder.build_run` (without recording the
experiment), the fold's loader, model, optimizer, loss and mixup from `loaders.fold_loaders` and
`training.build_training`, and each update through `engine.train_batch` / `engine.optimizer_step` (AMP,
channels_last, mixup/cutmix, gradient accumulation and clipping, frozen BatchNorm statistics). Only the
learning rate is the sweep's instead of the schedule's; EMA (not the trained weights) is left out. The
model is thrown away.

Which phase it measures: the whole model learning, each parameter group at its own share of the swept
LR (the head at lr, the backbone at --backbone-lr x lr, with --layer-decay), also when --freeze-epochs is
set. The reason is how the kit uses --lr: it is the peak of the schedule for the head in both phases and
for the whole model over most epochs, and the unfrozen model is the one that tolerates less (an LR
measured on the head alone, as fastai's lr_find does on a frozen learner, can be too high once the
backbone joins). The LR the whole model tolerates is also safe for the head-only epochs, so the
suggestion can be passed to --lr as it is. With the default --freeze-epochs 0 the test starts from
exactly the model train.py starts from.

The suggestion follows fastai (fastai.callback.schedule): the loss is smoothed exponentially (beta 0.98,
bias-corrected), the sweep stops once the smoothed loss exceeds 4x its minimum or is not finite, the
first tenth of the requested steps and the last 5 recorded ones are left out, then
    valley    the longest stretch over which the loss keeps falling (the longest decreasing
              subsequence), at 1/3 + 1/6 of its length (fastai's default)
    steepest  where the loss falls fastest per decade of LR
    min/10    a tenth of the LR at the lowest loss
The results go beside the experiments, not into one: the next run changes --lr and so gets another
experiment name; the folder is named after the experiment these exact settings would get
(`experiment.lr_find_files`). Teachers (--soft-labels, --pseudo, --teacher) are left out of the test.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from foldkit import figures
from foldkit.experiment import lr_find_files
from foldkit.io import atomic_write_with
from foldkit.runtime.device import pick_device
from foldkit.runtime.model import set_backbone_frozen
from foldkit.tasks import TASKS
from foldkit.train import engine, teacher
from foldkit.train.builder import build_run
from foldkit.train.checks import TrainError
from foldkit.train.fit import seed_all
from foldkit.train.loaders import augmentation_path, batch_augment, fold_loaders
from foldkit.train.training import build_training

FOLD = 0
BETA = 0.98          # smoothing of the loss (fastai's Recorder)
DIVERGED = 4.0       # stop once the smoothed loss exceeds this many times its minimum
SKIP_END = 5         # recorded steps left out at the end (fastai)
COLUMNS = ["step", "lr", "loss", "smoothed"]


@dataclass
class Result:
    suggestion: dict          # {"valley": lr, "steepest": lr, "min/10": lr}
    csv: Path
    plot: Path
    steps: int                # optimizer steps run
    stopped: str              # why the sweep ended, in words
    experiment: str

    def line(self) -> str:
        s = self.suggestion
        return (f"suggested --lr {s['valley']:.1e} (valley; steepest {s['steepest']:.1e}, "
                f"min/10 {s['min/10']:.1e})")


def check_request(cfg) -> None:
    """One TrainError line for what --lr-find does not do: another fold, fold-parallel devices, several
    torchrun processes, a sweep that does not go up."""
    if str(cfg.fold).strip() != str(FOLD):
        raise TrainError(f"--lr-find runs on fold {FOLD}'s training part (its suggestion serves every fold): "
                         f"drop --fold {cfg.fold}")
    if cfg.devices:
        raise TrainError(f"--lr-find runs in one process: drop --devices {cfg.devices} (--device picks where)")
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)     # torchrun's environment
    if world > 1:
        raise TrainError(f"--lr-find runs in one process, not under torchrun with {world} processes: start it "
                         "with python src/train.py (--batch-size is the global batch, so the suggestion holds "
                         "for the torchrun run)")
    if not 0 < cfg.lr_find_start < cfg.lr_find_end:
        raise TrainError(f"--lr-find-start {cfg.lr_find_start:g} and --lr-find-end {cfg.lr_find_end:g}: give "
                         "0 < start < end (default 1e-07 to 10)")


# --------------------------------------------------------------------------- the rules

def smooth(losses, beta: float = BETA) -> np.ndarray:
    """Exponential moving average with bias correction, as the sweep records it."""
    out, avg = [], 0.0
    for i, loss in enumerate(np.asarray(losses, dtype=np.float64)):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return np.array(out)


def valley(losses: np.ndarray) -> int:
    """fastai's 'valley': the longest decreasing subsequence of the loss (its first longest end), and
    the point 1/3 + 1/6 of the way along it."""
    n = len(losses)
    lds = np.ones(n, dtype=int)
    for i in range(1, n):
        longer = lds[:i][losses[:i] > losses[i]]
        if len(longer):
            lds[i] = longer.max() + 1
    end = int(lds.argmax())
    start = end - int(lds[end])
    sections = (end - start) / 3
    return max(0, start + int(sections) + int(sections / 2))


def steepest(lrs: np.ndarray, losses: np.ndarray) -> int:
    """fastai's 'steep': where the loss falls fastest against log(lr)."""
    return int(np.argmin(np.diff(losses) / np.diff(np.log(lrs))))


def suggest(lrs, smoothed, steps: int) -> dict | None:
    """The suggestions from the recorded LRs and smoothed losses of a sweep of `steps` requested steps
    (fastai: the first steps // 10 and the last 5 left out, the curve cut at its first non-finite loss);
    None when fewer than 3 points remain."""
    lrs = np.asarray(lrs, dtype=np.float64)[steps // 10:len(lrs) - SKIP_END]
    losses = np.asarray(smoothed, dtype=np.float64)[steps // 10:len(smoothed) - SKIP_END]
    bad = np.flatnonzero(~np.isfinite(losses))
    if len(bad):
        lrs, losses = lrs[:bad[0]], losses[:bad[0]]
    if len(losses) < 3:
        return None
    return {"valley": float(lrs[valley(losses)]), "steepest": float(lrs[steepest(lrs, losses)]),
            "min/10": float(lrs[int(np.argmin(losses))] / 10)}


# --------------------------------------------------------------------------- the sweep

def lr_find(cfg, log=print) -> Result:
    """Run the range test with these settings (docs/training.md 'Learning rate'); writes only the two result files
    (and the decoded-image store, shared with training)."""
    check_request(cfg)
    cfg, run = build_run(cfg, log, record=False)
    if teacher.in_use(cfg):
        log("note: --lr-find measures the plain training loss: --soft-labels/--pseudo/--teacher are left out")
    files = lr_find_files(cfg.models_dir, run.exp.name)
    frame, stopped = sweep(cfg, run, log)
    suggestion = suggest(frame["lr"], frame["smoothed"], cfg.lr_find_steps)
    files["csv"].parent.mkdir(parents=True, exist_ok=True)
    # full precision (no float_format): the suggestion computed again from the file is the one printed
    atomic_write_with(files["csv"], lambda tmp: frame.to_csv(tmp, index=False))
    plot(frame, suggestion, files["plot"], f"{run.exp.name}: LR range test, fold {FOLD}")
    log(f"lr-find: {len(frame)} optimizer steps from {frame['lr'].iloc[0]:.1e} to {frame['lr'].iloc[-1]:.1e}, "
        f"{stopped}")
    if suggestion is None:
        raise TrainError(f"--lr-find: the loss diverged after {len(frame)} steps, too early for a suggestion "
                         f"(see {files['plot']}): lower --lr-find-start or raise --lr-find-steps")
    return Result(suggestion, files["csv"], files["plot"], len(frame), stopped, run.exp.name)


def sweep(cfg, run, log=print) -> tuple[pd.DataFrame, str]:
    """Train fold 0's model with the LR growing exponentially, one row per optimizer step (step, lr, loss =
    the mean training loss of the step's batches, smoothed); stops when the smoothed loss exceeds 4x its
    minimum or is not finite. Returns (rows, why it stopped)."""
    seed = cfg.seed * 100 + FOLD                 # fit_fold's seed for the fold
    seed_all(seed)
    device = pick_device(cfg.device)
    aug_device = augmentation_path(cfg, run.data_cfg, device, FOLD)   # the path training would take here
    data = fold_loaders(cfg, run, FOLD, seed, device, aug_device=aug_device)
    train_dl, sampler, tr_idx, counts = data.train_dl, data.sampler, data.tr_idx, data.counts
    batch_aug = batch_augment(cfg, run.data_cfg, seed) if aug_device == "device" else None
    if len(train_dl) == 0:
        raise TrainError(f"--lr-find: fold {FOLD} has no training rows")
    scale = TASKS[run.task].target_scale(cfg.metric, run.y[tr_idx])
    tr = build_training(cfg, run, counts, math.ceil(len(train_dl) / cfg.accum_steps), log=log, scale=scale)
    set_backbone_frozen(tr.model, False)         # the whole model (module docstring: why)
    tr.train_mode()
    batches = _cycle(train_dl, sampler, seed, batch_aug, tr.device)
    lrs = np.geomspace(cfg.lr_find_start, cfg.lr_find_end, cfg.lr_find_steps)
    rows, avg, best, stopped, t0 = [], 0.0, math.inf, "the whole range swept", time.perf_counter()
    tr.optimizer.zero_grad(set_to_none=True)
    for i, lr in enumerate(tqdm(lrs, desc="lr-find", leave=False, disable=None if cfg.progress else True)):
        for g in tr.optimizer.param_groups:      # each group at its share (head 1, backbone --backbone-lr)
            g["lr"] = lr * g.get("lr_scale", 1.0)
        try:
            loss = _step(cfg, tr, batches)
        except FloatingPointError:
            loss = math.nan
        avg = BETA * avg + (1 - BETA) * loss
        smoothed = avg / (1 - BETA ** (i + 1))
        rows.append({"step": i + 1, "lr": float(lr), "loss": loss, "smoothed": smoothed})
        best = min(best, smoothed)
        if not math.isfinite(smoothed) or smoothed > DIVERGED * best:
            stopped = (f"stopped at lr {lr:.1e}: the loss " + ("is not finite" if not math.isfinite(smoothed)
                       else f"exceeded {DIVERGED:g}x its minimum"))
            break
    log(f"lr-find: {time.perf_counter() - t0:.1f}s")
    return pd.DataFrame(rows, columns=COLUMNS), stopped


def _cycle(loader, sampler, seed: int, batch_aug=None, device=None):
    """The training part's batches, epoch after epoch, each epoch seeded as fit_fold seeds it; augmented on
    the device first on the batched path (batch_aug), as train_one_epoch does."""
    epoch = 0
    while True:
        seed_all(seed * 1000 + epoch)
        sampler.set_epoch(epoch)
        if batch_aug is None:
            yield from loader
        else:
            batch_aug.set_epoch(epoch)
            for i, (x, y) in enumerate(loader):
                yield batch_aug(x.to(device, non_blocking=True), i), y
        epoch += 1


def _step(cfg, tr, batches) -> float:
    """One optimizer step of the kit's training step (accumulated over --accum-steps batches): the mean
    loss of its images."""
    total, n = 0.0, 0
    for k in range(cfg.accum_steps):
        x, y = next(batches)
        loss, _, _, m = engine.train_batch(tr.run_model, x, y, tr.loss_fn, tr.device, dtype=tr.dtype,
                                           mixup=tr.mixup, accum_steps=cfg.accum_steps, scaler=tr.scaler,
                                           channels_last=tr.channels_last)
        total, n = total + loss * m, n + m
    engine.optimizer_step(tr.run_model, tr.optimizer, tr.scaler, cfg.clip_grad)
    return total / max(n, 1)


# --------------------------------------------------------------------------- the plot

def plot(frame: pd.DataFrame, suggestion: dict | None, path, title: str) -> Path:
    """Loss (faint) and smoothed loss against the LR on a log axis, the three suggestions marked."""
    fig = figures.figure(7, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(frame["lr"], frame["loss"], color="C0", alpha=0.25, lw=1, label="loss per step")
    ax.plot(frame["lr"], frame["smoothed"], color="C0", lw=2, label="smoothed")
    for (name, lr), color in zip((suggestion or {}).items(), ("C3", "C2", "C1")):
        ax.axvline(lr, color=color, ls="--" if name == "valley" else ":", lw=1.5,
                   label=f"{'suggested --lr: ' if name == 'valley' else ''}{name} {lr:.1e}")
    sm = frame["smoothed"].to_numpy(dtype=np.float64)
    sm = sm[np.isfinite(sm)]
    if len(sm):                                  # the divergence at the end would flatten the curve
        low, top = sm.min(), max(sm[0], min(sm.max(), DIVERGED * sm.min()))
        ax.set_ylim(low - 0.05 * (top - low), top + 0.05 * (top - low) + 1e-12)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (--lr: the head's; backbone at --backbone-lr x lr)")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figures.save_png(fig, path)
