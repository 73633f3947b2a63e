"""Every default of the kit in one place, plus config-file and CLI overrides.

A setting is a dataclass field with a help text and the group it belongs to.
Each script asks for the groups it uses (`build_parser(["data", "folds"])`),
so `--help` documents every option a script takes, and `resolve()` applies the
precedence  defaults < config file (TOML) < command line.

This module must not import torch: it keeps `--help` instant.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from foldkit.choices import AUG_PRESETS, BLEND_MODES, SWITCHES
from foldkit.ensemble import ENSEMBLE_MODES, TTA_VIEWS
from foldkit.errors import ConfigError, did_you_mean
from foldkit.metrics import METRICS

# The repository root: default paths live under it, whatever the working directory.
ROOT = Path(__file__).resolve().parents[2]


def _opt(default: Any, help: str, group: str, choices: list | None = None, minimum: float | None = None,
         auto: Any = None):
    """One setting: its default (whose type is the setting's type), help, group, and the values it
    accepts (choices, or a minimum). `auto`: the value the word "auto" stands for in a number setting
    (--batch-size auto = 0). `convert` checks every value against this, flag or file alike."""
    return field(default=default, metadata={"help": help, "group": group, "choices": choices,
                                            "minimum": minimum, "auto": auto})


@dataclass
class Config:
    # ---- paths (every path can be changed by a flag or the config file) ----
    input_dir: str = _opt(str(ROOT / "input"), "competition folder (any of the four layouts, see docs/input.md)", "paths")
    folds_dir: str = _opt(str(ROOT / "folds"), "where train_folds.csv and folds_meta.json live", "paths")
    models_dir: str = _opt(str(ROOT / "models"), "experiments folder: models/<experiment>/fold{k}.pt ...", "paths")
    submissions_dir: str = _opt(str(ROOT / "submissions"), "where submission CSVs are written", "paths")
    reports_dir: str = _opt(str(ROOT / "reports"), "where reports/<experiment>/ are written", "paths")
    cache_dir: str = _opt("", "the decoded-image store (--cache disk): <cache-dir>/images/<competition>/"
                          "<split>-<preparation>/; delete the folder to clear it (default: cache/ beside "
                          "--models-dir)", "paths")

    # ---- reading the competition ----
    train_csv: str = _opt("", "training CSV file name in the competition folder (default: the first of "
                          "train.csv, labels.csv, train_labels.csv)", "data")
    id_col: str = _opt("", "id/filename column of train.csv (default: auto-detect)", "data")
    label_col: str = _opt("", "label column of train.csv (default: auto-detect)", "data")
    image_ext: str = _opt("", "extension added to ids that have none (default: inferred from train/)", "data")
    train_dir: str = _opt("", "folder of the training images (default: train/, or the train* folder holding "
                          "the training CSV's files: train-jpg/, train_images/ ...)", "data")
    test_dir: str = _opt("", "folder(s) of the test images, comma-separated, looked up in that order (default: "
                         "test/, or the test* folders beside the training folder: test-jpg/,test-jpg-additional/)", "data")
    skip_bad_images: bool = _opt(False, "drop missing/empty/truncated/non-image files (prints which) instead of stopping", "data")
    task: str = _opt("auto", "what a training label is: single (one class per image), multilabel (separated "
                     "tags, or multi-hot 0/1 columns), regression (a number); auto = detected from the labels",
                     "data", choices=["auto", "single", "multilabel", "regression"])
    label_sep: str = _opt("", "multi-label: the separator of the tags in the label column (default: detected "
                          "among space, |, ; and ,); predict.py: the separator of the tags written",
                          "data")

    # ---- folds ----
    n_folds: int = _opt(5, "number of cross-validation folds", "folds")
    seed: int = _opt(42, "random seed (folds; training seeds derive from it and the fold)", "folds")
    group_col: str = _opt("", "column of train.csv whose groups must not span folds (StratifiedGroupKFold)", "folds")
    limit: int = _opt(0, "keep a stratified subsample of N training rows (0 = all)", "folds", minimum=0)
    rare_classes: str = _opt("warn", "classes with fewer samples than folds: warn (split anyway, each sample "
                             "validated once), train-only (always in training, never validated), error",
                             "folds", choices=["warn", "train-only", "error"])
    force: bool = _opt(False, "replace a folds file that trained models depend on", "folds")
    group_duplicates: bool | None = _opt(None, "keep duplicate image clusters inside one fold: default when an "
                                         "audit of this competition exists (python src/audit.py); "
                                         "--group-duplicates also searches them when there is none", "folds")
    test_like_fold: bool = _opt(False, "fold 0 = the most test-like 1/n-folds of the training rows (p_test of "
                                "the audit's adversarial validation: run python src/audit.py --embed-weights "
                                "FILE first), whole groups and duplicate clusters; the other folds split the "
                                "rest as usual. train.py --fold 0 then scores a test-like validation set",
                                "folds")

    # ---- data audit ----
    audit_dir: str = _opt("", "where the audit writes (default: <reports-dir>/audit)", "audit")
    near_threshold: int = _opt(4, "near duplicates: at most this many differing bits of the 64-bit "
                               "perceptual hash (0 = identical hashes)", "audit")
    audit_workers: int = _opt(0, "processes decoding images and threads embedding them for the audit "
                              "(0 = all cores)", "audit")
    embed_model: str = _opt("mobilenetv2_100", "timm backbone whose features find copies (mirrored, cropped, "
                            "recoloured) and train/test shift", "audit")
    embed_weights: str = _opt("", "its ImageNet weights: a local timm state_dict FILE, hub (download), none "
                              "(hash search only); default: the hub's local cache, else hash search only", "audit")
    embed_size: int = _opt(96, "input size (px) of the embedding backbone (calibrated: 64, faster, finds fewer "
                           "crops; 96; 128, slower, a few more crops)", "audit")
    embed_threshold: float = _opt(0.0, "cosine similarity of a copy (0 = the value calibrated for --embed-model "
                                  "and --embed-size); pairs from 0.80 up to it are listed 'to check'", "audit")

    # ---- training ----
    experiment: str = _opt("", "experiment name: models/<experiment>/ (default: derived from model, size "
                           "and a hash of the settings)", "train")
    fold: str = _opt("0", "fold(s) to train: 0, '0,2,4', all (finished folds are skipped), or env: the task index "
                     "of a SLURM array ($SLURM_ARRAY_TASK_ID) or Kubernetes Indexed Job ($JOB_COMPLETION_INDEX)",
                     "train")
    model: str = _opt("resnet18", "any timm model name (timm.list_models())", "train")
    pretrained: bool = _opt(True, "start from the model's pretrained weights, downloaded once from timm's hub into "
                            "its cache; --no-pretrained trains from scratch (models timm has no weights for do, "
                            "saying so)", "train")
    pretrained_file: str = _opt("", "local pretrained checkpoint (timm state_dict) for offline machines", "train")
    img_size: int = _opt(0, "training/validation image size (default: the model's pretrained size)", "train")
    test_img_size: int = _opt(0, "evaluation image size of validation/OOF, predict, the bundle and --image "
                              "(FixRes: a model trained at 224 often scores better evaluated at 256-288; "
                              "default: --img-size)", "train", minimum=0)
    img_size_schedule: str = _opt("", "progressive resizing: SIZE:EPOCHS,... trains the first epochs at smaller "
                                  "sizes, in order, then the rest at --img-size (e.g. --epochs 15 "
                                  "--img-size-schedule 128:5,160:4; validation and OOF always at --img-size)",
                                  "train")
    crop_pct: float = _opt(0.0, "validation centre-crop fraction (default: the model's; 1.0 = no crop)", "train")
    in_chans: int = _opt(0, "input channels: 1 or 3 (default: 1 when all images are grey, else 3)", "train",
                        choices=[0, 1, 3])
    epochs: int = _opt(10, "training epochs", "train", minimum=1)
    batch_size: int = _opt(64, "batch size (under torchrun: the global batch, split evenly across the processes); "
                           "auto = the largest that fits the GPU, --lr scaled to it (foldkit.train.autobatch; the default "
                           "on CPU)", "train", minimum=1, auto=0)
    lr: float = _opt(1e-3, "peak learning rate (AdamW)", "train", minimum=0)
    weight_decay: float = _opt(0.05, "AdamW weight decay (not applied to biases and norms)", "train", minimum=0)
    opt: str = _opt("adamw", "optimizer name for timm create_optimizer_v2", "train")
    sched: str = _opt("cosine", "LR schedule for timm create_scheduler_v2 (cosine, step, ...)", "train")
    warmup_epochs: float = _opt(1.0, "linear LR warmup (epochs)", "train", minimum=0)
    min_lr: float = _opt(1e-6, "final LR of the schedule", "train", minimum=0)
    freeze_epochs: int = _opt(0, "first K epochs train only the head (frozen backbone), then all", "train", minimum=0)
    backbone_lr: str = _opt("auto", "backbone LR as a fraction of --lr: auto = 0.1 with pretrained weights "
                            "(fastai/Keras fine-tuning), 1 from scratch", "train")
    layer_decay: float = _opt(0.0, "layer-wise LR decay inside the backbone (timm layer_decay, e.g. 0.75; "
                              "0 = off)", "train")
    unfreeze_warmup: float = _opt(1.0, "epochs over which the backbone LR ramps up from 0 after "
                                  "--freeze-epochs", "train")
    bn: str = _opt("auto", "BatchNorm during training: train, frozen (pretrained statistics kept), auto "
                   "(frozen for pretrained weights whose BN was folded, or batch < 16)", "train",
                   choices=["auto", "train", "frozen"])
    aug: str = _opt("light", "augmentation preset: none, light, medium (Keras recipe), heavy", "train",
                    choices=list(AUG_PRESETS))
    hflip: bool = _opt(True, "random horizontal flips (turn off for digits and text)", "train")
    vflip: bool = _opt(False, "random vertical flips", "train")
    randaugment: bool = _opt(False, "heavy preset: RandAugment instead of TrivialAugmentWide", "train")
    aug_device: str = _opt("auto", "where --aug's random ops run: cpu (per image in the DataLoader, torchvision), "
                           "device (on whole batches on the training device, per-sample draws, kornia; the loader "
                           "only gathers fixed-size images), auto (device on CUDA, cpu on CPU: measured faster there)",
                           "train", choices=["auto", "cpu", "device"])
    mixup: float = _opt(0.0, "mixup alpha (0 = off); uses SoftTargetCrossEntropy", "train", minimum=0)
    cutmix: float = _opt(0.0, "cutmix alpha (0 = off)", "train", minimum=0)
    label_smoothing: float = _opt(0.1, "label smoothing (multi-label: each target becomes y(1-e)+e/2)", "train",
                                  minimum=0)
    loss: str = _opt("auto", "regression loss on the standardised target: mse or huber (auto: mse); "
                     "classification: cross-entropy, multi-label: BCE", "train", choices=["auto", "mse", "huber"])
    drop_rate: float = _opt(0.0, "dropout before the classifier", "train", minimum=0)
    drop_path: float = _opt(0.0, "stochastic depth rate (models that support it)", "train", minimum=0)
    accum_steps: int = _opt(1, "gradient accumulation steps", "train", minimum=1)
    clip_grad: float = _opt(0.0, "clip gradient norm (0 = off)", "train", minimum=0)
    ema: bool = _opt(False, "keep an EMA of the weights (timm ModelEmaV3); validate and save it", "train")
    ema_decay: float = _opt(0.998, "EMA decay per optimizer step", "train")
    balance: str = _opt("none", "class imbalance: none, weights (class-weighted loss), sampler (balanced)",
                        "train", choices=["none", "weights", "sampler"])
    positive_class: str = _opt("", "binary: the class whose probability a one-column submission holds (default: "
                               "the class the sample's column is named after, else the second in sorted order); "
                               "recorded with the experiment. --metric f1 scores the second class only, for now",
                               "train")
    metric: str = _opt("accuracy", "competition metric: picks the best epoch and early stopping", "train",
                       choices=list(METRICS))
    patience: int = _opt(0, "early stopping: stop after N epochs without improvement (0 = off)", "train", minimum=0)
    amp: str = _opt("auto", "mixed precision: auto (bf16/fp16 on GPU, off on CPU), bf16, fp16, off", "train",
                    choices=["auto", "bf16", "fp16", "off"])
    channels_last: str = _opt("auto", "channels_last memory format: auto (on GPU), on, off", "train",
                              choices=["auto", "on", "off"])
    compile: bool = _opt(False, "torch.compile the model (pays off on GPU for long runs)", "train")
    deterministic: bool = _opt(False, "deterministic GPU kernels (torch.use_deterministic_algorithms, cuDNN, "
                               "cuBLAS): a resumed GPU run then ends exactly as an uninterrupted one, at a speed "
                               "cost (CPU runs are exact without it; docs/training.md 'Outputs and resume')", "train")
    device: str = _opt("auto", "auto, cpu, cuda, cuda:1", "train")
    devices: str = _opt("", "fold-parallel: one worker process per device, each training folds from one queue "
                        "('0,1' = GPUs 0 and 1; 'cpu,cpu'); default: one device, folds in sequence", "train")
    sync_bn: bool = _opt(False, "under torchrun: synchronise BatchNorm statistics across processes (GPUs)",
                         "train")
    workers: int = _opt(-1, "DataLoader workers (-1 = auto)", "train")
    cache: str = _opt("auto", "prepared images: disk (the decoded-image store under --cache-dir, prepared once and "
                      "shared by every process and run), ram (prepared into this process's RAM each run), off "
                      "(prepared on demand every epoch); auto = disk, else ram when it fits (docs/training.md 'The image "
                      "cache')", "train", choices=["auto", "disk", "ram", "off"])
    # ---- the learning-rate range test (foldkit.train.lrfind; run-only: not part of an experiment's identity) ----
    lr_find: bool = _opt(False, "instead of training: a learning-rate range test on fold 0's training part with "
                         "these settings; prints a suggested --lr and writes <models-dir>/lr_find/<experiment>/"
                         "lr_find.csv and .png (no experiment is recorded; docs/training.md 'Learning rate')", "train")
    lr_find_start: float = _opt(1e-7, "--lr-find: the first learning rate of the sweep", "train", minimum=0)
    lr_find_end: float = _opt(10.0, "--lr-find: the last learning rate of the sweep (grows exponentially to it)",
                              "train", minimum=0)
    lr_find_steps: int = _opt(100, "--lr-find: optimizer steps of the sweep, at most (the training part is cycled "
                              "when shorter; stops early once the loss diverges)", "train", minimum=10)
    # ---- after the first submission: teachers (foldkit.train.teacher; single-label; fold-safe: fold k learns only
    # from models that never saw fold k's validation rows) ----
    soft_labels: str = _opt("", "self-distillation: each training row's target = (1 - --soft-alpha) x its label + "
                            "--soft-alpha x this experiment's probabilities of it (same folds; "
                            "--soft-labels-source)", "train")
    soft_alpha: float = _opt(0.3, "weight of the teacher's probabilities in --soft-labels targets (0..1)", "train",
                             minimum=0)
    soft_labels_source: str = _opt("fold", "--soft-labels: whose probabilities fold k's training rows get: fold "
                                   "(the teacher's fold-k model, which never saw fold k's validation rows: "
                                   "fold-safe) or oof (each row's OOF probabilities, made by models that trained "
                                   "on fold k's validation rows: measured to inflate the CV, docs/improving.md)",
                                   "train", choices=["fold", "oof"])
    pseudo: str = _opt("", "pseudo-labels: the test images (and --unlabelled ones) join fold k's training part "
                       "labelled by this experiment's fold-k model (same folds), filtered by confidence/margin",
                       "train")
    pseudo_min_confidence: float = _opt(0.9, "--pseudo: keep images whose top probability is at least this "
                                        "(0 = no confidence filter)", "train", minimum=0)
    pseudo_top_margin: float = _opt(0.0, "--pseudo: keep images whose top-1 minus top-2 probability is at least "
                                    "this (0 = off; given alone, it replaces the confidence filter)", "train",
                                    minimum=0)
    pseudo_weight: float = _opt(1.0, "--pseudo: loss weight of a pseudo-labelled image (a labelled one has 1)",
                                "train", minimum=0)
    pseudo_soft: bool = _opt(False, "--pseudo: train on the teacher's probabilities instead of its top class",
                             "train")
    unlabelled: str = _opt("", "--pseudo: also a folder of unlabelled images (searched recursively) for the "
                           "teacher to label", "train")
    teacher: str = _opt("", "knowledge distillation from these experiments (comma-separated, same folds): fold k "
                        "learns from each one's fold-k model, run on every training batch", "train")
    kd_alpha: float = _opt(0.5, "--teacher: weight of the distillation loss (1 - this: the label loss)", "train",
                           minimum=0)
    kd_temperature: float = _opt(2.0, "--teacher: softmax temperature of teacher and student in the "
                                 "distillation loss", "train", minimum=0)
    resume: bool = _opt(True, "continue an interrupted fold from its last-epoch checkpoint", "train")
    progress: bool = _opt(True, "tqdm progress bars", "train")
    log: str = _opt("", "also log every epoch, the settings, the CV and the report to a tracker: tensorboard or "
                    "mlflow (pip install 'foldkit[trackers]')", "train", choices=["", "tensorboard", "mlflow"])
    tracking_uri: str = _opt("", "where --log writes: a folder (tensorboard) or an MLflow tracking URI such as a "
                             "server URL (default: runs/ beside the models folder)", "train")

    # ---- search: tune.py (foldkit.search.tune, Optuna) ----
    space: str = _opt("quick", "search space preset: quick (lr, weight decay, augmentation), standard (+ image size, "
                      "label smoothing, mixup/cutmix, freeze epochs, EMA), backbones (model and lr); a "
                      "[search_space] table in the --config file replaces it (or extends a --space given too)",
                      "tune", choices=["quick", "standard", "backbones"])
    n_trials: int = _opt(20, "trials of the whole study (finished and pruned ones, every worker counted; a "
                         "restarted study runs only the rest)", "tune", minimum=1)
    timeout: float = _opt(0.0, "this process stops starting trials after this many hours (0 = no limit)", "tune",
                          minimum=0)
    tune_folds: str = _opt("all", "folds a trial is scored on (its CV): the first is trained first and may be "
                           "pruned; 0,1,2 or all (all but --holdout-fold)", "tune")
    holdout_fold: int = _opt(-1, "a fold the search never scores: the best settings are trained on it at the "
                             "end, an honest estimate (-1 = none)", "tune", minimum=-1)
    pruner: str = _opt("median", "stop bad trials early on the first fold's epoch metric: median, halving "
                       "(successive halving), none", "tune", choices=["median", "halving", "none"])
    storage: str = _opt("", "Optuna storage URL (default: sqlite:///<models-dir>/tune.db; postgresql+psycopg://... "
                        "lets workers on many machines share the study)", "tune")
    study: str = _opt("", "study name (default: <space>-<metric>-<hash of the settings, space and folds>; a study "
                       "made with other settings is refused)", "tune")
    heartbeat: int = _opt(60, "seconds between a running trial's heartbeats; a trial silent for twice this is "
                          "marked failed and queued again with the same settings", "tune", minimum=1)

    # ---- auto.py (foldkit.search.auto) ----
    hours: float = _opt(0.0, "auto.py: the time budget in hours (training, prediction and report)", "auto",
                        minimum=0)
    portfolio: str = _opt("resnet18,efficientnet_b0,convnext_nano", "auto.py: candidate timm backbones in order "
                          "of preference; those whose measured time fits the budget are trained", "auto")

    # ---- prediction ----
    experiments: str = _opt("", "experiment(s) to ensemble, comma-separated (default: the latest)", "predict")
    tta: str = _opt("auto", "test-time augmentation views, comma-separated: auto (hflip if trained with flips) or "
                    f"any of {', '.join(TTA_VIEWS)}; train.py predicts each fold's OOF with them too "
                    "(oof_tta_fold{k}.csv: what predict.py fits its post-processing on)", "predict")
    ensemble: str = _opt("mean", "how to average members: mean, geometric (= logit mean)", "predict",
                         choices=list(ENSEMBLE_MODES))
    submission_mode: str = _opt("auto", "auto, label (one column: the class, the multi-label tags, or the regression "
                                "number) or probs (one column per class or label, or the positive class of a binary "
                                "task)", "predict", choices=["auto", "label", "probs"])
    image: str = _opt("", "predict one image (path or URL) and print the top classes", "predict")
    topk: int = _opt(5, "classes printed for --image", "predict", minimum=1)
    submit: str = _opt("", "upload the submission to this Kaggle competition with the kaggle CLI", "predict")
    report: bool = _opt(True, "write the CV report (reports/<experiment>/)", "predict")
    blend: str = _opt("mean", "how experiments are combined, fitted and scored on their OOF with nested CV: "
                      + "; ".join(f"{k}: {h}" for k, h in BLEND_MODES.items()), "predict", choices=list(BLEND_MODES))
    calibrate: str = _opt("auto", "temperature scaling fitted on the OOF, applied to the test probabilities "
                          "(auto: on when the metric is logloss)", "predict", choices=SWITCHES)
    thresholds: str = _opt("auto", "per-class thresholds (f1, f1_macro) or ordinal cut-points (qwk) fitted on "
                           "the OOF (auto: on for those metrics; multi-label: per-label thresholds for the F "
                           "metrics)", "predict", choices=SWITCHES)
    tag_metric: str = _opt("auto", "multi-label tags file: the F metric its per-label thresholds are fitted for "
                           "and its CV and test score are given in (auto: the training metric when it scores tags, "
                           "else f1_samples)", "predict",
                           choices=["auto", "f1_samples", "f2_samples", "f1_micro", "f1_macro"])
    clip: str = _opt("auto", "regression: clip predictions to the range of the training targets, measured in nested "
                     "CV like every post-processing (auto: on for regression)", "predict", choices=SWITCHES)

    # ---- leaderboard ----
    csv: str = _opt("", "also write the leaderboard table to this CSV file", "leaderboard")

    # ---- export: the offline inference bundle for Kaggle code competitions (src/export.py) ----
    out: str = _opt("", "export.py: the bundle folder (default: bundle/); predict_offline.py: the submission "
                    "CSV (default: /kaggle/working/submission.csv on Kaggle, else ./submission.csv)", "export")
    competition: str = _opt("", "Kaggle competition slug: the bundle looks for /kaggle/input/<slug> first", "export")
    half: bool = _opt(False, "store the bundle's weights in fp16 (half the size; predictions may differ "
                      "in the last digits)", "export")
    safetensors: bool = _opt(False, "store the bundle's weights as .safetensors instead of torch .pt", "export")
    onnx: bool = _opt(False, "also write each member as ONNX (dynamic batch), checked with onnxruntime", "export")
    int8: bool = _opt(False, "also quantize each member's ONNX to int8 (onnxruntime static quantization, implies "
                      "--onnx), scored against fp32 on the OOF rows; the bundle's onnx runner then runs the int8 "
                      "models", "export")
    int8_calibration: int = _opt(256, "--int8: training images per model its activations are calibrated on",
                                 "export", minimum=1)
    max_cv_drop: float = _opt(-1.0, "--int8: refuse the bundle when the int8 models lose more than this of the "
                              "metric on the OOF rows (negative: no limit)", "export")
    test_images: int = _opt(0, "runtime estimate for N test images (0 = the local test set's size)", "export")
    time_budget: float = _opt(9.0, "warn when the estimate exceeds this many hours (Kaggle's usual limit: 9); "
                              "0 = no check", "export")
    gpu: str = _opt("T4,P100", "GPU classes to estimate the runtime for (rough factors, see docs/export.md)", "export")
    kaggle_dataset: str = _opt("", "id of the bundle's Kaggle dataset, <user>/<slug> (default: "
                               "$KAGGLE_USERNAME/foldkit-<experiments>)", "export")
    push: str = _opt("", "<owner>/<dataset-slug>: upload the bundle as this private Kaggle dataset with the kaggle CLI "
                     "(a new version when it exists); nothing is uploaded without it", "export")
    kernel: str = _opt("", "<owner>/<notebook-slug>: also push the bundle's notebook as a private Kaggle notebook "
                       "(internet off) reading the --push dataset and the --competition, and run it", "export")
    kernel_gpu: bool = _opt(False, "run the pushed notebook on a GPU (default: CPU only)", "export")
    push_message: str = _opt("", "the dataset version's notes (default: foldkit version, experiments, time)", "export")
    kaggle_timeout: float = _opt(1800.0, "seconds each kaggle CLI call may take (a large bundle uploads slowly)",
                                 "export", minimum=1)

    # ---- stack.py ----
    features: str = _opt("", "stack.py: the table's feature columns, COL or COL:num / COL:cat, comma-separated "
                         "(default: every column of the training CSV but the id, label, group, fold and paths; "
                         "strings and code-like integers such as a zip code as categories)", "stack")
    seeds: int = _opt(1, "stack.py: boosters per fold with seeds --seed, --seed+1, ..., averaged", "stack", minimum=1)
    booster: str = _opt("auto", "stack.py: lightgbm (the `stack` extra), hgb (scikit-learn's HistGradientBoosting; "
                        "sklearn is the same), xgboost, catboost (when installed), auto (lightgbm when installed, "
                        "else hgb)", "stack", choices=["auto", "lightgbm", "hgb", "sklearn", "xgboost", "catboost"])
    norm_by: str = _opt("", "stack.py: a column (such as a patient id) whose groups normalise the features: each "
                        "numeric feature also as its z-score within the rows sharing its value (no label used; the "
                        "test rows within the test table)", "stack")
    target_encode: str = _opt("", "stack.py: categorical columns, comma-separated, encoded by the mean target of "
                              "their value (per class or label), fitted inside each fold's training rows only (an "
                              "inner K-fold for their own rows); the way to use a category of many values", "stack")
    test_table: str = _opt("", "stack.py: the test rows' table, joined by id to the test images (default: "
                           "test.csv of the competition folder)", "stack")

    # ---- predict_offline.py (inside the bundle) ----
    bundle: str = _opt("", "the bundle folder (predict_offline.py, default: its own folder); export.py: push this "
                       "existing bundle with --push instead of exporting a new one", "offline")
    runner: str = _opt("auto", "torch, onnx (onnxruntime, no torch needed), auto (torch when importable)",
                       "offline", choices=["auto", "torch", "onnx"])
    overwrite: bool = _opt(False, "replace an existing submission file", "offline")
    threads: int = _opt(0, "predict_offline.py: CPU threads of the runner (torch's, onnxruntime's intra-op); 0: "
                        "the export's probe (all the cores this process may use, or 1 where one was as fast)",
                        "offline", minimum=0)

    def __post_init__(self):
        # the names the user set (config file or flag), each Config's own: not a setting (no field), so
        # resolve sets it and a copy (runtime.distributed.with_settings) carries it over
        self.given: frozenset = frozenset()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in fields(Config)}

GROUP_TITLES = {
    "paths": "paths",
    "data": "reading the competition",
    "folds": "cross-validation folds",
    "train": "training",
    "predict": "prediction",
    "audit": "data audit",
    "export": "export (offline bundle)",
    "offline": "offline prediction (bundle)",
    "stack": "stacking (stack.py)",
    "leaderboard": "leaderboard",
    "tune": "search (tune.py)",
    "auto": "time-budgeted pipeline (auto.py)",
}

# the [search_space] table of a config file: tune.py's ranges (foldkit.search.tune), not settings
SEARCH_SPACE = "search_space"

# Settings that change how a run is executed but not what it learns: an experiment may be continued with
# other values of these. (A fold records its number of torchrun processes and sync_bn in its fold{k}.json.)
RUN_ONLY = {"fold", "resume", "progress", "workers", "device", "compile", "force", "config",
            "input_dir", "folds_dir", "models_dir", "submissions_dir", "reports_dir", "skip_bad_images",
            "cache", "cache_dir", "experiment", "devices", "sync_bn", "log", "tracking_uri",
            "lr_find", "lr_find_start", "lr_find_end", "lr_find_steps"}


# Training settings left out of an experiment's identity while they hold these values (the feature unused),
# so a run's name changes only with the features it uses and experiments keep their names as settings are added.
IDENTITY_DEFAULTS = {"loss": "auto", "soft_labels": "", "soft_alpha": 0.3, "pseudo": "", "pseudo_min_confidence": 0.9,
                  "pseudo_top_margin": 0.0, "pseudo_weight": 1.0, "pseudo_soft": False, "unlabelled": "",
                  "teacher": "", "kd_alpha": 0.5, "kd_temperature": 2.0,
                  "test_img_size": 0, "aug_device": "auto", "img_size_schedule": "",
                  "deterministic": False, "positive_class": "",
                  "soft_labels_source": "fold"}


def with_settings(cfg: "Config", **changes) -> "Config":
    """cfg with some settings changed, keeping which settings the user gave (cfg.given)."""
    new = dataclasses.replace(cfg, **changes)
    new.given = cfg.given
    return new


def learning_settings(cfg: "Config") -> dict:
    """The settings that decide what a run learns (an experiment's identity): the training settings
    and the seed. How the competition is read is recorded with the folds (folds_meta.json) and
    identified by the folds file's hash."""
    groups = {f.name: f.metadata["group"] for f in fields(cfg)}
    return {k: v for k, v in cfg.to_dict().items()
            if (groups[k] == "train" or k == "seed") and k not in RUN_ONLY
            and not (k in IDENTITY_DEFAULTS and v == IDENTITY_DEFAULTS[k])}


def flag_name(name: str) -> str:
    """A setting's command-line flag: batch_size -> --batch-size."""
    return "--" + name.replace("_", "-")


def _kind(f: dataclasses.Field) -> type:
    """A setting's type: its default's (None is a yes/no setting with an automatic default)."""
    return bool if f.default is None else type(f.default)


_EXPECTED = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def convert(name: str, value: Any) -> Any:
    """The one check and conversion of a setting's value, whether it comes from a flag (a string), a
    config file (TOML types) or code: the value in the setting's type, or ConfigError with a phrase
    saying what was expected (the caller names where the value came from). A string converts to a
    number like the flag would; a number or a list of values becomes text where text is expected
    (fold = 0, fold = [0, 2])."""
    f = _FIELDS[name]
    kind, meta = _kind(f), f.metadata

    def bad(what: str):
        return ConfigError(f"is not {what}")

    if kind is bool:
        if not isinstance(value, bool) and not (value is None and f.default is None):
            raise bad(_EXPECTED[bool])
        return value
    if isinstance(value, bool):          # True is an int to Python, never a number or text to a user
        raise bad(_EXPECTED[kind])
    if meta["auto"] is not None and isinstance(value, str) and value.strip().lower() == "auto":
        return meta["auto"]
    if kind is str:
        if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int)) and not isinstance(v, bool)
                                                    for v in value):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, (int, float, os.PathLike)):
            value = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
        elif not isinstance(value, str):
            raise bad(_EXPECTED[str])
    else:
        try:
            if kind is int and isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                value = int(value)
            elif isinstance(value, (str, int, float)):
                value = kind(value.strip() if isinstance(value, str) else value)
            else:
                raise ValueError
        except ValueError:
            raise bad(_EXPECTED[kind] + (" or auto" if meta["auto"] is not None else "")) from None
    if meta["choices"] and value not in meta["choices"]:
        raise bad("one of " + ", ".join(map(str, meta["choices"])) + did_you_mean(value, meta["choices"]))
    if meta["minimum"] is not None and value < meta["minimum"]:
        raise bad(f"at least {meta['minimum']}" + (" or auto" if meta["auto"] is not None else ""))
    return value


