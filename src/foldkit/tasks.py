"""The task registry: what a task kind means to training, prediction and the report, in one place.

    TASKS[name]   the entry of a task kind (folds_meta.json `task`; folds files written before it: single):
                  its outputs and activation, targets, loss, default metric, OOF columns, submission modes,
                  post-processing steps, the constant answers a model must beat
                  (`constant_answer` picks the best for a metric) and the settings that do not fit it
    ACTIVATIONS   activation name -> its numpy and torch functions (the one table; `activate` is the numpy
                  path the torch-free ONNX runner takes)
    register      adds an entry (a new kind subclasses Task, or one of the three, and registers itself)

single      one class per image: softmax outputs, cross-entropy (timm Mixup / SoftTargetCrossEntropy, built
            by train.fit)
multilabel  tags per image: one sigmoid output per label, BCEWithLogitsLoss on the multi-hot targets;
            mixup/cutmix mix the multi-hot targets of the pair; label smoothing eps makes a target
            y * (1 - eps) + eps / 2 (cross-entropy's eps / C with the C = 2 outcomes of each label)
regression  one output, MSE or Huber loss on the target standardised with the mean/std of the fold's
            training part (`TargetScale`, stored in the checkpoint as `target`), after the transform the
            metric asks for (rmsle: log1p, `TRANSFORMS`); predictions are de-standardised (and expm1'd)
            before they are scored or written, so OOF, CV, submissions and the bundle are on the target's scale

The report's sections per task kind are report's own (one dict keyed by the task name there).
This module must not import torch (the bundle's ONNX runner reads it): the torch activations are tensor methods.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from foldkit.ensemble import softmax
from foldkit.errors import ConfigError, FoldkitError
from foldkit.metrics import METRICS, for_task, is_better, score
from foldkit.tags import join_tags, multi_hot


def _sigmoid(z: np.ndarray) -> np.ndarray:
    from scipy.special import expit
    return expit(z)


@dataclass(frozen=True)
class Activation:
    """A model's raw outputs -> its task's predictions, on numpy arrays and on torch tensors."""
    numpy: Callable[[np.ndarray], np.ndarray]
    torch: Callable      # a torch tensor's own methods: no torch import here


ACTIVATIONS: dict[str, Activation] = {
    "softmax": Activation(softmax, lambda z: z.softmax(dim=1)),
    "sigmoid": Activation(_sigmoid, lambda z: z.sigmoid()),
    "identity": Activation(lambda z: z, lambda z: z),
}


def activate(z: np.ndarray, activation: str) -> np.ndarray:
    """Raw outputs -> predictions with ACTIVATIONS' numpy function, in float32 (the ONNX runner, the export check)."""
    return ACTIVATIONS[activation].numpy(np.asarray(z, dtype=np.float32))


@dataclass(frozen=True)
class Transform:
    """A regression target's transform before standardisation: forward on numpy arrays and torch tensors
    (the tensor's own methods: no torch import here), and its numpy inverse."""
    numpy: Callable[[np.ndarray], np.ndarray]
    torch: Callable
    inverse: Callable[[np.ndarray], np.ndarray]


# the metric picks it (metrics.Metric.target): rmsle trains on log1p(target), so MSE in the model's units is
# the squared log error the metric scores; predictions go back through expm1
TRANSFORMS: dict[str, Transform] = {
    "none": Transform(lambda y: y, lambda y: y, lambda z: z),
    "log1p": Transform(np.log1p, lambda y: y.log1p(), np.expm1),
}


