"""Train one fold: the whole training path in one readable loop.

    train(cfg)  gets its run from foldkit.train.builder.build_run (settings settled, competition opened,
                training images decoded once), then for each fold:
    fit_fold -> models/<experiment>/fold{k}.pt       best checkpoint (self-describing)
                models/<experiment>/fold{k}_last.pt  resume state, removed when done
                models/<experiment>/oof_fold{k}.csv  out-of-fold probabilities, best epoch
                models/<experiment>/log_fold{k}.csv  one row per epoch (+ curve_fold{k}.png)
                models/<experiment>/fold{k}.json     written last: the fold is finished

File names come from foldkit.experiment; the fold's rows and loaders from foldkit.train.loaders (the
reproducible epoch order and per-sample seeding: foldkit.data.dataset); optimizer, schedule, EMA, mixup and
loss from timm (foldkit.train.training); the resume state from foldkit.train.resume; one epoch from
foldkit.train.engine; how each epoch is scored and which one is kept from foldkit.train.selection.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch

from foldkit.config import learning_settings, with_settings
from foldkit.data.images import eval_size
from foldkit.experiment import Experiment
from foldkit.figures import plot_log_curve
from foldkit.io import atomic_write_text, atomic_write_with
from foldkit.oof import score_text
from foldkit.runtime import distributed
from foldkit.runtime.device import pick_device, set_deterministic
from foldkit.runtime.model import make_checkpoint, save_checkpoint, set_backbone_frozen
from foldkit.tasks import TASKS, oof_columns
from foldkit.train import engine
from foldkit.train.builder import RunData, build_run, open_run
from foldkit.train.checks import TrainError, epoch_sizes, parse_folds
from foldkit.train.foldlock import fold_lock
from foldkit.train.foldpool import run_fold_parallel
from foldkit.train import oof_tta       # the OOF with predict.py's TTA views
from foldkit.train.loaders import FoldData, at_size, augmentation_path, batch_augment, describe_sizes, fold_loaders
from foldkit.train.resume import FoldState
from foldkit.train.selection import EpochRule, beats_constant, epoch_rule, fold_constant, keeps, score_epoch
from foldkit.train.teacher import for_fold
from foldkit.train.trackers import open_tracker
from foldkit.train.training import Training, build_training

def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def oof_frame(ids, fold: int, labels, probs: np.ndarray, classes: list, task: str = "single",
              meta: dict | None = None, scale=None) -> pd.DataFrame:
    if not TASKS[task].exclusive:
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
              exp.summary_path(fold), exp.pseudo(fold), exp.oof_tta(fold)):
        for tmp in f.parent.glob(f".{f.name}.*.tmp"):
            tmp.unlink(missing_ok=True)



# --------------------------------------------------------------------------- the fold

@dataclass
class FoldRun:
    """Everything one fold's epochs share (start_fold builds it)."""
    cfg: object
    run: RunData
    fold: int
    seed: int
    data: FoldData
    tr: Training
    state: FoldState
    aug_device: str                  # cpu | device: where the augmentation runs (loaders.augmentation_path)
    sizes: list                      # the training image size of every epoch (--img-size-schedule)
    train_model: torch.nn.Module     # what the step runs: the DDP-wrapped model under torchrun
    distill: object                  # foldkit.train.teacher.Distiller, or None
    record: dict                     # the fold's teacher record (foldkit.train.teacher)
    scale: object                    # regression: the target's TargetScale, else None
    per_process: int                 # this process's share of --batch-size
    main: bool                       # rank 0 (always without torchrun): it alone writes files
    rule: EpochRule                  # what each epoch is scored and kept by (foldkit.train.selection)
    constant: dict                   # the constant answer on this fold's validation rows: {value, what}
    stages: dict = field(default_factory=dict)

    def stage(self, size: int) -> tuple:
        """(training loader, batched augmentation or None) at one size of the schedule."""
        if size not in self.stages:
            self.stages.clear()      # the previous size's loader (and its persistent workers) is done with
            dcfg = at_size(self.run.data_cfg, size)
            self.stages[size] = (self.data.train_dl if dcfg is self.run.data_cfg else self.data.train_at(dcfg),
                                 batch_augment(self.cfg, dcfg, self.seed) if self.aug_device == "device" else None)
        return self.stages[size]

    def checkpoint_info(self) -> dict:
        cfg, run = self.cfg, self.run
        return dict(model_name=cfg.model, classes=run.classes, data_cfg=run.data_cfg, fold=self.fold,
                    config={**learning_settings(cfg), "experiment": run.exp.name},
                    folds_sha256=run.meta["sha256_now"],
                    **({"task": run.task} if run.task != "single" else {}),
                    **({"teaching": self.record} if self.record else {}),
                    **({"target": self.scale.to_json(), "num_classes": 1} if self.scale else {}))   # one output