def _flag_type(name: str):
    """argparse's `type` for a setting: `convert`, its phrase becoming argparse's one-line error."""
    def parse(text: str):
        try:
            value = convert(name, text)
            # the word stays a word until resolve converts it: a number setting's auto value (0) is no
            # number a user may give
            return "auto" if _FIELDS[name].metadata["auto"] is not None and value == _FIELDS[name].metadata["auto"] \
                else value
        except ConfigError as e:
            raise argparse.ArgumentTypeError(f"{text!r} {e}") from None
    parse.__name__ = name
    return parse


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake in the flags is one line `error: ...` and exit code 2, like every
    other mistake a user can make (errors.cli_run), instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser(groups: list[str], description: str, prog: str | None = None,
                 extra: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """An argparse parser with one option per Config field of `groups`.

    Defaults are suppressed so `resolve` can tell what the user typed; the help
    text still shows each default.
    """
    p = _Parser(prog=prog, description=description,
                formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=argparse.SUPPRESS)
    p.add_argument("--config", metavar="FILE.toml", help="TOML file of settings (flat keys or [sections]); "
                   "command-line flags override it", default=argparse.SUPPRESS)
    for g in groups:
        ag = p.add_argument_group(GROUP_TITLES.get(g, g))
        for f in fields(Config):
            if f.metadata["group"] != g and not (f.name in extra and g == groups[-1]):
                continue
            shown = f.default
            if isinstance(shown, str) and shown.startswith(str(ROOT)):
                shown = "<repo>" + shown[len(str(ROOT)):]
            kw: dict[str, Any] = {"help": f.metadata["help"] + f" (default: {shown!r})"}
            if isinstance(f.default, bool) or f.default is None:   # None: a yes/no flag with an automatic default
                kw["action"] = argparse.BooleanOptionalAction
            else:
                kw["type"] = _flag_type(f.name)
                if f.metadata["choices"]:
                    kw["metavar"] = "{" + ",".join(map(str, f.metadata["choices"])) + "}"
            ag.add_argument(flag_name(f.name), dest=f.name, **kw)
    return p


def _toml():
    """The TOML parser: tomllib (Python 3.11+), on 3.10 the same parser as the tomli package (setup.cfg
    declares it there). Imported only to read a config file, so a 3.10 machine without tomli (the
    offline bundle's wheel is installed without dependencies) still runs every script without one."""
    if sys.version_info >= (3, 11):
        import tomllib
        return tomllib
    try:
        import tomli
    except ImportError:
        raise ConfigError("reading a --config file on Python 3.10 needs the tomli package: "
                          "pip install 'tomli>=1.1' (or pass the settings as flags)") from None
    return tomli


def load_file(path: str | Path) -> dict:
    """Read a TOML config file into a flat dict of Config fields ([sections] are flattened)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    toml = _toml()
    try:
        raw = toml.loads(path.read_text())
    except toml.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}")
    flat: dict[str, Any] = {}
    for k, v in raw.items():
        if k == SEARCH_SPACE:
            continue
        if isinstance(v, dict):
            flat.update(v)
        else:
            flat[k] = v
    return flat


def resolve(args: argparse.Namespace | dict | None = None, **overrides) -> Config:
    """Defaults < config file (args.config) < explicitly given args < overrides. Every value goes
    through `convert` (the same check as its flag); a bad one is a ConfigError naming the setting,
    the value, what it accepts and, for a file, the file."""
    given = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args or {})
    cfg_file = given.pop("config", None)
    from_file = load_file(cfg_file) if cfg_file else {}
    from_code = {**given, **overrides}
    unknown = sorted((set(from_file) | set(from_code)) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}"
                         + (f" in {cfg_file}" if cfg_file else "") + "; see --help for the valid names")
    values: dict[str, Any] = {}
    for source, where in ((from_file, f" in {cfg_file}"), (from_code, "")):
        for k, v in source.items():
            try:
                values[k] = convert(k, v)
            except ConfigError as e:
                raise ConfigError(f"setting {k} = {v!r}{where} {e}") from None
    cfg = Config(**values)
    cfg.given = frozenset(values)   # what the user set (file or flag): it overrides recorded settings
    return cfg