class TargetScale:
    """A regression target's standardisation: mean/std of the fold's training part, after the metric's
    transform (TRANSFORMS; stored in the checkpoint's `target` only when not none, so checkpoints written
    before it read as none)."""

    def __init__(self, mean: float = 0.0, std: float = 1.0, transform: str = "none"):
        self.mean, self.std = float(mean), float(std) if std > 0 else 1.0
        self.transform = transform

    @classmethod
    def fit(cls, y: np.ndarray, transform: str = "none") -> "TargetScale":
        t = TRANSFORMS[transform].numpy(np.asarray(y, dtype=np.float64))
        return cls(float(np.mean(t)), float(np.std(t)), transform)

    @classmethod
    def from_json(cls, target: dict) -> "TargetScale":
        """A checkpoint's `target` (to_json)."""
        return cls(target["mean"], target["std"], target.get("transform", "none"))

    def to_json(self) -> dict:
        extra = {"transform": self.transform} if self.transform != "none" else {}   # old checkpoints: none
        return {"mean": self.mean, "std": self.std, **extra}

    def standardise(self, y):
        """Targets (numpy or a torch tensor) -> the model's units."""
        t = TRANSFORMS[self.transform]
        return ((t.numpy(np.asarray(y, dtype=np.float64)) if isinstance(y, np.ndarray) else t.torch(y))
                - self.mean) / self.std

    def restore(self, out: np.ndarray) -> np.ndarray:
        """Model outputs (N, 1) -> predictions in the target's units (N,)."""
        z = np.asarray(out, dtype=np.float64).reshape(len(out)) * self.std + self.mean
        return TRANSFORMS[self.transform].inverse(z)


def task_kinds(metric: str) -> str:
    return "/".join(METRICS[metric].tasks)


def _refuse_clip(clip: str, task: str) -> None:
    if clip == "on":
        raise ConfigError("--clip on (clipping predictions to the training range) is for regression; this task is "
                          f"{task}")


class Task:
    """One task kind. Class attributes say what it is; methods do what differs between kinds."""
    name = ""
    words = ""                    # how the kind is named in messages ("single-label")
    activation = "softmax"        # ACTIVATIONS key
    default_metric = "accuracy"
    is_classification = True      # class or label outputs: mixup, label smoothing, classification metrics
    label = "class"               # what one label value is: class (a name), tags (names joined), number
    submission_modes = ("label", "probs")
    standardises = False          # trained on a standardised target (TargetScale)

    @property
    def exclusive(self) -> bool:
        """One class per row: softmax probabilities that sum to 1 (cross-entropy, argmax, accuracy/logloss)."""
        return self.activation == "softmax"

    def metrics(self) -> list[str]:
        """The metrics that score this kind (metrics.Metric.tasks)."""
        return for_task(self.name)

    def n_outputs(self, classes: list) -> int:
        return len(classes)

    def describe(self, classes: list) -> str:
        """What is predicted, in words."""
        return f"{len(classes)} classes"

    def check_settings(self, cfg):
        """cfg with the task's metric when --metric was not given; one ConfigError line for a setting that
        does not fit the task."""
        raise NotImplementedError

    def targets(self, table: pd.DataFrame, meta: dict) -> np.ndarray:
        """The training targets of every row."""
        class_index = {str(c): i for i, c in enumerate(meta["classes"])}
        return np.array([class_index[str(v)] for v in table["label"]], dtype=np.int64)

    def target_scale(self, metric: str, y: np.ndarray) -> TargetScale | None:
        """The standardisation fitted on a fold's training targets (regression), else None."""
        return None

    def check_targets(self, cfg, y: np.ndarray, where: str) -> str:
        """One ConfigError line for training targets the metric cannot score; else a hint for the log ('' none)."""
        return ""

    def build_loss(self, cfg, scale: TargetScale | None):
        """The training loss (None: the softmax cross-entropy train.fit builds with timm's Mixup)."""
        return None

    def valid_loss(self, out: np.ndarray, y: np.ndarray, scale: TargetScale | None) -> float:
        """The validation loss of activated outputs against the targets."""
        raise NotImplementedError

    def oof_columns(self, meta: dict, out: np.ndarray, scale: TargetScale | None) -> dict:
        """The OOF columns after id, fold, label."""
        classes = meta["classes"]
        return {"pred": [classes[i] for i in out.argmax(1)], **{f"prob_{c}": out[:, j] for j, c in enumerate(classes)}}

    def to_predictions(self, activated: np.ndarray, target: dict | None = None) -> np.ndarray:
        """One model's activated outputs -> what the plan combines."""
        return np.asarray(activated, dtype=np.float64)

    def constant_answers(self, y: np.ndarray, n_outputs: int) -> list[tuple[str, np.ndarray]]:
        """The constant answers fitted on these targets, as (words, the one prediction row every image gets):
        the best of them for a metric (`constant_answer`) is the score a model must beat. Single-label: the
        class frequencies as probabilities, and always the same class (each of the ten commonest)."""
        counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_outputs)[:n_outputs].astype(np.float64)
        answers = [("the class frequencies as probabilities", counts / max(counts.sum(), 1.0))]
        for rank, c in enumerate(np.argsort(-counts, kind="stable")[:10]):
            answers.append((f"always the {_ordinal(rank)}commonest class", np.eye(n_outputs)[c]))
        return answers

    def label_values(self, p: np.ndarray, classes: list, sep: str) -> list:
        """One value per row of a label-mode submission."""
        return [classes[j] for j in p.argmax(1)]

    def post_steps(self, metric: str, calibrate: str, thresholds: str, clip: str) -> tuple[str, ...]:
        """Which post-processing steps (predict.calibrate.POSTPROCESS) the switches turn on for this kind; a
        switch that does not apply is refused when set on, never ignored."""
        raise NotImplementedError

    def check_combination(self, ensemble: str = "mean", blend: str = "mean") -> None:
        """Refuse, in one line, an ensemble or blend mode whose arithmetic is for softmax probabilities: the
        geometric/logit mean renormalises across classes and the rank blend across rows."""
        if self.exclusive:
            return
        for flag, mode in (("--ensemble", ensemble), ("--blend", blend)):
            if mode not in ("mean", "hill", "optimize"):
                raise ConfigError(f"{flag} {mode} averages softmax probabilities; this competition is {self.name}: "
                                  f"use {'--ensemble mean' if flag == '--ensemble' else '--blend mean, hill or optimize'}")

    def _check_metric(self, cfg) -> None:
        if "metric" in cfg.given and cfg.metric not in self.metrics():
            raise ConfigError(f"--metric {cfg.metric} does not score a {self.name} task; use one of "
                              f"{', '.join(self.metrics())}")


