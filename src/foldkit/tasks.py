"""What a task kind means to training: the targets, the outputs, the loss, the metric.

single      one class per image: softmax outputs, cross-entropy (timm Mixup / SoftTargetCrossEntropy)
multilabel  tags per image: one sigmoid output per label, BCEWithLogitsLoss on the multi-hot targets;
            mixup/cutmix mix the multi-hot targets of the pair; label smoothing eps makes a target
            y * (1 - eps) + eps / 2 (cross-entropy's eps / C with the C = 2 outcomes of each label)
regression  one output, MSE or Huber loss on the target standardised with the mean/std of the fold's
            training part (`TargetScale`, stored in the checkpoint as `target`); predictions are
            de-standardised before they are scored or written

The task kind is read from folds_meta.json (`task`; folds files written before it: single).
"""
from __future__ import annotations

import numpy as np

from foldkit.errors import ConfigError, FoldkitError
from foldkit.metrics import DEFAULT_METRIC, for_task

ACTIVATION = {"single": "softmax", "multilabel": "sigmoid", "regression": "identity"}


def task_of(meta: dict) -> str:
    return meta.get("task", "single")


def check_settings(cfg, task: str):
    """cfg with the task's metric when --metric was not given; one ConfigError line for a setting that
    does not fit the task (a metric of another kind, balancing, mixup or label smoothing on a number)."""
    from foldkit.runtime.distributed import with_settings

    given = cfg.given
    if task == "single":
        if cfg.loss != "auto":
            raise ConfigError(f"--loss {cfg.loss} is for regression; single-label training uses cross-entropy")
        if cfg.metric not in for_task(task):
            raise ConfigError(f"--metric {cfg.metric} scores {task_kinds(cfg.metric)} tasks, this one is "
                              f"single-label: use one of {', '.join(for_task(task))}")
        return cfg
    if "metric" in given and cfg.metric not in for_task(task):
        raise ConfigError(f"--metric {cfg.metric} does not score a {task} task; use one of "
                          f"{', '.join(for_task(task))}")
    if cfg.balance != "none":
        raise ConfigError(f"--balance {cfg.balance} is for single-label tasks; this one is {task}")
    if task == "multilabel" and cfg.loss != "auto":
        raise ConfigError(f"--loss {cfg.loss} is for regression; multi-label training uses BCEWithLogitsLoss")
    if task == "regression":
        if cfg.mixup > 0 or cfg.cutmix > 0:
            raise ConfigError("--mixup/--cutmix are for classification; this task is regression")
        if "label_smoothing" in given and cfg.label_smoothing:
            raise ConfigError("--label-smoothing is for classification; this task is regression")
    metric = cfg.metric if "metric" in given else DEFAULT_METRIC[task]
    return with_settings(cfg, metric=metric, label_smoothing=0.0 if task == "regression" else cfg.label_smoothing)


def task_kinds(metric: str) -> str:
    from foldkit.metrics import METRICS
    return "/".join(METRICS[metric].tasks)


def targets(task: str, table, meta: dict) -> np.ndarray:
    """The training targets of every row: class indexes, (N, C) multi-hot float32, or (N,) float32."""
    if task == "multilabel":
        from foldkit.data.reading import multi_hot
        return multi_hot(table["label"], meta["label_sep"], meta["classes"])
    if task == "regression":
        return table["label"].to_numpy(dtype=np.float32)
    class_index = {str(c): i for i, c in enumerate(meta["classes"])}
    return np.array([class_index[str(v)] for v in table["label"]], dtype=np.int64)


def n_outputs(task: str, classes: list) -> int:
    return 1 if task == "regression" else len(classes)


class TargetScale:
    """A regression target's standardisation: mean/std of the fold's training part."""

    def __init__(self, mean: float = 0.0, std: float = 1.0):
        self.mean, self.std = float(mean), float(std) if std > 0 else 1.0

    @classmethod
    def fit(cls, y: np.ndarray) -> "TargetScale":
        return cls(float(np.mean(y)), float(np.std(y)))

    def to_json(self) -> dict:
        return {"mean": self.mean, "std": self.std}

    def restore(self, out: np.ndarray) -> np.ndarray:
        """Model outputs (N, 1) -> predictions in the target's units (N,)."""
        return np.asarray(out, dtype=np.float64).reshape(len(out)) * self.std + self.mean


def build_loss(task: str, cfg, scale: TargetScale | None):
    """The training loss of a multi-label or regression task (single-label: fit.build_training)."""
    import torch

    if task == "multilabel":
        eps = cfg.label_smoothing

        class SmoothBCE(torch.nn.Module):
            def forward(self, out, y):
                return torch.nn.functional.binary_cross_entropy_with_logits(out.float(), y * (1 - eps) + eps / 2)
        return SmoothBCE()

    base = torch.nn.HuberLoss() if cfg.loss == "huber" else torch.nn.MSELoss()

    class Standardised(torch.nn.Module):
        def forward(self, out, y):
            return base(out.float().reshape(len(y)), (y.float() - scale.mean) / scale.std)
    return Standardised()


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


def valid_loss(task: str, out: np.ndarray, y: np.ndarray, scale: TargetScale | None) -> float:
    """Validation loss: BCE of the sigmoid outputs; regression: MSE in standardised units."""
    if task == "multilabel":
        p = np.clip(out, 1e-7, 1 - 1e-7)
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()) if len(y) else float("nan")
    pred = (scale.restore(out) - scale.mean) / scale.std
    return float(np.mean((pred - (y - scale.mean) / scale.std) ** 2)) if len(y) else float("nan")


def oof_columns(task: str, meta: dict, out: np.ndarray, scale: TargetScale | None) -> dict:
    """The OOF columns after id, fold, label: multi-label `pred` (the tags with probability >= 0.5,
    joined by the separator) and `prob_<label>`; regression `pred` (the de-standardised number)."""
    if task == "regression":
        return {"pred": scale.restore(out)}
    classes, sep = meta["classes"], meta["label_sep"]
    from foldkit.data.reading import join_tags
    return {"pred": join_tags(out >= 0.5, classes, sep),
            **{f"prob_{c}": out[:, j] for j, c in enumerate(classes)}}


def to_predictions(task: str, activated: np.ndarray, target: dict | None = None) -> np.ndarray:
    """One model's activated outputs (ACTIVATION) -> what the plan combines: single-label (N, C)
    probabilities and multi-label (N, L) sigmoid probabilities as they are; regression (N, 1) in the
    target's units (each fold's model has its own standardisation: `target` {mean, std} of its checkpoint)."""
    if task != "regression":
        return np.asarray(activated, dtype=np.float64)
    if not target:
        raise FoldkitError("a regression checkpoint without its target standardisation (`target`): re-train it "
                          "with this foldkit")
    return TargetScale(target["mean"], target["std"]).restore(activated).reshape(-1, 1)


def check_combination(task: str, ensemble: str = "mean", blend: str = "mean") -> None:
    """Refuse, in one line, an ensemble or blend mode whose arithmetic is for softmax probabilities: the
    geometric/logit mean renormalises across classes and the rank blend across rows, which would write a
    wrong multi-label or regression file."""
    if task == "single":
        return
    for flag, mode in (("--ensemble", ensemble), ("--blend", blend)):
        if mode not in ("mean", "optimize"):
            raise ConfigError(f"{flag} {mode} averages softmax probabilities; this competition is {task}: use "
                              f"{'--ensemble mean' if flag == '--ensemble' else '--blend mean or optimize'}")
