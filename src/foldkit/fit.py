"""Train one fold: the whole training path in one readable loop.

    fit_fold(cfg, fold)  ->  models/<experiment>/fold{k}.pt       best checkpoint (self-describing)
                             models/<experiment>/fold{k}_last.pt  resume checkpoint, removed when done
                             models/<experiment>/oof_fold{k}.csv  out-of-fold probabilities, best epoch
                             models/<experiment>/log_fold{k}.csv  one row per epoch (+ curve_fold{k}.png)
                             models/<experiment>/fold{k}.json     written last: the fold is finished

Reproducibility (hand-written, no library does it for DataLoaders): every
epoch reseeds the main process from (seed, fold, epoch), and every sample's
augmentation is seeded from (epoch seed, sample index) inside the worker, so
a run resumed at any epoch boundary continues exactly like one never stopped,
whatever the number of workers.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from foldkit import config as cfgmod
from foldkit.errors import FoldkitError
from foldkit.io import atomic_write_text, atomic_write_with

EXP_CONFIG = "config.json"


class TrainError(FoldkitError, RuntimeError):
    """A training run that cannot start as asked; the message says why and what to do."""


# --------------------------------------------------------------------------- experiment

def learning_settings(cfg) -> dict:
    """The settings that decide what a run learns (experiment identity): the training and
    data-reading settings and the seed. The folds themselves are identified by their hash."""
    groups = {f.name: f.metadata["group"] for f in dataclasses.fields(cfg)}
    return {k: v for k, v in cfg.to_dict().items()
            if (groups[k] in ("train", "data") or k == "seed") and k not in cfgmod.RUN_ONLY}


def experiment_name(cfg) -> str:
    if cfg.experiment:
        return cfg.experiment
    h = hashlib.sha256(json.dumps(learning_settings(cfg), sort_keys=True).encode()).hexdigest()[:6]
    size = f"-{cfg.img_size}px" if cfg.img_size else ""
    return f"{cfg.model}{size}-{h}"


def prepare_experiment(cfg, folds_meta: dict) -> tuple[Path, dict]:
    """Create models/<exp>/config.json, or check that an existing one has the same settings and folds."""
    name = experiment_name(cfg)
    exp_dir = Path(cfg.models_dir) / name
    record = {**cfg.to_dict(), "experiment": name, "folds_sha256": folds_meta["sha256_now"],
              "classes": folds_meta["classes"], "n_folds": folds_meta.get("n_folds"),
              "layout": folds_meta.get("layout")}
    path = exp_dir / EXP_CONFIG
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("folds_sha256") != record["folds_sha256"]:
            raise TrainError(f"experiment {name!r} was trained on other folds (folds file changed since: sha256 "
                             f"{str(old.get('folds_sha256'))[:12]} -> {record['folds_sha256'][:12]}). "
                             "Its checkpoints and OOF predictions would not mix: use a new --experiment name.")
        diff = {k: (old.get(k), v) for k, v in learning_settings(cfg).items() if old.get(k) != v}
        if diff:
            desc = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in ((k, *d) for k, d in sorted(diff.items())))
            raise TrainError(f"experiment {name!r} exists with other settings ({desc}). "
                             "Use another --experiment name, or the same settings to continue it.")
    else:
        cfgmod.save(record, path)
    return exp_dir, record


def parse_folds(spec: str, n_folds: int) -> list[int]:
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


# --------------------------------------------------------------------------- data

class EpochSampler(torch.utils.data.Sampler):
    """Shuffled (or class-balanced) order per epoch; yields epoch * n + index so that the
    dataset can seed each sample's augmentation from (epoch, index)."""

    def __init__(self, n: int, seed: int, shuffle: bool = True, weights: np.ndarray | None = None):
        self.n, self.seed, self.shuffle, self.weights, self.epoch = n, seed, shuffle, weights, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.weights is not None:
            order = rng.choice(self.n, size=self.n, replace=True, p=self.weights / self.weights.sum())
        elif self.shuffle:
            order = rng.permutation(self.n)
        else:
            order = np.arange(self.n)
        return iter((self.epoch * self.n + order).tolist())


class SeededDataset(torch.utils.data.Dataset):
    """Wraps an ImageDataset: index epoch*n+i -> sample i with augmentation seeded by (seed, epoch, i)."""

    def __init__(self, ds, seed: int):
        self.ds, self.seed = ds, seed

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, k: int):
        n = len(self.ds)
        epoch, i = divmod(k, n)
        # the CPU generator only: torch.manual_seed also queues CUDA seeding (slow, ~1 ms a call)
        torch.default_generator.manual_seed((self.seed * 1_000_003 + epoch * 100_003 + i) % (2**63))
        return self.ds[i]


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def auto_workers(cfg, cached: bool) -> int:
    if cfg.workers >= 0:
        return cfg.workers
    n = os.cpu_count() or 1
    if n <= 2:
        return 0 if cached else n          # 2 cores: the model needs them more than a loader process
    return min(8, n - 1) if not cached else min(4, n - 1)