def fit_fold(cfg, run: RunData, fold: int, log=print, on_epoch=()) -> dict:
    """Train `fold` (validate on it, train on the others). Returns the fold summary.
    on_epoch: callables `(fold, log row)` called after each epoch's files are written (the row has the
    1-based `epoch` and `valid_metric`; after the last epoch, fold{k}.json is written first): --log's tracker,
    tune's pruner, auto's deadline. An exception one raises stops the fold there, resumable like a kill (after
    the last epoch the fold is finished already)."""
    f = start_fold(cfg, run, fold, log)
    t_start = time.time()
    for epoch in range(f.state.epochs_done, cfg.epochs):       # 0-based here; logs and messages say epoch + 1
        stop = run_epoch(f, epoch, log)
        if stop:
            log(f"fold {fold}: early stopping after epoch {epoch + 1} ({cfg.patience} epochs without improvement)")
        # the fold's last epoch: fold{k}.json first, so a callback that stops the run leaves the fold finished
        summary = finish_fold(f, time.time() - t_start, log) if stop or epoch + 1 == cfg.epochs else None
        for callback in on_epoch:
            callback(fold, f.state.log[-1])
        if summary is not None:
            return summary
    return finish_fold(f, time.time() - t_start, log)


def start_fold(cfg, run: RunData, fold: int, log=print) -> FoldRun:
    """The fold's teaching, loaders, Training and state (resumed from fold{k}_last.pt when there is one)."""
    exp, seed = run.exp, cfg.seed * 100 + fold
    seed_all(seed)
    set_deterministic(cfg.deterministic)     # in every process that trains: workers, torchrun ranks
    device = pick_device(cfg.device)
    resumed = FoldState.read(exp.last_checkpoint(fold)) if exp.last_checkpoint(fold).is_file() and cfg.resume else None
    teaching = for_fold(cfg, run, fold, log=log, reuse=resumed is not None)   # soft/pseudo-labels, distillation
    # under torchrun --batch-size is the global batch: each process loads its share (BatchNorm sees
    # that share too, unless --sync-bn computes its statistics over every process's batch)
    per_process = distributed.per_process_batch(cfg.batch_size)
    pcfg = with_settings(cfg, batch_size=per_process)
    aug_device = augmentation_path(cfg, run.data_cfg, device, fold, resumed["state"] if resumed else None)
    data = fold_loaders(pcfg, run, fold, seed, device, teaching, aug_device)
    sizes = epoch_sizes(cfg.img_size_schedule, run.data_cfg["input_size"][-1], cfg.epochs)
    if cfg.img_size_schedule:
        log(f"fold {fold}: progressive resizing, " + describe_sizes(sizes) + f" (validation at {eval_size(run.data_cfg)} px)")
    scale = TASKS[run.task].target_scale(cfg.metric, run.y[data.tr_idx])   # regression: its standardisation
    tr = build_training(cfg if cfg.sync_bn else pcfg, run, data.counts, math.ceil(len(data.train_dl) / cfg.accum_steps),
                        log=log, scale=scale, soft_targets=teaching is not None and teaching.targets is not None)
    distill = teaching.distiller.to(tr.device, tr.channels_last) if teaching and teaching.distiller else None
    record = teaching.record if teaching is not None else {}
    train_model = distributed.wrap(tr.model, tr.device, cfg.sync_bn, cfg.compile,
                                   partly_frozen=cfg.freeze_epochs > 0) or tr.run_model
    main = distributed.is_main()
    if main:
        remove_stale_temps(exp, fold)
    state = resume_state(cfg, fold, resumed, tr, record, aug_device, log)
    constant = fold_constant(run.task, cfg.metric, run.y[data.tr_idx], run.y[data.va_idx], len(run.classes))
    log(f"fold {fold}: the constant answer ({constant['what']}, from the training rows) scores {cfg.metric} "
        f"{score_text(constant['value'])} on the validation rows")
    return FoldRun(cfg, run, fold, seed, data, tr, state, aug_device, sizes, train_model, distill, record, scale,
                   per_process, main, epoch_rule(cfg.metric, run.task, len(run.classes)), constant)