class SingleLabel(Task):
    name, words = "single", "single-label"

    def check_settings(self, cfg):
        if cfg.loss != "auto":
            raise ConfigError(f"--loss {cfg.loss} is for regression; {self.words} training uses cross-entropy")
        if cfg.metric not in self.metrics():
            raise ConfigError(f"--metric {cfg.metric} scores {task_kinds(cfg.metric)} tasks, this one is "
                              f"{self.words}: use one of {', '.join(self.metrics())}")
        return cfg

    def valid_loss(self, out, y, scale):
        """Cross-entropy of the softmax probabilities against the class indexes."""
        p = np.clip(out[np.arange(len(y)), y], 1e-15, 1.0)
        return float(-np.log(p).mean()) if len(y) else float("nan")

    def post_steps(self, metric, calibrate, thresholds, clip):
        _refuse_clip(clip, self.name)
        steps = []
        if calibrate == "on" or (calibrate == "auto" and metric == "logloss"):
            steps.append("temperature")
        if thresholds == "on" or (thresholds == "auto" and metric in ("f1", "f1_macro", "qwk")):
            steps.append("cutpoints" if metric == "qwk" else "thresholds")
        return tuple(steps)


# multi-label metrics whose per-label thresholds are tuned when --thresholds is auto
ML_F_METRICS = ("f1_samples", "f2_samples", "f1_micro", "f1_macro")