def build_data(cfg, comp, table: pd.DataFrame, class_index: dict, data_cfg: dict, grey: bool):
    """Training/validation datasets for a fold table (fold column decides), with their transforms."""
    from foldkit.augment import eval_transform, train_transform
    from foldkit.dataset import ImageSource

    size = data_cfg["input_size"][-1]
    max_side = int(math.ceil(size / (data_cfg.get("crop_pct") or 1.0) * 1.5))
    source = ImageSource(comp, table, "train", grey=grey, cache=cfg.cache, max_side=max_side,
                         progress=cfg.progress)
    y = np.array([class_index[str(v)] for v in table["label"]], dtype=np.int64)
    return source, y, train_transform(data_cfg, cfg.aug, cfg.hflip, cfg.vflip, cfg.randaugment), \
        eval_transform(data_cfg)


# --------------------------------------------------------------------------- plots and logs

def plot_curves(log: pd.DataFrame, metric: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot(log["epoch"], log["train_loss"], "o-", label="train")
    ax[0].plot(log["epoch"], log["valid_loss"], "o-", label="valid")
    ax[0].set_title("loss")
    if log["train_accuracy"].notna().any():
        ax[1].plot(log["epoch"], log["train_accuracy"], "o-", label="train accuracy")
    ax[1].plot(log["epoch"], log["valid_accuracy"], "o-", label="valid accuracy")
    if metric != "accuracy":
        ax[1].plot(log["epoch"], log["valid_metric"], "o-", label=f"valid {metric}")
    ax[1].set_title("metric")
    for a in ax:
        a.set_xlabel("epoch")
        a.legend()
        a.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)


def oof_frame(ids, fold: int, labels, probs: np.ndarray, classes: list) -> pd.DataFrame:
    df = pd.DataFrame({"id": list(ids), "fold": fold, "label": list(labels),
                       "pred": [classes[i] for i in probs.argmax(1)]})
    for j, c in enumerate(classes):
        df[f"prob_{c}"] = probs[:, j]
    return df


def write_csv(df: pd.DataFrame, path: Path) -> None:
    atomic_write_with(path, lambda tmp: df.to_csv(tmp, index=False, float_format="%.6g"))


# --------------------------------------------------------------------------- the fold