def resume_state(cfg, fold: int, resumed: dict | None, tr: Training, record: dict, aug_device: str,
                 log=print) -> FoldState:
    """A new fold's state, or the resumed one with the Training restored; a fold whose teachers changed since
    it started is refused."""
    if resumed is None:
        return FoldState(world_size=distributed.world(), teaching=record, aug_device=aug_device)
    state = FoldState.load(resumed, tr)
    distributed.check_resume(state.world_size, fold)
    if json.loads(json.dumps(state.teaching)) != json.loads(json.dumps(record)):
        raise TrainError(f"fold {fold}: its teachers changed since it started (--soft-labels/--pseudo/--teacher "
                         "files differ from the resume state's): pass --no-resume to restart the fold")
    log(f"fold {fold}: resuming after epoch {state.epochs_done} (best {cfg.metric} {score_text(state.best)}"
        + (f" at epoch {state.best_epoch})" if state.best_epoch else ")"))
    return state


def run_epoch(f: FoldRun, epoch: int, log=print) -> bool:
    """One epoch: train, validate, keep the best epoch's checkpoint and OOF, write the log and the resume
    state. Returns whether early stopping ends the fold here."""
    cfg, tr, state = f.cfg, f.tr, f.state
    frozen = epoch < cfg.freeze_epochs
    ep = train_epoch(f, epoch, frozen)
    eval_model = tr.ema.module if tr.ema is not None else tr.run_model
    vloss, probs, yv = engine.evaluate(eval_model, f.data.valid_dl, tr.device, gather=distributed.all_rows,
                                       dtype=tr.dtype, channels_last=tr.channels_last, progress=cfg.progress,
                                       activation=TASKS[f.run.task].activation)
    s = score_epoch(f.rule, f.run.task, probs, yv, vloss, f.scale)
    value = s.value
    kept_loss = next((r["valid_loss"] for r in state.log if r["epoch"] == state.best_epoch), None)
    improved = keeps(cfg.metric, s, state.best if state.best_epoch else None, kept_loss)
    state.log.append(log_row(f, epoch, ep, s))
    log(epoch_line(f, epoch, ep, s, improved, frozen))
    state.epochs_done = epoch + 1
    if improved:                           # the first epoch is kept even when its score is undefined
        state.best, state.best_epoch, state.bad_epochs = value, epoch + 1, 0
        if f.main:
            keep_best(f, eval_model, epoch, value, probs)
    else:
        state.bad_epochs += 1
    stop = bool(cfg.patience and state.bad_epochs >= cfg.patience)
    if f.main:
        write_csv(pd.DataFrame(state.log), f.run.exp.log(f.fold))
    if f.main and state.epochs_done < cfg.epochs and not stop:
        state.save(f.run.exp.last_checkpoint(f.fold), tr)
    return stop


def log_row(f: FoldRun, epoch: int, ep: dict, s) -> dict:
    """The epoch's row of log_fold{k}.csv: valid_metric is the score the epoch is kept by; with a fitted
    threshold also the threshold and the metric without it."""
    return {"epoch": epoch + 1, "train_loss": ep["loss"], "train_accuracy": ep["accuracy"],
            "valid_loss": s.loss, "valid_accuracy": s.accuracy, "valid_metric": s.value,
            **({"valid_threshold": s.threshold, "valid_metric_plain": s.plain} if s.threshold is not None else {}),
            "lr": f.tr.optimizer.param_groups[0]["lr"], "seconds": round(ep["seconds"], 2),
            "img_per_s": round(ep["img_per_s"], 1),
            **({"img_size": ep["img_size"]} if f.cfg.img_size_schedule else {})}


