"""One fold's rows and loaders (`fold_loaders`), where its augmentation runs (`augmentation_path`: per image
in the DataLoader, or batched on the device with `batch_augment`) and the per-epoch image sizes of
--img-size-schedule (`at_size`, `describe_sizes`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from foldkit.data import batchaug
from foldkit.data.augment import eval_transform, train_transform
from foldkit.data.dataset import EpochSampler, ImageDataset, SeededDataset, auto_workers
from foldkit.errors import FoldkitError
from foldkit.runtime import distributed
from foldkit.tasks import TASKS
from foldkit.train.checks import TrainError


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


def fold_loaders(cfg, run, fold: int, seed: int, device, teaching=None, aug_device: str = "cpu") -> FoldData:
    """The fold's rows and loaders. Rows with fold -1 (train-only rare classes) are in the training part
    of every fold. teaching (foldkit.train.teacher): the training rows' soft targets, and the pseudo-labelled
    images that follow them in the training part. aug_device "device": the training loader only gathers
    fixed-size uint8 images (foldkit.data.batchaug). run: foldkit.train.builder.RunData."""
    folds = run.table["fold"].to_numpy()
    tr_idx, va_idx = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    Subset = torch.utils.data.Subset
    y_train = teaching.targets if teaching is not None and teaching.targets is not None else run.y
    extras = teaching.extra if teaching is not None and teaching.extra else []   # pseudo-labelled sources

    def training_part(data_cfg: dict):
        t_train = (batchaug.gather_transform(data_cfg, cfg.aug) if aug_device == "device"
                   else train_transform(data_cfg, cfg.aug, cfg.hflip, cfg.vflip, cfg.randaugment))
        part = Subset(ImageDataset(run.source, y_train, t_train), tr_idx.tolist())
        if extras:
            part = torch.utils.data.ConcatDataset([part] + [ImageDataset(src, t, t_train) for src, t in extras])
        return part

    n_train = len(tr_idx) + sum(len(src) for src, _ in extras)
    valid_ds = Subset(ImageDataset(run.source, run.y, eval_transform(run.data_cfg)),
                      distributed.shard_rows(va_idx).tolist())
    hard = teaching.hard_labels(run.y[tr_idx]) if teaching is not None else run.y[tr_idx]
    counts = (np.bincount(hard, minlength=len(run.classes)).astype(np.float64) if TASKS[run.task].exclusive
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



def augmentation_path(cfg, data_cfg: dict, device, fold: int, resumed: dict | None = None) -> str:
    """--aug-device resolved for this fold: cpu or device (batched, foldkit.data.batchaug). A resumed fold keeps
    the path its resume state (`resumed`, FoldState.read's "state") records, its random draws (older
    states: cpu), whatever auto would choose on this machine; one TrainError line when that path cannot
    run here."""
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
    return batchaug.BatchAugment(data_cfg, cfg.aug, cfg.hflip, cfg.vflip, cfg.randaugment, seed=seed, rank=distributed.rank())


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