def fit_fold(cfg, fold: int, *, comp=None, table=None, meta=None, exp_dir=None, log=print) -> dict:
    """Train `fold` (validate on it, train on the others). Returns the fold summary."""
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import ModelEmaV3

    from foldkit import engine, metrics
    from foldkit.data import read_competition
    from foldkit.dataset import ImageDataset
    from foldkit.folds import read_folds
    from foldkit.model import (create_model, data_config, load_checkpoint, make_checkpoint, save_checkpoint,
                               set_backbone_frozen, train_mode)

    if table is None:
        table, meta = read_folds(cfg.folds_dir)
    if comp is None:
        from foldkit.folds import input_dir_for
        comp = read_competition(input_dir_for(cfg, meta), id_col=cfg.id_col or meta.get("id_col", ""),
                                label_col=cfg.label_col or meta.get("label_col", ""), check_files=False)
    if exp_dir is None:
        exp_dir, _ = prepare_experiment(cfg, meta)
    classes = meta["classes"]
    class_index = {str(c): i for i, c in enumerate(classes)}
    seed = cfg.seed * 100 + fold
    seed_all(seed)
    device = engine.pick_device(cfg.device)
    dtype = engine.amp_dtype(device, cfg.amp)
    channels_last = cfg.channels_last == "on" or (cfg.channels_last == "auto" and device.type == "cuda")

    # ---- data and model
    from foldkit.dataset import detect_grey
    grey = (cfg.in_chans == 1) if cfg.in_chans else detect_grey(comp, table)
    in_chans = 1 if grey else 3
    model = create_model(cfg.model, len(classes), in_chans, cfg.pretrained, cfg.pretrained_file,
                         cfg.drop_rate, cfg.drop_path)
    data_cfg = data_config(model, cfg.img_size, in_chans)
    if cfg.crop_pct:
        data_cfg["crop_pct"] = cfg.crop_pct
    source, y_all, t_train, t_eval = build_data(cfg, comp, table, class_index, data_cfg, grey)
    tr_idx = np.flatnonzero(table["fold"].to_numpy() != fold)
    va_idx = np.flatnonzero(table["fold"].to_numpy() == fold)
    Subset = torch.utils.data.Subset
    train_ds = SeededDataset(Subset(ImageDataset(source, y_all, t_train), tr_idx.tolist()), seed)
    valid_ds = Subset(ImageDataset(source, y_all, t_eval), va_idx.tolist())
    counts = np.bincount(y_all[tr_idx], minlength=len(classes)).astype(np.float64)
    weights = (1.0 / np.maximum(counts, 1))[y_all[tr_idx]] if cfg.balance == "sampler" else None
    sampler = EpochSampler(len(tr_idx), seed, shuffle=True, weights=weights)
    workers = auto_workers(cfg, source.cached is not None or source.array is not None)
    loader_kw = dict(num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    if workers > 0:
        loader_kw["prefetch_factor"] = 4
    drop_last = len(tr_idx) > cfg.batch_size
    train_dl = torch.utils.data.DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler,
                                           drop_last=drop_last, **loader_kw)
    valid_dl = torch.utils.data.DataLoader(valid_ds, batch_size=cfg.batch_size * 2, shuffle=False, **loader_kw)

    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer_v2(model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_dl) / cfg.accum_steps)
    scheduler, _ = create_scheduler_v2(optimizer, sched=cfg.sched, num_epochs=cfg.epochs,
                                       warmup_epochs=cfg.warmup_epochs, warmup_lr=cfg.lr * 0.01,
                                       min_lr=cfg.min_lr, step_on_epochs=False, updates_per_epoch=steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema else None
    mixup = None
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing,
                      num_classes=len(classes))
        loss_fn = SoftTargetCrossEntropy()
    else:
        w = None
        if cfg.balance == "weights":
            w = torch.tensor(counts.sum() / (len(classes) * np.maximum(counts, 1)), dtype=torch.float32, device=device)
        loss_fn = torch.nn.CrossEntropyLoss(weight=w, label_smoothing=cfg.label_smoothing)
    run_model = torch.compile(model) if cfg.compile else model

    # ---- resume
    last_path, best_path = exp_dir / f"fold{fold}_last.pt", exp_dir / f"fold{fold}.pt"
    start_epoch, steps, best, best_epoch, bad_epochs, rows = 0, 0, None, -1, 0, []
    if last_path.is_file() and cfg.resume:
        st = load_checkpoint(last_path)
        model.load_state_dict(st["state_dict"])
        optimizer.load_state_dict(st["optimizer"])
        scheduler.load_state_dict(st["scheduler"])
        if scaler is not None and st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        if ema is not None and st.get("ema"):
            ema.module.load_state_dict(st["ema"])
        start_epoch, steps, bad_epochs = st["epoch"] + 1, st["steps"], st["bad_epochs"]
        best, best_epoch, rows = st["best"], st["best_epoch"], st["log"]
        log(f"fold {fold}: resuming after epoch {st['epoch']} (best {cfg.metric} {best:.5f} at epoch {best_epoch})")

    base = dict(model_name=cfg.model, classes=classes, data_cfg=data_cfg, fold=fold,
                config=learning_settings(cfg) | {"experiment": exp_dir.name}, folds_sha256=meta["sha256_now"])
    t_start = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        seed_all(seed * 1000 + epoch)
        sampler.set_epoch(epoch)
        frozen = epoch < cfg.freeze_epochs
        set_backbone_frozen(model, frozen)
        tr = engine.train_one_epoch(run_model, train_dl, optimizer, loss_fn, device, scheduler=scheduler,
                                    step0=steps, dtype=dtype, scaler=scaler, mixup=mixup,
                                    accum_steps=cfg.accum_steps, clip_grad=cfg.clip_grad, ema=ema,
                                    channels_last=channels_last, train_mode=train_mode,
                                    desc=f"fold {fold} epoch {epoch + 1}/{cfg.epochs}" + (" (head only)" if frozen else ""),
                                    progress=cfg.progress)
        steps = tr["steps"]
        eval_model = ema.module if ema is not None else run_model
        vloss, probs, yv = engine.evaluate(eval_model, valid_dl, device, dtype=dtype, channels_last=channels_last,
                                           progress=cfg.progress)
        value = metrics.score(cfg.metric, yv, probs)
        acc = float((probs.argmax(1) == yv).mean())
        improved = metrics.is_better(cfg.metric, value, best)
        rows.append({"epoch": epoch + 1, "train_loss": tr["loss"], "train_accuracy": tr["accuracy"],
                     "valid_loss": vloss, "valid_accuracy": acc, "valid_metric": value,
                     "lr": optimizer.param_groups[0]["lr"], "seconds": round(tr["seconds"], 2),
                     "img_per_s": round(tr["img_per_s"], 1)})
        log(f"fold {fold} epoch {epoch + 1:>3}/{cfg.epochs}  train_loss {tr['loss']:.4f}  valid_loss {vloss:.4f}  "
            f"valid_acc {acc:.4f}  {cfg.metric} {value:.5f}{' *' if improved else ''}  "
            f"{tr['img_per_s']:.0f} img/s  {tr['seconds']:.1f}s" + ("  [head only]" if frozen else ""))
        if improved:
            best, best_epoch, bad_epochs = value, epoch + 1, 0
            save_checkpoint(make_checkpoint(eval_model, epoch=epoch + 1, metric_name=cfg.metric,
                                            metric_value=value, **base), best_path)
            write_csv(oof_frame(table["id"].to_numpy()[va_idx], fold, table["label"].to_numpy()[va_idx],
                                probs, classes), exp_dir / f"oof_fold{fold}.csv")
        else:
            bad_epochs += 1
        stop = cfg.patience and bad_epochs >= cfg.patience
        write_csv(pd.DataFrame(rows), exp_dir / f"log_fold{fold}.csv")
        if epoch + 1 < cfg.epochs and not stop:
            save_checkpoint({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                             "scaler": scaler.state_dict() if scaler else {},
                             "ema": {k: v.cpu() for k, v in ema.module.state_dict().items()} if ema else {},
                             "epoch": epoch, "steps": steps, "best": best, "best_epoch": best_epoch,
                             "bad_epochs": bad_epochs, "log": rows,
                             "rng": {"torch": torch.get_rng_state()}}, last_path)
        if stop:
            log(f"fold {fold}: early stopping after epoch {epoch + 1} ({cfg.patience} epochs without improvement)")
            break
    plot_curves(pd.DataFrame(rows), cfg.metric, exp_dir / f"curve_fold{fold}.png")
    summary = {"fold": fold, "best_epoch": best_epoch, "metric": cfg.metric, "value": best,
               "epochs_run": len(rows), "seconds": round(time.time() - t_start, 1),
               "train_rows": int(len(tr_idx)), "valid_rows": int(len(va_idx)), "in_chans": in_chans,
               "data_config": data_cfg, "device": str(device), "workers": workers}
    atomic_write_text(exp_dir / f"fold{fold}.json", json.dumps(summary, indent=2) + "\n")
    if last_path.is_file():
        last_path.unlink()
    return summary