def epoch_line(f: FoldRun, epoch: int, ep: dict, s, improved: bool, frozen: bool) -> str:
    """The epoch's log line: only the columns that apply to the task (accuracy for single-label, unless it is
    the metric: not the same number twice), the score
    under the name of what it is (`f1_samples@thr 0.41 (thr 0.25)`), `*` on a kept epoch."""
    cfg = f.cfg
    return (f"fold {f.fold} epoch {epoch + 1:>3}/{cfg.epochs}  train_loss {ep['loss']:.4f}  valid_loss {s.loss:.4f}  "
            + (f"valid_acc {s.accuracy:.4f}  " if TASKS[f.run.task].exclusive and f.rule.name != "accuracy" else "")
            + f"{f.rule.name} {score_text(s.value)}" + (f" (thr {s.threshold:.2f})" if s.threshold is not None else "")
            + f"{' *' if improved else ''}  {ep['img_per_s']:.0f} img/s  {ep['seconds']:.1f}s"
            + ("  [head only]" if frozen else "") + (f"  [{ep['img_size']} px]" if cfg.img_size_schedule else ""))


def train_epoch(f: FoldRun, epoch: int, frozen: bool) -> dict:
    """The training half of an epoch (engine.train_one_epoch), seeded per epoch; a loss that is not finite is
    one TrainError line saying what to try."""
    cfg = f.cfg
    seed_all(f.seed * 1000 + epoch)
    f.data.sampler.set_epoch(epoch)
    train_dl, batch_aug = f.stage(f.sizes[epoch])
    if batch_aug is not None:
        batch_aug.set_epoch(epoch)
    set_backbone_frozen(f.tr.model, frozen)
    desc = f"fold {f.fold} epoch {epoch + 1}/{cfg.epochs}" + (" (head only)" if frozen else "")
    try:
        ep = engine.train_one_epoch(f.tr, train_dl, model=f.train_model, step0=f.state.steps, desc=desc,
                                    progress=cfg.progress, distill=f.distill, batch_aug=batch_aug)
    except FloatingPointError as e:
        raise TrainError(f"fold {f.fold} epoch {epoch + 1}: {e}. Try a lower --lr (now {cfg.lr:g}), "
                         "--clip-grad 1.0 or --amp off, under a new --experiment name") from None
    f.state.steps = ep["steps"]
    return distributed.mean_epoch(ep)


def keep_best(f: FoldRun, eval_model, epoch: int, value, probs: np.ndarray) -> None:
    """The best epoch so far: its checkpoint and its out-of-fold predictions."""
    run = f.run
    save_checkpoint(make_checkpoint(eval_model, epoch=epoch + 1, metric_name=f.cfg.metric, metric_value=value,
                                    **f.checkpoint_info()), run.exp.checkpoint(f.fold))
    write_oof(f, probs, run.exp.oof(f.fold))


def write_oof(f: FoldRun, probs: np.ndarray, path) -> None:
    run, va_idx = f.run, f.data.va_idx
    write_csv(oof_frame(run.table["id"].to_numpy()[va_idx], f.fold, run.table["label"].to_numpy()[va_idx], probs,
                        run.classes, run.task, run.meta, f.scale), path)


def finish_fold(f: FoldRun, seconds: float, log=print) -> dict:
    """The curve and fold{k}.json (written last: the fold is finished), the resume state removed; a warning
    when the fold's best score does not beat the constant answer."""
    cfg, exp, state, record = f.cfg, f.run.exp, f.state, f.record
    tta = oof_tta.record(f, write_oof, log)      # the OOF predict.py's post-processing is fitted on
    if f.main:
        plot_log_curve(pd.DataFrame(state.log), cfg.metric, f"{exp.name} fold {f.fold}", exp.curve(f.fold))
    best = None if state.best is None or math.isnan(state.best) else state.best
    if not beats_constant(cfg.metric, best, f.constant):
        log(f"warning: fold {f.fold}'s best {f.rule.name} {score_text(best)} does not beat the constant answer "
            f"({f.constant['what']}: {score_text(f.constant['value'])}): the model has learned nothing the "
            "submission can use; try more epochs, another --lr or a pretrained model")
    summary = {"fold": f.fold, "best_epoch": state.best_epoch, "metric": cfg.metric, "value": best,
               "selected_by": f.rule.name, "constant_answer": f.constant,
               "epochs_run": len(state.log), "seconds": round(seconds, 1),
               "train_rows": int(len(f.data.tr_idx)), "valid_rows": int(len(f.data.va_idx)),
               "in_chans": f.run.data_cfg["input_size"][0], "data_config": f.run.data_cfg, "device": str(f.tr.device),
               "workers": f.data.workers, "aug_device": f.aug_device, "bn_frozen": f.tr.freeze_bn,
               **({"teaching": record} if record else {}), **tta,
               **({"processes": distributed.world(), "batch_per_process": f.per_process, "sync_bn": cfg.sync_bn}
                  if distributed.active() else {})}
    if f.main:
        atomic_write_text(exp.summary_path(f.fold), json.dumps(summary, indent=2) + "\n")
        if exp.last_checkpoint(f.fold).is_file():
            exp.last_checkpoint(f.fold).unlink()
    distributed.barrier()            # the other ranks wait until rank 0 has written the fold
    return summary


