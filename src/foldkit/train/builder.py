"""One way to build a run: every entry point that trains (train.py, a tune.py trial and its held-out fold,
auto.py's candidates and speed probe, --lr-find, a teacher's student) gets its settings and its run here, so
the same settings give the same run, and the same experiment name, whichever entry point trains them.

    settle(cfg)      the settings a run trains with: the task's defaults (metric, loss, label smoothing:
                     foldkit.tasks.check_settings), the teacher options checked (foldkit.train.teacher),
                     --task held against the folds' task, --batch-size auto measured (foldkit.train.autobatch)
    build_run(cfg)   (settled cfg, RunData): settle, then open_run: the settings checked against timm and
                     this machine (foldkit.train.checks), the experiment named and recorded
                     (foldkit.experiment.prepare_experiment), the training images decoded once for all folds

settle is idempotent: settings it has settled come back unchanged, so a caller may settle first (auto.py's
probe needs the batch) and build the run later.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from foldkit.config import learning_settings, with_settings
from foldkit.data import batchaug
from foldkit.data.dataset import ImageSource, detect_grey
from foldkit.data.images import cache_side
from foldkit.data.store import cache_root
from foldkit.experiment import Experiment, default_name, prepare_experiment
from foldkit.data.reading import open_competition, probability_hint
from foldkit.folds.file import FOLDS_CSV, read_folds, read_meta
from foldkit.predict.submission import check_positive_class
from foldkit.runtime import distributed
from foldkit.runtime.device import pick_device, set_deterministic
from foldkit.runtime.model import ModelError, data_config, has_pretrained_weights
from foldkit.tasks import TASKS, check_settings, n_outputs, targets, task_of
from foldkit.train import autobatch, foldpool, teacher
from foldkit.train.checks import TrainError, check_training_settings


def build_run(cfg, log=print, record: bool = True) -> tuple:
    """(cfg settled, its RunData): the one way every entry point that trains gets its run. --devices with one
    device trains there in this process; with several, this process prepares the shared image store for the
    fold-parallel workers (foldkit.train.foldpool) but keeps no RAM copy. record=False (--lr-find): the
    experiment is named, not recorded. Under torchrun rank 0 prepares first (distributed.main_first)."""
    devices = foldpool.parse_devices(cfg.devices) if cfg.devices else []
    cfg = settle(cfg, log, devices)
    if len(devices) == 1:
        cfg = with_settings(cfg, device=devices[0], devices="")
    opened = with_settings(cfg, cache="off") if cfg.devices and cfg.cache in ("ram", "off") else cfg
    return cfg, distributed.main_first(lambda: open_run(opened, log, record))


def settle(cfg, log=print, devices: list | tuple = ()):
    """The settings a run trains with (module docstring); --batch-size auto is measured on the first of
    `devices`, else on cfg.device."""
    cfg, _ = task_settings(cfg)
    cfg = pretrained_or_scratch(cfg, log)
    set_deterministic(cfg.deterministic)     # before --batch-size auto's first CUDA work starts cuBLAS
    return resolve_batch(cfg, list(devices), log)


def pretrained_or_scratch(cfg, log=print):
    """cfg with --pretrained (the hub's weights, the default) off where the run does not use them: with
    --pretrained-file (recorded as before the default changed, so such experiments keep their names), and
    for a model timm has no weights for (said in one line; refused when the user asked for them)."""
    if cfg.pretrained and cfg.pretrained_file and "pretrained" not in cfg.given:
        return with_settings(cfg, pretrained=False)
    if not cfg.pretrained or cfg.pretrained_file or has_pretrained_weights(cfg.model):
        return cfg
    if "pretrained" in cfg.given:
        raise ModelError(f"--pretrained: timm has no pretrained weights for {cfg.model!r}; pass --pretrained-file "
                         "PATH, or --no-pretrained to train it from scratch")
    log(f"note: timm has no pretrained weights for {cfg.model}: training it from scratch")
    return with_settings(cfg, pretrained=False)


def task_settings(cfg):
    """(cfg, task kind): cfg checked and completed for the competition's task kind (the metric and settings
    that fit it; --soft-labels, --pseudo, --teacher). --task, when given, must be the folds' task: the folds
    file records what make_folds.py read, and a run cannot train another kind on it."""
    task = task_of(read_meta(cfg.folds_dir))
    if cfg.task not in ("auto", task):
        raise TrainError(f"--task {cfg.task}: the folds in {cfg.folds_dir} were made for task {task} (make_folds.py "
                         f"recorded it, and training follows the folds); drop --task, or make {cfg.task} folds first "
                         f"(make_folds.py --task {cfg.task})")
    return teacher.check_teaching(check_settings(cfg, task), task), task


def resolve_batch(cfg, devices: list, log=print):
    """cfg with --batch-size auto resolved (foldkit.train.autobatch) on the first of `devices`, else cfg.device;
    cfg as it is when a number was given."""
    if cfg.batch_size:
        return cfg
    meta = read_meta(cfg.folds_dir)
    first = with_settings(cfg, device=devices[0]) if devices else cfg
    out = autobatch.auto_batch(first, n_outputs(task_of(meta), meta["classes"]), int(meta.get("rows") or 0) or 1_000_000,
                            log)
    return with_settings(out, device=cfg.device)


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
    these settings would get, not created. Callers come through build_run (settled settings)."""
    table, meta = read_folds(cfg.folds_dir)
    if meta.get("sha256") and meta["sha256"] != meta["sha256_now"]:
        raise TrainError(f"{cfg.folds_dir}/{FOLDS_CSV} was changed after make_folds wrote it "
                         "(hash differs from folds_meta.json): re-run make_folds.py")
    if cfg.balance == "weights" and (cfg.mixup > 0 or cfg.cutmix > 0):
        raise TrainError("--balance weights does not combine with mixup/cutmix (soft targets carry no class "
                         "weights): use --balance sampler")
    check_training_settings(cfg)
    check_positive_class(cfg.positive_class, meta["classes"], task_of(meta), cfg.metric)
    task = task_of(meta)
    y = targets(task, table, meta)
    if hint := TASKS[task].check_targets(cfg, y, target_source(meta)):   # refused before anything is recorded
        log(f"note: {hint}")
    comp, reading = open_competition(cfg, meta)
    if hint := probability_hint(comp.sample_submission, meta["classes"], cfg.metric):
        log(f"note: {hint}")
    teacher.check_experiments(cfg, meta)   # teachers on other folds or classes: refused before anything is recorded
    exp = (prepare_experiment(cfg, meta, learning_settings(cfg), reading) if record
           else Experiment(Path(cfg.models_dir) / default_name(cfg, learning_settings(cfg))))
    grey = (cfg.in_chans == 1) if cfg.in_chans else detect_grey(comp, table)
    data_cfg = data_config(cfg.model, cfg.img_size, 1 if grey else 3, cfg.crop_pct, cfg.test_img_size)
    if not cfg.img_size:
        log(f"note: images resized to {data_cfg['input_size'][-1]} px, {cfg.model}'s pretrained size: a guess for "
            "your images (--img-size to choose)")
    source = ImageSource(comp, table, "train", grey=grey, cache=cfg.cache, max_side=cache_side(data_cfg),
                         progress=cfg.progress, cache_dir=cache_root(cfg))
    return RunData(table, meta, exp, meta["classes"], y, data_cfg, source, task, comp)


def target_source(meta: dict) -> str:
    """Where the training targets were read, in words: the training CSV and its label column."""
    where = meta.get("train_csv") or FOLDS_CSV
    return f"{where} column {meta['label_col']!r}" if meta.get("label_col") else where


def open_run(cfg, log=print, record: bool = True) -> RunData:
    """prepare_run on settled settings (fold-parallel workers call it with the parent's), saying in one line
    where the images come from: the store (its folder, how many were prepared now), or decoding on demand
    when they do not fit this process's share of the machine's memory (ImageSource.cache_note), and in one
    how the augmentation runs (batchaug.path_line)."""
    run = prepare_run(cfg, log, record)
    if getattr(run.source, "cache_note", None):
        log(run.source.cache_note)
    if not cfg.devices:           # fold-parallel: each worker says it for its own device
        device = pick_device(cfg.device)
        log(batchaug.path_line(batchaug.choose(cfg.aug_device, device, run.data_cfg["input_size"][-1]), device,
                              cfg.aug))
    return run