class MultiLabel(Task):
    name, words = "multilabel", "multi-label"
    activation, default_metric, label = "sigmoid", "f1_samples", "tags"

    def describe(self, classes):
        return f"{len(classes)} labels (multi-label)"

    def check_settings(self, cfg):
        self._check_metric(cfg)
        if cfg.balance != "none":
            raise ConfigError(f"--balance {cfg.balance} is for single-label tasks; this one is {self.name}")
        if cfg.loss != "auto":
            raise ConfigError(f"--loss {cfg.loss} is for regression; {self.words} training uses BCEWithLogitsLoss")
        from foldkit.config import with_settings   # lazy: config imports predict.blend, which imports this module
        return with_settings(cfg, metric=cfg.metric if "metric" in cfg.given else self.default_metric)

    def targets(self, table, meta):
        """(N, L) multi-hot float32."""
        return multi_hot(table["label"], meta["label_sep"], meta["classes"])

    def build_loss(self, cfg, scale):
        import torch
        eps = cfg.label_smoothing

        class SmoothBCE(torch.nn.Module):
            def forward(self, out, y):
                return torch.nn.functional.binary_cross_entropy_with_logits(out.float(), y * (1 - eps) + eps / 2)
        return SmoothBCE()

    def valid_loss(self, out, y, scale):
        """BCE of the sigmoid outputs."""
        p = np.clip(out, 1e-7, 1 - 1e-7)
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()) if len(y) else float("nan")

    def oof_columns(self, meta, out, scale):
        """`pred` (the tags with probability >= 0.5, joined by the separator) and `prob_<label>`."""
        classes, sep = meta["classes"], meta["label_sep"]
        return {"pred": join_tags(out >= 0.5, classes, sep),
                **{f"prob_{c}": out[:, j] for j, c in enumerate(classes)}}

    def label_values(self, p, classes, sep):
        """The tags at >= 0.5 (after the plan's per-label thresholds, which put each label's cut at 0.5)."""
        return join_tags(p >= 0.5, classes, sep)

    def constant_answers(self, y, n_outputs):
        """The tag frequencies as probabilities (AUC, map), and the k commonest tags on every image (F metrics)."""
        freq = np.asarray(y, dtype=np.float64).mean(0) if len(y) else np.zeros(n_outputs)
        order = np.argsort(-freq, kind="stable")
        answers = []
        for k in range(1, min(len(freq), 10) + 1):
            row = np.zeros(len(freq))
            row[order[:k]] = 1.0
            answers.append(("the commonest tag on every image" if k == 1 else
                            f"the {k} commonest tags on every image", row))
        return answers + [("the tag frequencies as probabilities", freq)]

    def post_steps(self, metric, calibrate, thresholds, clip):
        _refuse_clip(clip, self.name)
        if calibrate == "on":
            raise ConfigError("--calibrate on (temperature scaling of a softmax) is for single-label tasks")
        on = thresholds == "on" or (thresholds == "auto" and metric in ML_F_METRICS)
        tags = metric in ML_F_METRICS      # a tags file (submission.file_metric): at least one tag per row
        return (("label_thresholds",) + (("top_tag",) if tags else ())) if on else ()


