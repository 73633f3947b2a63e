"""The training settings checked before anything is recorded: the folds to train (--fold), the settings whose
valid values are timm's or this machine's (check_training_settings), the backbone's share of the learning rate
and the per-epoch image sizes of --img-size-schedule. TrainError is the one line a training run stops with."""
from __future__ import annotations

import os

import torch

from foldkit.config import did_you_mean
from foldkit.errors import FoldkitError
from foldkit.runtime.model import check_model_name, data_config, fixed_input_size
from foldkit.runtime.device import pick_device


class TrainError(FoldkitError, RuntimeError):
    """A training run that cannot start or go on as asked; the message says why and what to do."""


# `--fold env`: the task index of a cluster job array (docs/training.md "Folds across machines"), first found
FOLD_ENV = ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")


def parse_folds(spec: str, n_folds: int) -> list[int]:
    if str(spec).strip().lower() == "env":
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


    check_model_name(cfg.model)
    size = data_config(cfg.model, cfg.img_size)["input_size"][-1]      # the training size, resolved
    if fixed_input_size(cfg.model) and (cfg.test_img_size not in (0, size) or cfg.img_size_schedule):
        flag = (f"--test-img-size {cfg.test_img_size}" if cfg.test_img_size not in (0, size)
                else f"--img-size-schedule {cfg.img_size_schedule}")
        raise TrainError(f"{flag}: {cfg.model} is built for one input size (--img-size, now {size}); train "
                         "and evaluate it at that size, or choose a model that takes any size")
    epoch_sizes(cfg.img_size_schedule, size, cfg.epochs)
    pick_device(cfg.device)
    backbone_lr_fraction(cfg)
    if not cfg.batch_size:
        raise TrainError("--batch-size auto is measured before the run is prepared "
                         "(foldkit.train.builder.build_run): pass the settings through it, or give a number")
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