def fit_fold_locked(cfg, run: RunData, fold: int, log=print, on_epoch=()) -> dict:
    """fit_fold holding the fold's lock (foldkit.train.foldlock): a second process that starts the same fold of
    the same experiment, here or on another machine, gets one FoldLockError line naming the holder; a fold
    another process finished meanwhile is not trained again. Under torchrun the ranks train one fold
    together and take no lock."""
    if distributed.active():
        return fit_fold(cfg, run, fold, log=log, on_epoch=on_epoch)
    with fold_lock(run.exp.lock(fold), fold):
        if run.exp.is_finished(fold):
            log(f"fold {fold}: finished by another process meanwhile, skipped")
            return run.exp.summary(fold)
        return fit_fold(cfg, run, fold, log=log, on_epoch=on_epoch)


# --------------------------------------------------------------------------- the run

def train(cfg, log=print, report: Callable | None = None) -> list[dict]:
    """Train the folds of cfg.fold in sequence, skipping finished ones; the run comes from build_run (the
    competition opened and its training images decoded once for all folds). With --devices,
    foldkit.train.foldpool trains them side by side (each worker runs open_run once and fit_fold per fold).
    report(exp, folds): the experiment's report writer, for --log's tracker at the end (train.py gives it)."""
    cfg, log = distributed.setup(cfg, log)          # torchrun: process group, this rank's device
    cfg, run = build_run(cfg, log)
    folds = parse_folds(cfg.fold, int(run.table["fold"].max()) + 1)
    tracker = open_tracker(cfg, run.exp.name) if distributed.is_main() else None   # --log: main process only
    log(describe_run(cfg, run, folds))
    log(epoch_rule(cfg.metric, run.task, len(run.classes)).describe())
    if (tl := run.meta.get("test_like")) and 0 in folds:
        log(f"fold 0 is the test-like fold (its {tl['rows']} rows look most like test, adversarial AUC "
            f"{tl['adversarial_auc']:.3f}): its score estimates the test score")
    out = {}
    for k in folds:
        if run.exp.is_finished(k):
            s = run.exp.summary(k)
            log(f"fold {k}: already finished ({s['metric']} {score_text(s['value'])}), skipped")
            out[k] = s
        elif not cfg.devices:
            out[k] = fit_fold_locked(cfg, run, k, log=log, on_epoch=[tracker.on_epoch] if tracker else ())
    if cfg.devices and len(out) < len(folds):
        todo = [k for k in dict.fromkeys(folds) if k not in out]
        out.update(run_fold_parallel(cfg, todo, prepare=open_run, fit_one=fit_fold_locked, log=log))
    if tracker:
        tracker.finish(run.exp, report)
        log(f"--log {cfg.log}: run {run.exp.name} in {getattr(tracker, 'uri', None) or tracker.dir}")
    return [out[k] for k in folds]


def describe_run(cfg, run: RunData, folds: list[int]) -> str:
    """The run's first line: experiment, model, folds, rows, what is predicted, where it goes."""
    train_only = int((run.table["fold"] < 0).sum())
    return (f"experiment {run.exp.name}: {cfg.model}, folds {folds}, {len(run.table)} rows, "
            + TASKS[run.task].describe(run.classes) + (f", scored by {cfg.metric} " if TASKS[run.task].name != "single" else " ")
            + (f"({train_only} rows of rare classes train-only) " if train_only else "") + f"-> {run.exp.dir}")