class Regression(Task):
    name = words = "regression"
    activation, default_metric, label = "identity", "rmse", "number"
    is_classification, standardises = False, True
    submission_modes = ("label",)

    def n_outputs(self, classes):
        return 1

    def describe(self, classes):
        return "regression (one number per image)"

    def check_settings(self, cfg):
        self._check_metric(cfg)
        if cfg.balance != "none":
            raise ConfigError(f"--balance {cfg.balance} is for single-label tasks; this one is {self.name}")
        if cfg.mixup > 0 or cfg.cutmix > 0:
            raise ConfigError("--mixup/--cutmix are for classification; this task is regression")
        if "label_smoothing" in cfg.given and cfg.label_smoothing:
            raise ConfigError("--label-smoothing is for classification; this task is regression")
        from foldkit.config import with_settings   # lazy: config imports predict.blend, which imports this module
        return with_settings(cfg, metric=cfg.metric if "metric" in cfg.given else self.default_metric,
                             label_smoothing=0.0)

    def targets(self, table, meta):
        """(N,) float32."""
        return table["label"].to_numpy(dtype=np.float32)

    def target_scale(self, metric, y):
        """Mean/std of the training targets after the metric's transform (metrics.Metric.target)."""
        return TargetScale.fit(y, METRICS[metric].target)

    def check_targets(self, cfg, y, where):
        """rmsle refuses a negative target (its log is undefined, Kaggle refuses it too). The default metric stays
        rmse: a Kaggle competition states its metric, and one scored by RMSE or MAE on prices would be trained
        for the wrong error; a positive target spanning orders of magnitude (prices, counts) gets a hint."""
        y = np.asarray(y, dtype=np.float64)
        if not len(y):
            return ""
        lo, hi = float(y.min()), float(y.max())
        if cfg.metric == "rmsle" and lo < 0:
            n = int((y < 0).sum())
            raise ConfigError(f"--metric rmsle: {where} has {n} negative target{'s' * (n > 1)} (smallest {lo:g}); "
                              "RMSLE takes log(1 + target) and is undefined below 0: use --metric rmse or mae, or "
                              "shift the targets to >= 0")
        if "metric" not in cfg.given and lo >= 0 and (1 + hi) / (1 + lo) >= 100:
            return (f"the targets are positive and span {lo:g} to {hi:g}: if the competition scores them by RMSLE (as "
                    "Kaggle scores prices and counts), pass --metric rmsle (trains on log1p of the target)")
        return ""

    def build_loss(self, cfg, scale):
        import torch
        base = torch.nn.HuberLoss() if cfg.loss == "huber" else torch.nn.MSELoss()

        class Standardised(torch.nn.Module):
            def forward(self, out, y):
                return base(out.float().reshape(len(y)), scale.standardise(y.float()))
        return Standardised()

    def valid_loss(self, out, y, scale):
        """MSE in standardised units (after the transform: the model's own units)."""
        pred = np.asarray(out, dtype=np.float64).reshape(len(y))
        return float(np.mean((pred - scale.standardise(np.asarray(y))) ** 2)) if len(y) else float("nan")

    def oof_columns(self, meta, out, scale):
        """`pred`: the de-standardised number."""
        return {"pred": scale.restore(out)}

    def to_predictions(self, activated, target=None):
        """(N, 1) in the target's units (each fold's model has its own standardisation: `target` {mean, std,
        transform (absent: none)} of its checkpoint)."""
        if not target:
            raise FoldkitError("a regression checkpoint without its target standardisation (`target`): re-train "
                               "it with this foldkit")
        return TargetScale.from_json(target).restore(activated).reshape(-1, 1)

    def label_values(self, p, classes, sep):
        return p.reshape(len(p)).tolist()

    def constant_answers(self, y, n_outputs):
        """The mean target (RMSE, R2), the median (MAE) and, for targets >= 0, expm1 of the mean log1p target
        (RMSLE: the constant that minimises it)."""
        y = np.asarray(y, dtype=np.float64)
        answers = [("the mean target", np.array([y.mean()])), ("the median target", np.array([np.median(y)]))]
        if len(y) and y.min() >= 0:
            answers.append(("expm1 of the mean log1p target", np.array([np.expm1(np.log1p(y).mean())])))
        return answers

    def post_steps(self, metric, calibrate, thresholds, clip):
        for flag, v in (("--calibrate", calibrate), ("--thresholds", thresholds)):
            if v == "on":
                raise ConfigError(f"{flag} on is for classification; this task is regression (--clip is its "
                                  "post-processing)")
        return ("clip",) if clip in ("on", "auto") else ()


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add a task kind to the registry (its name is what folds_meta.json records)."""
    TASKS[task.name] = task
    return task


for _kind in (SingleLabel, MultiLabel, Regression):
    register(_kind())


# The jobs by task name, for callers that hold the name (train.fit, predict): each reads the registry entry.

def task_of(meta: dict) -> str:
    """The task kind of folds_meta.json, a checkpoint or a plan (written before task kinds: single)."""
    return meta.get("task", "single")


def check_settings(cfg, task: str):
    """cfg checked and completed for the task kind (TASKS[task].check_settings)."""
    return TASKS[task].check_settings(cfg)


def targets(task: str, table, meta: dict) -> np.ndarray:
    return TASKS[task].targets(table, meta)


def n_outputs(task: str, classes: list) -> int:
    return TASKS[task].n_outputs(classes)


def build_loss(task: str, cfg, scale: TargetScale | None):
    return TASKS[task].build_loss(cfg, scale)


def valid_loss(task: str, out: np.ndarray, y: np.ndarray, scale: TargetScale | None) -> float:
    return TASKS[task].valid_loss(out, y, scale)


def oof_columns(task: str, meta: dict, out: np.ndarray, scale: TargetScale | None) -> dict:
    return TASKS[task].oof_columns(meta, out, scale)


def check_combination(task: str, ensemble: str = "mean", blend: str = "mean") -> None:
    TASKS[task].check_combination(ensemble, blend)


def _ordinal(rank: int) -> str:
    """'' for the first, '2nd ', '3rd ', '4th ' ... (rank 0-based, below ten)."""
    return "" if rank == 0 else f"{rank + 1}{ {1: 'nd', 2: 'rd'}.get(rank, 'th')} "


def constant_answer(task: str, metric: str, y_fit: np.ndarray, y_score: np.ndarray, n_outputs: int | None = None,
                    fold: np.ndarray | None = None) -> tuple[float, str]:
    """(score, words) of the best constant answer (Task.constant_answers) for the metric: fitted on y_fit and
    scored on y_score; with `fold` (the fold of each row, y_fit and y_score the same rows) each row's answer
    is fitted on the other folds' rows (all rows when only one fold is there), as out-of-fold predictions
    are. NaN when the metric is undefined for every answer (AUC of one class)."""
    y_fit, y_score = np.asarray(y_fit), np.asarray(y_score)
    kind = TASKS[task]
    if n_outputs is None:
        n_outputs = (int(max(y_fit.max(initial=0), y_score.max(initial=0))) + 1 if kind.exclusive
                     else (y_fit.shape[1] if y_fit.ndim == 2 else 1))
    if fold is None:
        answers = [(w, np.tile(row, (len(y_score), 1))) for w, row in kind.constant_answers(y_fit, n_outputs)]
    else:
        fold = np.asarray(fold)
        per_fold = {f: kind.constant_answers(y_fit[fold != f] if (fold != f).any() else y_fit, n_outputs)
                    for f in np.unique(fold)}
        words = [w for w, _ in next(iter(per_fold.values()))]
        answers = [(w, np.stack([per_fold[f][i][1] for f in fold])) for i, w in enumerate(words)]
    best, what = float("nan"), answers[0][0]
    for w, pred in answers:
        value = score(metric, y_score, pred)
        if np.isfinite(value) and is_better(metric, value, best):
            best, what = float(value), w
    return best, what


def multi_hot_mixup(cfg, n_labels: int):
    """timm's Mixup/CutMix mixing the images of each pair, and their multi-hot targets by the same lambda
    (timm's own target mixing one-hot encodes class indexes, which a multi-hot row is not)."""
    from timm.data import Mixup

    class MultiHotMixup(Mixup):
        def __call__(self, x, target):
            assert len(x) % 2 == 0, "mixup needs an even batch"
            lam = self._mix_elem(x) if self.mode == "elem" else (
                self._mix_pair(x) if self.mode == "pair" else self._mix_batch(x))
            target = target.float()
            return x, target * lam + target.flip(0) * (1.0 - lam)   # smoothing: in the loss

    return MultiHotMixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=0.0,
                         num_classes=n_labels)
