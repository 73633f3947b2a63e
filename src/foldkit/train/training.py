"""The model of one fold and everything that updates it (`Training`, built by `build_training` from timm):
optimizer, per-step schedule, EMA, mixup and loss. foldkit.train.engine trains one epoch with it,
foldkit.train.lrfind one step at a time, foldkit.train.resume saves and restores it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from foldkit.runtime.model import UnfreezeWarmup, bn_is_folded, choose_bn, create_model, param_groups, train_mode
from foldkit.runtime.device import amp_dtype, pick_device, use_channels_last
from foldkit.tasks import TASKS, build_loss, multi_hot_mixup, n_outputs
from foldkit.train.checks import backbone_lr_fraction


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
    accum_steps: int = 1              # batches per optimizer step (--accum-steps)
    clip_grad: float = 0.0            # gradient norm clipped to this (--clip-grad; 0 = off)

    def train_mode(self) -> None:
        """The model in training mode, its BatchNorm statistics frozen when freeze_bn says so."""
        train_mode(self.model, self.freeze_bn)


def build_training(cfg, run, counts: np.ndarray, steps_per_epoch: int, log=print,
                   scale=None, soft_targets: bool = False) -> Training:
    """The fold's Training (run: foldkit.train.builder.RunData). soft_targets: the training targets are
    probability rows (foldkit.train.teacher: --soft-labels, --pseudo; label smoothing already in them):
    SoftTargetCrossEntropy, and mixup mixes the rows."""
    from timm.utils import ModelEmaV3

    device = pick_device(cfg.device)
    channels_last = use_channels_last(cfg.channels_last, device)
    model, freeze_bn, why = build_model(cfg, run, device, channels_last)
    optimizer, scheduler = build_optimizer(cfg, model, steps_per_epoch)
    backbone_lr = backbone_lr_fraction(cfg)
    log(f"BatchNorm statistics {'frozen' if freeze_bn else 'trained'} ({why}); LR head {cfg.lr:g}, backbone "
        f"{cfg.lr * backbone_lr:g}" + (f" with layer decay {cfg.layer_decay}" if cfg.layer_decay else "")
        + (f", ramped up over {cfg.unfreeze_warmup:g} epoch(s) after {cfg.freeze_epochs} head-only epoch(s)"
           if cfg.freeze_epochs else ""))
    mixup, loss_fn = build_loss_and_mixup(cfg, run, counts, device, scale, soft_targets, log)
    dtype = amp_dtype(device, cfg.amp)
    return Training(model=model, run_model=torch.compile(model) if cfg.compile else model, optimizer=optimizer,
                    scheduler=scheduler,
                    scaler=torch.amp.GradScaler(device.type) if dtype == torch.float16 else None,
                    ema=ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema else None,
                    mixup=mixup, loss_fn=loss_fn, freeze_bn=freeze_bn, device=device, dtype=dtype,
                    channels_last=channels_last, accum_steps=cfg.accum_steps, clip_grad=cfg.clip_grad)


def build_model(cfg, run, device, channels_last: bool) -> tuple:
    """(the model on the device, whether its BatchNorm statistics stay frozen, why)."""
    model = create_model(cfg.model, n_outputs(run.task, run.classes), run.data_cfg["input_size"][0], cfg.pretrained,
                         cfg.pretrained_file, cfg.drop_rate, cfg.drop_path, img_size=run.data_cfg["input_size"][-1])
    pretrained = bool(cfg.pretrained or cfg.pretrained_file)
    freeze_bn, why = choose_bn(cfg.bn, pretrained, pretrained and bn_is_folded(model), cfg.batch_size)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model, freeze_bn, why


def build_optimizer(cfg, model, steps_per_epoch: int) -> tuple:
    """(timm optimizer over the parameter groups: head at --lr, backbone at --backbone-lr x lr, --layer-decay;
    its per-step schedule, ramping the backbone up after --freeze-epochs)."""
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    groups = param_groups(model, cfg.weight_decay, backbone_lr_fraction(cfg), cfg.layer_decay)
    optimizer = create_optimizer_v2(groups, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler, _ = create_scheduler_v2(optimizer, sched=cfg.sched, num_epochs=cfg.epochs,
                                       warmup_epochs=cfg.warmup_epochs, warmup_lr=cfg.lr * 0.01,
                                       min_lr=cfg.min_lr, step_on_epochs=False, updates_per_epoch=steps_per_epoch)
    if cfg.freeze_epochs:
        scheduler = UnfreezeWarmup(scheduler, optimizer, start=cfg.freeze_epochs * steps_per_epoch,
                                   steps=round(cfg.unfreeze_warmup * steps_per_epoch))
    return optimizer, scheduler


def build_loss_and_mixup(cfg, run, counts, device, scale, soft_targets: bool, log=print) -> tuple:
    """(mixup or None, the loss): the task's loss (foldkit.tasks) for multi-label and regression; soft targets
    and mixup/cutmix: SoftTargetCrossEntropy; else cross-entropy, class-weighted with --balance weights."""
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy

    n = n_outputs(run.task, run.classes)
    mixing = cfg.mixup > 0 or cfg.cutmix > 0
    if not TASKS[run.task].exclusive:
        return (multi_hot_mixup(cfg, n) if mixing else None), build_loss(run.task, cfg, scale)
    if soft_targets:
        return (multi_hot_mixup(cfg, n) if mixing else None), SoftTargetCrossEntropy()
    if mixing:
        if cfg.batch_size % 2:
            log(f"--batch-size {cfg.batch_size} is odd: mixup/cutmix mix pairs, so each batch trains on "
                f"{cfg.batch_size - 1} images (its last one is left out)")
        return (Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing,
                      num_classes=n), SoftTargetCrossEntropy())
    w = None
    if cfg.balance == "weights":
        w = torch.tensor(counts.sum() / (n * np.maximum(counts, 1)), dtype=torch.float32, device=device)
    return None, torch.nn.CrossEntropyLoss(weight=w, label_smoothing=cfg.label_smoothing)
