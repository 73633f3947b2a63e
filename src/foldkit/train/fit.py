"""Train one fold: the whole training path in one readable loop.

    train(cfg)  opens the competition and decodes the training images once, then for each fold:
    fit_fold -> models/<experiment>/fold{k}.pt       best checkpoint (self-describing)
                models/<experiment>/fold{k}_last.pt  resume state, removed when done
                models/<experiment>/oof_fold{k}.csv  out-of-fold probabilities, best epoch
                models/<experiment>/log_fold{k}.csv  one row per epoch (+ curve_fold{k}.png)
                models/<experiment>/fold{k}.json     written last: the fold is finished

File names come from foldkit.experiment; the reproducible epoch order and per-sample seeding from
foldkit.data.dataset (EpochSampler, SeededDataset); optimizer, schedule, EMA, mixup and loss from timm
(build_training); one epoch from foldkit.train.engine.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from foldkit.runtime import distributed
from foldkit.config import learning_settings
from foldkit.errors import FoldkitError
from foldkit.experiment import Experiment
from foldkit.data.images import eval_size
from foldkit.io import atomic_write_text, atomic_write_with
from foldkit.oof import score_text


class TrainError(FoldkitError, RuntimeError):
    """A training run that cannot start or go on as asked; the message says why and what to do."""


# `--fold env`: the task index of a cluster job array (README "Folds across machines"), first found
FOLD_ENV = ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")


def parse_folds(spec: str, n_folds: int) -> list[int]:
    if str(spec).strip().lower() == "env":
        import os
        found = next((v for v in FOLD_ENV if os.environ.get(v, "").strip()), None)
        if found is None:
            raise TrainError(f"--fold env: none of {', '.join(FOLD_ENV)} is set (run it as a SLURM array task "
                             "or a Kubernetes Indexed Job, or give the fold number)")
        spec = os.environ[found].strip()
        if not spec.isdigit() or not int(spec) < n_folds:
            raise TrainError(f"--fold env: {found}={spec!r} is not a fold of the folds file (0..{n_folds - 1}): "
                             f"make the array 0-{n_folds - 1}")
    if str(spec).strip().lower() == "all":
        return list(range(n_folds))
    try:
        folds = [int(s) for s in str(spec).replace(" ", "").split(",") if s != ""]
    except ValueError:
        raise TrainError(f"--fold {spec!r}: give a fold number, a list like 0,2,4, or all") from None
    bad = [f for f in folds if not 0 <= f < n_folds]
    if bad or not folds:
        raise TrainError(f"--fold {spec!r}: the folds file has folds 0..{n_folds - 1}")
    return folds


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- once per run

@dataclass
class RunData:
    """What every fold of one train.py run shares: the competition, folds, experiment folder and the
    training images (decoded once, for all folds)."""
    table: pd.DataFrame
    meta: dict
    exp: Experiment
    classes: list
    y: np.ndarray            # per row of the folds table: class index (multi-hot row, number: foldkit.tasks)
    data_cfg: dict           # input size, mean/std, interpolation, crop_pct
    source: object           # foldkit.data.dataset.ImageSource over the folds table
    task: str = "single"     # single | multilabel | regression (folds_meta.json)
    comp: object = None      # the competition (foldkit.data.reading.Competition): --pseudo labels its test images


def prepare_run(cfg, log=print, record: bool = True) -> RunData:
    """record=False (foldkit.train.lrfind): everything but recording the experiment; run.exp is then the folder
    these settings would get, not created."""
    from foldkit.data.dataset import ImageSource, detect_grey
    from foldkit.experiment import default_name, prepare_experiment
    from foldkit.folds.file import FOLDS_CSV, open_competition, read_folds
    from foldkit.data.images import cache_side
    from foldkit.runtime.model import data_config
    from foldkit.tasks import targets, task_of

    table, meta = read_folds(cfg.folds_dir)
    if meta.get("sha256") and meta["sha256"] != meta["sha256_now"]:
        raise TrainError(f"{cfg.folds_dir}/{FOLDS_CSV} was changed after make_folds wrote it "
                         "(hash differs from folds_meta.json): re-run make_folds.py")
    if cfg.balance == "weights" and (cfg.mixup > 0 or cfg.cutmix > 0):
        raise TrainError("--balance weights does not combine with mixup/cutmix (soft targets carry no class "
                         "weights): use --balance sampler")
    check_training_settings(cfg)
    comp, reading = open_competition(cfg, meta)
    from foldkit.predict.submission import probability_hint
    if hint := probability_hint(comp.sample_submission, meta["classes"], cfg.metric):
        log(f"note: {hint}")
    from foldkit.train.teacher import check_experiments
    check_experiments(cfg, meta)         # teachers on other folds or classes: refused before anything is recorded
    exp = (prepare_experiment(cfg, meta, learning_settings(cfg), reading) if record
           else Experiment(Path(cfg.models_dir) / default_name(cfg, learning_settings(cfg))))
    grey = (cfg.in_chans == 1) if cfg.in_chans else detect_grey(comp, table)
    data_cfg = data_config(cfg.model, cfg.img_size, 1 if grey else 3, cfg.crop_pct, cfg.test_img_size)
    if not cfg.img_size:
        log(f"note: images resized to {data_cfg['input_size'][-1]} px, {cfg.model}'s pretrained size: a guess for "
            "your images (--img-size to choose)")
    from foldkit.data.store import cache_root
    source = ImageSource(comp, table, "train", grey=grey, cache=cfg.cache, max_side=cache_side(data_cfg),
                         progress=cfg.progress, cache_dir=cache_root(cfg))
    task = task_of(meta)
    return RunData(table, meta, exp, meta["classes"], targets(task, table, meta), data_cfg, source, task, comp)


# --------------------------------------------------------------------------- once per fold

@dataclass
class Training:
    """The model and everything that updates it (built by build_training)."""
    model: torch.nn.Module
    run_model: torch.nn.Module        # torch.compile'd model, or the model
    optimizer: torch.optim.Optimizer
    scheduler: object                 # timm scheduler (per-step), maybe wrapped in UnfreezeWarmup
    scaler: object                    # GradScaler for fp16, else None
    ema: object                       # timm ModelEmaV3, else None
    mixup: object                     # timm Mixup, else None
    loss_fn: torch.nn.Module
    freeze_bn: bool
    device: torch.device
    dtype: torch.dtype | None
    channels_last: bool


def backbone_lr_fraction(cfg) -> float:
    if cfg.backbone_lr == "auto":
        return 0.1 if (cfg.pretrained or cfg.pretrained_file) else 1.0
    try:
        return float(cfg.backbone_lr)
    except ValueError:
        raise TrainError(f"--backbone-lr {cfg.backbone_lr!r}: give a fraction of --lr such as 0.1, or auto") from None


# the schedule names timm's create_scheduler_v2 takes (timm keeps no list of them); check_training_settings
# refuses "plateau" and "none"
SCHEDULES = ("cosine", "step", "multistep", "poly", "tanh", "constant", "wsd", "rsqrt")


def check_training_settings(cfg) -> None:
    """The settings whose valid values are timm's or this machine's (--model, --opt, --sched, --device,
    mixup's batch), checked before the experiment is recorded: a mistake is one TrainError / ModelError /
    ConfigError line naming the value and the closest valid names. The optimizer and schedule are built
    once on a dummy parameter, so timm itself judges them (missing packages included)."""
    from timm.optim import create_optimizer_v2, list_optimizers
    from timm.scheduler import create_scheduler_v2

    from foldkit.train import engine
    from foldkit.config import did_you_mean
    from foldkit.runtime.model import check_model_name, data_config, fixed_input_size

    check_model_name(cfg.model)
    size = data_config(cfg.model, cfg.img_size)["input_size"][-1]      # the training size, resolved
    if fixed_input_size(cfg.model) and (cfg.test_img_size not in (0, size) or cfg.img_size_schedule):
        flag = (f"--test-img-size {cfg.test_img_size}" if cfg.test_img_size not in (0, size)
                else f"--img-size-schedule {cfg.img_size_schedule}")
        raise TrainError(f"{flag}: {cfg.model} is built for one input size (--img-size, now {size}); train "
                         "and evaluate it at that size, or choose a model that takes any size")
    epoch_sizes(cfg.img_size_schedule, size, cfg.epochs)
    engine.pick_device(cfg.device)
    backbone_lr_fraction(cfg)
    if not cfg.batch_size:
        raise TrainError("--batch-size auto is measured by train.py; tune.py and auto.py take a number "
                         "(run train.py --batch-size auto once and use the batch it prints)")
    if (cfg.mixup > 0 or cfg.cutmix > 0) and cfg.batch_size < 2:
        raise TrainError(f"--batch-size {cfg.batch_size} with --mixup/--cutmix: mixing needs pairs, "
                         "use 2 or more")
    if cfg.sched in ("plateau", "none"):
        raise TrainError(f"--sched {cfg.sched} is not supported: " + (
            "timm's plateau schedule is deprecated, cannot resume exactly and ignores --backbone-lr/"
            "--layer-decay; use cosine (default), step, multistep or poly, and --patience to stop when the "
            "metric stalls"
            if cfg.sched == "plateau" else "use --sched constant (with --warmup-epochs 0 for no warmup)"))
    probe = [torch.nn.Parameter(torch.zeros(1))]
    try:
        optimizer = create_optimizer_v2(probe, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay)
    except Exception as e:  # noqa: BLE001 - timm raises ValueError, ImportError, ... for what it cannot build
        known = cfg.opt.lower().split("_")[-1] in list_optimizers()
        raise TrainError(f"--opt {cfg.opt!r}: " + (f"timm cannot create it ({type(e).__name__}: {str(e)[:200]})"
                         if known else "not a timm optimizer" + did_you_mean(cfg.opt, list_optimizers())
                         + " (see timm.optim.list_optimizers())")) from None
    try:
        create_scheduler_v2(optimizer, sched=cfg.sched, num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
                            min_lr=cfg.min_lr, step_on_epochs=False, updates_per_epoch=1)
    except Exception as e:  # noqa: BLE001
        raise TrainError(f"--sched {cfg.sched!r}: " + (f"timm cannot create it ({type(e).__name__}: {str(e)[:200]})"
                         if cfg.sched in SCHEDULES else "not a timm schedule; use one of " + ", ".join(SCHEDULES)
                         + did_you_mean(cfg.sched, SCHEDULES))) from None


def epoch_sizes(schedule: str, size: int, epochs: int) -> list[int]:
    """--img-size-schedule (progressive resizing, as fastai's lessons and EfficientNetV2 train): the
    training image size of each epoch. 'SIZE:EPOCHS,...' trains EPOCHS epochs at each SIZE in order, then
    the remaining epochs at the training size `size`, which validation, OOF and every prediction path use
    (sizes above it would crop from pixels prepared for it: refused). TrainError naming the entry when the
    schedule cannot be followed."""
    out = []
    for entry in (e.strip() for e in str(schedule or "").split(",") if e.strip()):
        parts = entry.split(":")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise TrainError(f"--img-size-schedule {schedule!r}: {entry!r} is not SIZE:EPOCHS "
                             "(e.g. 128:5,160:4: 5 epochs at 128 px, 4 at 160, the rest at --img-size)")
        at, n = int(parts[0]), int(parts[1])
        if not 8 <= at <= size or n < 1:
            raise TrainError(f"--img-size-schedule {schedule!r}: {entry!r} " + (
                "trains no epoch" if n < 1 else f"is not between 8 px and the training size {size} px "
                "(the schedule grows towards --img-size; set --img-size to the final size)"))
        out += [at] * n
    if len(out) > epochs or (len(out) == epochs and out and out[-1] != size):
        raise TrainError(f"--img-size-schedule {schedule!r}: {len(out)} scheduled epochs " + (
            f"but --epochs is {epochs}: set --epochs {len(out)} or more (the epochs after the schedule train "
            f"at --img-size {size})" if len(out) > epochs else
            f"end at {out[-1]} px, but validation and prediction use the training size {size} px: end it "
            f"at {size} (or set --img-size {out[-1]}), or raise --epochs so the last epochs train at {size}"))
    return out + [size] * (epochs - len(out))


def build_training(cfg, run: RunData, counts: np.ndarray, steps_per_epoch: int, log=print,
                   scale=None, soft_targets: bool = False) -> Training:
    """soft_targets: the training targets are probability rows (foldkit.train.teacher: --soft-labels, --pseudo;
    label smoothing already in them): SoftTargetCrossEntropy, and mixup mixes the rows."""
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import ModelEmaV3

    from foldkit.train import engine
    from foldkit.runtime.model import UnfreezeWarmup, bn_is_folded, choose_bn, create_model, param_groups
    from foldkit.tasks import build_loss, multi_hot_mixup, n_outputs

    device = engine.pick_device(cfg.device)
    channels_last = engine.use_channels_last(cfg.channels_last, device)
    n = n_outputs(run.task, run.classes)
    model = create_model(cfg.model, n, run.data_cfg["input_size"][0], cfg.pretrained, cfg.pretrained_file,
                         cfg.drop_rate, cfg.drop_path, img_size=run.data_cfg["input_size"][-1])
    pretrained = bool(cfg.pretrained or cfg.pretrained_file)
    freeze_bn, why = choose_bn(cfg.bn, pretrained, pretrained and bn_is_folded(model), cfg.batch_size)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    backbone_lr = backbone_lr_fraction(cfg)
    groups = param_groups(model, cfg.weight_decay, backbone_lr, cfg.layer_decay)
    optimizer = create_optimizer_v2(groups, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler, _ = create_scheduler_v2(optimizer, sched=cfg.sched, num_epochs=cfg.epochs,
                                       warmup_epochs=cfg.warmup_epochs, warmup_lr=cfg.lr * 0.01,
                                       min_lr=cfg.min_lr, step_on_epochs=False, updates_per_epoch=steps_per_epoch)
    if cfg.freeze_epochs:
        scheduler = UnfreezeWarmup(scheduler, optimizer, start=cfg.freeze_epochs * steps_per_epoch,
                                   steps=round(cfg.unfreeze_warmup * steps_per_epoch))
    log(f"BatchNorm statistics {'frozen' if freeze_bn else 'trained'} ({why}); LR head {cfg.lr:g}, backbone "
        f"{cfg.lr * backbone_lr:g}" + (f" with layer decay {cfg.layer_decay}" if cfg.layer_decay else "")
        + (f", ramped up over {cfg.unfreeze_warmup:g} epoch(s) after {cfg.freeze_epochs} head-only epoch(s)"
           if cfg.freeze_epochs else ""))
    dtype = engine.amp_dtype(device, cfg.amp)
    mixup, loss_fn = None, None
    if run.task != "single":
        mixup = multi_hot_mixup(cfg, n) if (cfg.mixup > 0 or cfg.cutmix > 0) else None
        loss_fn = build_loss(run.task, cfg, scale)
    elif soft_targets:
        mixup = multi_hot_mixup(cfg, n) if (cfg.mixup > 0 or cfg.cutmix > 0) else None
        loss_fn = SoftTargetCrossEntropy()
    elif cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing,
                      num_classes=n)
        if cfg.batch_size % 2:
            log(f"--batch-size {cfg.batch_size} is odd: mixup/cutmix mix pairs, so each batch trains on "
                f"{cfg.batch_size - 1} images (its last one is left out)")
        loss_fn = SoftTargetCrossEntropy()
    else:
        w = None
        if cfg.balance == "weights":
            w = torch.tensor(counts.sum() / (n * np.maximum(counts, 1)), dtype=torch.float32, device=device)
        loss_fn = torch.nn.CrossEntropyLoss(weight=w, label_smoothing=cfg.label_smoothing)
    return Training(model=model, run_model=torch.compile(model) if cfg.compile else model, optimizer=optimizer,
                    scheduler=scheduler,
                    scaler=torch.amp.GradScaler(device.type) if dtype == torch.float16 else None,
                    ema=ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema else None,
                    mixup=mixup, loss_fn=loss_fn, freeze_bn=freeze_bn, device=device, dtype=dtype,
                    channels_last=channels_last)


@dataclass
class FoldData:
    """One fold's rows and loaders (fold_loaders). The training loader at another image size
    (--img-size-schedule) comes from `train_at`: the same rows, epoch order (one sampler) and per-sample
    seeding, only the size of the crops differs."""
    train_dl: torch.utils.data.DataLoader     # at the training size
    valid_dl: torch.utils.data.DataLoader
    sampler: object                            # foldkit.data.dataset.EpochSampler (set_epoch each epoch)
    tr_idx: np.ndarray
    va_idx: np.ndarray
    workers: int
    counts: np.ndarray | None                  # training rows per class (single-label), else None
    train_at: object = None                    # data config -> a training DataLoader over the same rows


def fold_loaders(cfg, run: RunData, fold: int, seed: int, device, teaching=None, aug_device: str = "cpu") -> FoldData:
    """The fold's rows and loaders. Rows with fold -1 (train-only rare classes) are in the training part
    of every fold. teaching (foldkit.train.teacher): the training rows' soft targets, and the pseudo-labelled
    images that follow them in the training part. aug_device "device": the training loader only gathers
    fixed-size uint8 images (foldkit.data.batchaug)."""
    from foldkit.data.augment import eval_transform, train_transform
    from foldkit.data.batchaug import gather_transform
    from foldkit.data.dataset import EpochSampler, ImageDataset, SeededDataset, auto_workers

    folds = run.table["fold"].to_numpy()
    tr_idx, va_idx = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    Subset = torch.utils.data.Subset
    y_train = teaching.targets if teaching is not None and teaching.targets is not None else run.y
    extras = teaching.extra if teaching is not None and teaching.extra else []   # pseudo-labelled sources

    def training_part(data_cfg: dict):
        t_train = (gather_transform(data_cfg, cfg.aug) if aug_device == "device"
                   else train_transform(data_cfg, cfg.aug, cfg.hflip, cfg.vflip, cfg.randaugment))
        part = Subset(ImageDataset(run.source, y_train, t_train), tr_idx.tolist())
        if extras:
            part = torch.utils.data.ConcatDataset([part] + [ImageDataset(src, t, t_train) for src, t in extras])
        return part

    n_train = len(tr_idx) + sum(len(src) for src, _ in extras)
    valid_ds = Subset(ImageDataset(run.source, run.y, eval_transform(run.data_cfg)),
                      distributed.shard_rows(va_idx).tolist())
    hard = teaching.hard_labels(run.y[tr_idx]) if teaching is not None else run.y[tr_idx]
    counts = (np.bincount(hard, minlength=len(run.classes)).astype(np.float64) if run.task == "single"
              else None)   # --balance is single-label only (foldkit.tasks.check_settings)
    weights = (1.0 / np.maximum(counts, 1))[hard] if cfg.balance == "sampler" else None
    sampler = EpochSampler(n_train, seed, shuffle=True, weights=weights, rank=distributed.rank(),
                           world=distributed.world())
    workers = auto_workers(cfg.workers, run.source.prepared)
    kw = dict(num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    if workers > 0:
        kw["prefetch_factor"] = 4

    def loader_for(data_cfg: dict):
        return torch.utils.data.DataLoader(SeededDataset(training_part(data_cfg), seed), batch_size=cfg.batch_size,
                                           sampler=sampler, drop_last=len(sampler) > cfg.batch_size, **kw)

    valid_dl = torch.utils.data.DataLoader(valid_ds, batch_size=cfg.batch_size * 2, shuffle=False, **kw)
    return FoldData(loader_for(run.data_cfg), valid_dl, sampler, tr_idx, va_idx, workers, counts, loader_for)


@dataclass
class FoldState:
    """Where a fold's training stands; with the Training's state it is the resume checkpoint
    fold{k}_last.pt (save and load are each other's mirror)."""
    epochs_done: int = 0
    steps: int = 0
    best: float | None = None
    best_epoch: int = 0          # 1-based, like the log's epoch column; 0 = none yet
    bad_epochs: int = 0
    log: list = field(default_factory=list)
    world_size: int = 1          # processes of a torchrun run (exact resume needs the same number)
    teaching: dict = field(default_factory=dict)   # the fold's teacher record (foldkit.train.teacher): resume needs the same
    aug_device: str = "cpu"      # where the augmentation ran (--aug-device resolved): a resumed fold keeps it

    def save(self, path, tr: Training) -> None:
        from foldkit.runtime.model import save_checkpoint
        cpu = lambda sd: {k: v.cpu() for k, v in sd.items()}  # noqa: E731
        save_checkpoint({"state": asdict(self), "model": cpu(tr.model.state_dict()),
                         "optimizer": tr.optimizer.state_dict(), "scheduler": tr.scheduler.state_dict(),
                         "scaler": tr.scaler.state_dict() if tr.scaler else {},
                         "ema": cpu(tr.ema.module.state_dict()) if tr.ema else {}}, path)

    @staticmethod
    def read(path) -> dict:
        """The resume file's contents (read once per resumed fold; `load` puts them in place)."""
        from foldkit.runtime.model import load_checkpoint     # an unreadable file: one ModelError line
        st = load_checkpoint(path)
        if "state" not in st:
            raise TrainError(f"{path} is a resume file of an older foldkit version: delete it to restart "
                             "this fold, or pass --no-resume")
        return st

    @classmethod
    def load(cls, st: dict, tr: Training) -> "FoldState":
        """The state of `read`'s contents, with the model, optimizer, schedule, scaler and EMA restored."""
        tr.model.load_state_dict(st["model"])
        tr.optimizer.load_state_dict(st["optimizer"])
        tr.scheduler.load_state_dict(st["scheduler"])
        if tr.scaler is not None and st["scaler"]:
            tr.scaler.load_state_dict(st["scaler"])
        if tr.ema is not None and st["ema"]:
            tr.ema.module.load_state_dict(st["ema"])
        return cls(**st["state"])


def _validation_scores(metric: str, task: str, probs: np.ndarray, yv: np.ndarray, vloss: float, scale):
    """(metric value, accuracy, loss) of a validation pass; multi-label and regression: no accuracy, the
    loss of foldkit.tasks, regression scored on the de-standardised predictions."""
    from foldkit import metrics
    from foldkit.tasks import valid_loss
    if task == "single":
        return (metrics.score(metric, yv, probs),
                float((probs.argmax(1) == yv).mean()) if len(yv) else float("nan"), vloss)
    scored = scale.restore(probs) if task == "regression" else probs
    return metrics.score(metric, yv, scored), float("nan"), valid_loss(task, probs, yv, scale)


def oof_frame(ids, fold: int, labels, probs: np.ndarray, classes: list, task: str = "single",
              meta: dict | None = None, scale=None) -> pd.DataFrame:
    if task != "single":
        from foldkit.tasks import oof_columns
        return pd.DataFrame({"id": list(ids), "fold": fold, "label": list(labels),
                             **oof_columns(task, meta, probs, scale)})
    # built in one go: a column inserted per class fragments the frame (pandas PerformanceWarning)
    return pd.DataFrame({"id": list(ids), "fold": fold, "label": list(labels),
                         "pred": [classes[i] for i in probs.argmax(1)],
                         **{f"prob_{c}": probs[:, j] for j, c in enumerate(classes)}})


def write_csv(df: pd.DataFrame, path) -> None:
    atomic_write_with(path, lambda tmp: df.to_csv(tmp, index=False, float_format="%.6g"))


def remove_stale_temps(exp: Experiment, fold: int) -> None:
    """Temporary files of this fold's atomic writes left by a killed run (SIGKILL, out of memory): only
    this fold's writer uses these names, so they are removed when the fold starts again."""
    for f in (exp.checkpoint(fold), exp.last_checkpoint(fold), exp.oof(fold), exp.log(fold), exp.curve(fold),
              exp.summary_path(fold), exp.pseudo(fold)):
        for tmp in f.parent.glob(f".{f.name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def augmentation_path(cfg, data_cfg: dict, device, fold: int, resumed: dict | None = None) -> str:
    """--aug-device resolved for this fold: cpu or device (batched, foldkit.data.batchaug). A resumed fold keeps
    the path its resume state (`resumed`, FoldState.read's "state") records, its random draws (older
    states: cpu), whatever auto would choose on this machine; one TrainError line when that path cannot
    run here."""
    from foldkit.data import batchaug
    choice = batchaug.choose(cfg.aug_device, device, data_cfg["input_size"][-1])
    if resumed is not None:
        choice = resumed.get("aug_device", "cpu")
    if choice == "device":
        try:
            batchaug.check_available()
        except FoldkitError as e:
            raise TrainError(f"fold {fold}: {e}" + (" (the fold started with it: pass --no-resume to restart it)"
                                                    if resumed is not None else "")) from None
    return choice


def batch_augment(cfg, data_cfg: dict, seed: int):
    """The batched path's augmentation (foldkit.data.batchaug.BatchAugment) at data_cfg's size, seeded per fold."""
    from foldkit.data.batchaug import BatchAugment
    return BatchAugment(data_cfg, cfg.aug, cfg.hflip, cfg.vflip, cfg.randaugment, seed=seed, rank=distributed.rank())


def describe_sizes(sizes: list[int]) -> str:
    """'epochs 1-5 at 128 px, 6-10 at 224 px': the runs of equal sizes in a list of per-epoch sizes."""
    runs, start = [], 0
    for i in range(1, len(sizes) + 1):
        if i == len(sizes) or sizes[i] != sizes[start]:
            runs.append(f"{start + 1}-{i}" if i - start > 1 else f"{start + 1}")
            runs[-1] += f" at {sizes[start]} px"
            start = i
    return "epochs " + ", ".join(runs)


def at_size(data_cfg: dict, size: int) -> dict:
    """data_cfg's training transforms at `size` px (--img-size-schedule: only the training loader uses it)."""
    if size == data_cfg["input_size"][-1]:
        return data_cfg
    return {**data_cfg, "input_size": [data_cfg["input_size"][0], size, size]}


# --------------------------------------------------------------------------- the fold

def fit_fold(cfg, run: RunData, fold: int, log=print, on_epoch=()) -> dict:
    """Train `fold` (validate on it, train on the others). Returns the fold summary.
    on_epoch: callables `(fold, log row)` called after each epoch's files are written (the row has the
    1-based `epoch` and `valid_metric`): --log's tracker, tune's pruner, auto's deadline. An exception one
    raises stops the fold there, resumable like a kill."""
    from foldkit import metrics
    from foldkit.train import engine
    from foldkit.runtime.model import make_checkpoint, save_checkpoint, set_backbone_frozen, train_mode
    from foldkit.figures import plot_log_curve
    from foldkit.tasks import ACTIVATION, TargetScale
    from foldkit.train.teacher import for_fold

    exp, seed = run.exp, cfg.seed * 100 + fold
    seed_all(seed)
    device = engine.pick_device(cfg.device)
    resumed = FoldState.read(exp.last_checkpoint(fold)) if exp.last_checkpoint(fold).is_file() and cfg.resume else None
    teaching = for_fold(cfg, run, fold, log=log, reuse=resumed is not None)   # soft/pseudo-labels, distillation
    # under torchrun --batch-size is the global batch: each process loads its share (BatchNorm sees
    # that share too, unless --sync-bn computes its statistics over every process's batch)
    per_process = distributed.per_process_batch(cfg.batch_size)
    pcfg = distributed.with_settings(cfg, batch_size=per_process)
    aug_device = augmentation_path(cfg, run.data_cfg, device, fold, resumed["state"] if resumed else None)
    data = fold_loaders(pcfg, run, fold, seed, device, teaching, aug_device)
    valid_dl, sampler, tr_idx, va_idx, counts = data.valid_dl, data.sampler, data.tr_idx, data.va_idx, data.counts
    sizes, stages = epoch_sizes(cfg.img_size_schedule, run.data_cfg["input_size"][-1], cfg.epochs), {}
    if cfg.img_size_schedule:
        log(f"fold {fold}: progressive resizing, " + describe_sizes(sizes) + f" (validation at {eval_size(run.data_cfg)} px)")

    def stage(size: int):   # (training loader, batched augmentation or None) at one size of the schedule
        if size not in stages:
            stages.clear()      # the previous size's loader (and its persistent workers) is done with
            dcfg = at_size(run.data_cfg, size)
            stages[size] = (data.train_dl if dcfg is run.data_cfg else data.train_at(dcfg),
                            batch_augment(cfg, dcfg, seed) if aug_device == "device" else None)
        return stages[size]

    steps_per_epoch = math.ceil(len(data.train_dl) / cfg.accum_steps)
    scale = TargetScale.fit(run.y[tr_idx]) if run.task == "regression" else None
    tr = build_training(cfg if cfg.sync_bn else pcfg, run, counts, steps_per_epoch, log=log, scale=scale,
                        soft_targets=teaching is not None and teaching.targets is not None)
    distill = teaching.distiller.to(tr.device, tr.channels_last) if teaching and teaching.distiller else None
    record = teaching.record if teaching is not None else {}
    train_model = distributed.wrap(tr.model, tr.device, cfg.sync_bn, cfg.compile,
                                   partly_frozen=cfg.freeze_epochs > 0) or tr.run_model
    main = distributed.is_main()     # rank 0 alone writes files (always true without torchrun)
    if main:
        remove_stale_temps(exp, fold)
    state = FoldState(world_size=distributed.world(), teaching=record, aug_device=aug_device)
    if resumed is not None:
        state = FoldState.load(resumed, tr)
        distributed.check_resume(state.world_size, fold)
        if json.loads(json.dumps(state.teaching)) != json.loads(json.dumps(record)):
            raise TrainError(f"fold {fold}: its teachers changed since it started (--soft-labels/--pseudo/--teacher "
                             "files differ from the resume state's): pass --no-resume to restart the fold")
        log(f"fold {fold}: resuming after epoch {state.epochs_done} (best {cfg.metric} {score_text(state.best)}"
            + (f" at epoch {state.best_epoch})" if state.best_epoch else ")"))

    ckpt_info = dict(model_name=cfg.model, classes=run.classes, data_cfg=run.data_cfg, fold=fold,
                     config={**learning_settings(cfg), "experiment": exp.name},
                     folds_sha256=run.meta["sha256_now"],
                     **({"task": run.task} if run.task != "single" else {}),
                     **({"teaching": record} if record else {}),
                     **({"target": scale.to_json(), "num_classes": 1} if scale else {}))   # one output
    t_start = time.time()
    for epoch in range(state.epochs_done, cfg.epochs):       # 0-based here; logs and messages say epoch + 1
        seed_all(seed * 1000 + epoch)
        sampler.set_epoch(epoch)
        train_dl, batch_aug = stage(sizes[epoch])
        if batch_aug is not None:
            batch_aug.set_epoch(epoch)
        frozen = epoch < cfg.freeze_epochs
        set_backbone_frozen(tr.model, frozen)
        desc = f"fold {fold} epoch {epoch + 1}/{cfg.epochs}" + (" (head only)" if frozen else "")
        try:
            ep = engine.train_one_epoch(train_model, train_dl, tr.optimizer, tr.loss_fn, tr.device,
                                        scheduler=tr.scheduler, step0=state.steps, dtype=tr.dtype, scaler=tr.scaler,
                                        mixup=tr.mixup, accum_steps=cfg.accum_steps, clip_grad=cfg.clip_grad,
                                        ema=tr.ema, channels_last=tr.channels_last, desc=desc, progress=cfg.progress,
                                        train_mode=lambda _: train_mode(tr.model, tr.freeze_bn), distill=distill,
                                        batch_aug=batch_aug)
        except FloatingPointError as e:
            raise TrainError(f"fold {fold} epoch {epoch + 1}: {e}. Try a lower --lr (now {cfg.lr:g}), "
                             "--clip-grad 1.0 or --amp off, under a new --experiment name") from None
        state.steps, ep = ep["steps"], distributed.mean_epoch(ep)
        eval_model = tr.ema.module if tr.ema is not None else tr.run_model
        vloss, probs, yv = distributed.evaluate(eval_model, valid_dl, tr.device, dtype=tr.dtype,
                                                channels_last=tr.channels_last, progress=cfg.progress,
                                                activation=ACTIVATION[run.task])
        value, acc, vloss = _validation_scores(cfg.metric, run.task, probs, yv, vloss, scale)
        improved = metrics.is_better(cfg.metric, value, state.best)
        state.log.append({"epoch": epoch + 1, "train_loss": ep["loss"], "train_accuracy": ep["accuracy"],
                          "valid_loss": vloss, "valid_accuracy": acc, "valid_metric": value,
                          "lr": tr.optimizer.param_groups[0]["lr"], "seconds": round(ep["seconds"], 2),
                          "img_per_s": round(ep["img_per_s"], 1),
                          **({"img_size": ep["img_size"]} if cfg.img_size_schedule else {})})
        log(f"fold {fold} epoch {epoch + 1:>3}/{cfg.epochs}  train_loss {ep['loss']:.4f}  valid_loss {vloss:.4f}  "
            f"valid_acc {acc:.4f}  {cfg.metric} {score_text(value)}{' *' if improved else ''}  "
            f"{ep['img_per_s']:.0f} img/s  {ep['seconds']:.1f}s" + ("  [head only]" if frozen else "")
            + (f"  [{ep['img_size']} px]" if cfg.img_size_schedule else ""))
        state.epochs_done = epoch + 1
        if improved or not state.best_epoch:   # the first epoch is kept even when its score is undefined
            state.best, state.best_epoch, state.bad_epochs = value, epoch + 1, 0
            if main:
                save_checkpoint(make_checkpoint(eval_model, epoch=epoch + 1, metric_name=cfg.metric,
                                                metric_value=value, **ckpt_info), exp.checkpoint(fold))
                write_csv(oof_frame(run.table["id"].to_numpy()[va_idx], fold,
                                    run.table["label"].to_numpy()[va_idx], probs, run.classes, run.task,
                                    run.meta, scale), exp.oof(fold))
        else:
            state.bad_epochs += 1
        stop = cfg.patience and state.bad_epochs >= cfg.patience
        if main:
            write_csv(pd.DataFrame(state.log), exp.log(fold))
        if main and state.epochs_done < cfg.epochs and not stop:
            state.save(exp.last_checkpoint(fold), tr)
        for callback in on_epoch:
            callback(fold, state.log[-1])
        if stop:
            log(f"fold {fold}: early stopping after epoch {epoch + 1} ({cfg.patience} epochs without improvement)")
            break
    if main:
        plot_log_curve(pd.DataFrame(state.log), cfg.metric, f"{exp.name} fold {fold}", exp.curve(fold))
    best = None if state.best is None or math.isnan(state.best) else state.best
    summary = {"fold": fold, "best_epoch": state.best_epoch, "metric": cfg.metric, "value": best,
               "epochs_run": len(state.log), "seconds": round(time.time() - t_start, 1),
               "train_rows": int(len(tr_idx)), "valid_rows": int(len(va_idx)),
               "in_chans": run.data_cfg["input_size"][0], "data_config": run.data_cfg, "device": str(tr.device),
               "workers": data.workers, "aug_device": aug_device, "bn_frozen": tr.freeze_bn, **({"teaching": record} if record else {}),
               **({"processes": distributed.world(), "batch_per_process": per_process, "sync_bn": cfg.sync_bn}
                  if distributed.active() else {})}
    if main:
        atomic_write_text(exp.summary_path(fold), json.dumps(summary, indent=2) + "\n")
        if exp.last_checkpoint(fold).is_file():
            exp.last_checkpoint(fold).unlink()
    distributed.barrier()            # the other ranks wait until rank 0 has written the fold
    return summary


def fit_fold_locked(cfg, run: RunData, fold: int, log=print, on_epoch=()) -> dict:
    """fit_fold holding the fold's lock (foldkit.train.foldlock): a second process that starts the same fold of
    the same experiment, here or on another machine, gets one FoldLockError line naming the holder; a fold
    another process finished meanwhile is not trained again. Under torchrun the ranks train one fold
    together and take no lock."""
    from foldkit.train.foldlock import fold_lock
    if distributed.active():
        return fit_fold(cfg, run, fold, log=log, on_epoch=on_epoch)
    with fold_lock(run.exp.lock(fold), fold):
        if run.exp.is_finished(fold):
            log(f"fold {fold}: finished by another process meanwhile, skipped")
            return run.exp.summary(fold)
        return fit_fold(cfg, run, fold, log=log, on_epoch=on_epoch)


def open_run(cfg, log=print, record: bool = True) -> RunData:
    """prepare_run, saying in one line where the images come from: the store (its folder, how many were
    prepared now), or decoding on demand when they do not fit this process's share of the machine's
    memory (foldkit.data.dataset.ImageSource.cache_note), and in one how the augmentation runs (batchaug.describe)."""
    run = prepare_run(cfg, log, record)
    if getattr(run.source, "cache_note", None):
        log(run.source.cache_note)
    if not cfg.devices:           # fold-parallel: each worker says it for its own device
        from foldkit.data import batchaug
        from foldkit.train import engine
        device = engine.pick_device(cfg.device)
        log(batchaug.describe(batchaug.choose(cfg.aug_device, device, run.data_cfg["input_size"][-1]), device,
                              cfg.aug))
    return run


def task_settings(cfg):
    """(cfg, task kind): cfg checked and completed for the competition's task kind (the metric and settings
    that fit it; --soft-labels, --pseudo, --teacher), as train and foldkit.train.lrfind take it."""
    from foldkit.folds.file import read_meta
    from foldkit.tasks import check_settings, task_of
    from foldkit.train.teacher import check_settings as check_teaching
    task = task_of(read_meta(cfg.folds_dir))
    return check_teaching(check_settings(cfg, task), task), task


def resolve_batch(cfg, devices: list, log=print):
    """cfg with --batch-size auto resolved (foldkit.train.autobatch) on the first of `devices`, else cfg.device;
    cfg as it is when a number was given."""
    if cfg.batch_size:
        return cfg
    from foldkit.train.autobatch import resolve
    from foldkit.folds.file import read_meta
    meta = read_meta(cfg.folds_dir)
    first = distributed.with_settings(cfg, device=devices[0]) if devices else cfg
    out = resolve(first, max(1, len(meta["classes"])), int(meta.get("rows") or 0) or 1_000_000, log)
    return distributed.with_settings(out, device=cfg.device)


def train(cfg, log=print, report: Callable | None = None) -> list[dict]:
    """Train the folds of cfg.fold in sequence, skipping finished ones; the competition is opened
    and its training images decoded once for all of them. With --devices, foldkit.train.foldpool trains
    them side by side (each worker runs open_run once and fit_fold per fold). report(exp, folds): the
    experiment's report writer, for --log's tracker at the end (train.py gives it)."""
    from foldkit.train import foldpool
    cfg, log = distributed.setup(cfg, log)          # torchrun: process group, this rank's device
    cfg, task = task_settings(cfg)
    devices = foldpool.parse_devices(cfg.devices) if cfg.devices else []
    cfg = resolve_batch(cfg, devices, log)          # --batch-size auto: measured on this (first) device
    if len(devices) == 1:
        cfg, devices = distributed.with_settings(cfg, device=devices[0], devices=""), []
    # fold-parallel: this process prepares the shared store (the workers then map it), but keeps no RAM copy
    parent_cfg = distributed.with_settings(cfg, cache="off") if devices and cfg.cache in ("ram", "off") else cfg
    run = distributed.main_first(lambda: open_run(parent_cfg, log))
    folds = parse_folds(cfg.fold, int(run.table["fold"].max()) + 1)
    from foldkit.train.trackers import open_tracker   # --log: started before the first fold, main process only
    tracker = open_tracker(cfg, run.exp.name) if distributed.is_main() else None
    train_only = int((run.table["fold"] < 0).sum())
    log(f"experiment {run.exp.name}: {cfg.model}, folds {folds}, {len(run.table)} rows, "
        + ({"single": f"{len(run.classes)} classes ",
            "multilabel": f"{len(run.classes)} labels (multi-label, {cfg.metric}) ",
            "regression": f"regression ({cfg.metric}) "}[task])
        + (f"({train_only} rows of rare classes train-only) " if train_only else "") + f"-> {run.exp.dir}")
    if (tl := run.meta.get("test_like")) and 0 in folds:
        log(f"fold 0 is the test-like fold (its {tl['rows']} rows look most like test, adversarial AUC "
            f"{tl['adversarial_auc']:.3f}): its score estimates the test score")
    out = {}
    for k in folds:
        if run.exp.is_finished(k):
            s = run.exp.summary(k)
            log(f"fold {k}: already finished ({s['metric']} {score_text(s['value'])}), skipped")
            out[k] = s
        elif not devices:
            out[k] = fit_fold_locked(cfg, run, k, log=log, on_epoch=[tracker.on_epoch] if tracker else ())
    if devices and len(out) < len(folds):
        todo = [k for k in dict.fromkeys(folds) if k not in out]
        out.update(foldpool.run_fold_parallel(cfg, todo, prepare=open_run, fit_one=fit_fold_locked, log=log))
    if tracker:
        tracker.finish(run.exp, report)
        log(f"--log {cfg.log}: run {run.exp.name} in {getattr(tracker, 'uri', None) or tracker.dir}")
    return [out[k] for k in folds]