def train(cfg, log=print) -> list[dict]:
    """Train the folds of cfg.fold in sequence, skipping finished ones."""
    from foldkit.data import read_competition
    from foldkit.folds import read_folds

    table, meta = read_folds(cfg.folds_dir)
    if meta.get("sha256") and meta["sha256"] != meta["sha256_now"]:
        raise TrainError(f"{Path(cfg.folds_dir) / 'train_folds.csv'} was changed after make_folds wrote it "
                         "(hash differs from folds_meta.json): re-run make_folds.py")
    if cfg.metric not in ("accuracy", "logloss", "f1_macro", "qwk", "auc"):
        raise TrainError(f"unknown --metric {cfg.metric}")
    if cfg.balance == "weights" and (cfg.mixup > 0 or cfg.cutmix > 0):
        raise TrainError("--balance weights does not combine with mixup/cutmix (soft targets carry no class "
                         "weights): use --balance sampler")
    folds = parse_folds(cfg.fold, int(table["fold"].max()) + 1)
    from foldkit.folds import input_dir_for
    comp = read_competition(input_dir_for(cfg, meta), id_col=cfg.id_col or meta.get("id_col", ""),
                            label_col=cfg.label_col or meta.get("label_col", ""), check_files=False)
    exp_dir, _ = prepare_experiment(cfg, meta)
    log(f"experiment {exp_dir.name}: {cfg.model}, folds {folds}, {len(table)} rows, {len(meta['classes'])} classes "
        f"-> {exp_dir}")
    out = []
    for k in folds:
        if (exp_dir / f"fold{k}.json").is_file() and (exp_dir / f"fold{k}.pt").is_file():
            s = json.loads((exp_dir / f"fold{k}.json").read_text())
            log(f"fold {k}: already finished ({s['metric']} {s['value']:.5f}), skipped")
            out.append(s)
            continue
        out.append(fit_fold(cfg, k, comp=comp, table=table, meta=meta, exp_dir=exp_dir, log=log))
    return out
