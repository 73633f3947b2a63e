"""timm model creation (hub or local pretrained weights), freezing, checkpoints.

A checkpoint describes itself (docs/ARCHITECTURE.md, "Checkpoint"): it holds
only plain types and tensors, loads with ``torch.load(..., weights_only=True)``
and rebuilds its model with no network and no other file.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

import foldkit
from foldkit.errors import FoldkitError, did_you_mean
from foldkit.io import atomic_write_with


class ModelError(FoldkitError, RuntimeError):
    """The model cannot be built as asked; the message says why and what to do."""


# create_model's keyword -> the flag that set it (a model whose constructor lacks it is the user's to fix)
_FLAG_OF = {"drop_rate": "--drop-rate", "drop_path_rate": "--drop-path", "img_size": "--img-size"}


def check_model_name(name: str) -> None:
    """ModelError unless timm knows `name`, suggesting the closest names."""
    import timm

    if not timm.is_model(name):
        raise ModelError(f"--model {name!r} is not a timm model{did_you_mean(name, timm.list_models())} "
                         "(see timm.list_models())")


def has_pretrained_weights(name: str) -> bool:
    """Whether timm publishes pretrained weights for `name` (its default tag's, from the hub or a URL);
    ModelError for a name timm does not know."""
    from timm.models import get_pretrained_cfg
    check_model_name(name)
    cfg = get_pretrained_cfg(name)
    return bool(cfg is not None and cfg.has_weights)


def fixed_input_size(name: str) -> bool:
    """True for models built for one input size (ViT, Swin, ...: timm's pretrained config says
    fixed_input_size); they are created for the training size (img_size), which timm also resamples
    pretrained position embeddings to."""
    from timm.models import get_pretrained_cfg
    return bool(getattr(get_pretrained_cfg(name), "fixed_input_size", False))


def _timm_create(name: str, **kw) -> nn.Module:
    """timm.create_model; a keyword the model's constructor does not take (timm passes them through
    to it, so only the constructor knows) becomes a ModelError naming the flag."""
    import timm
    try:
        return timm.create_model(name, **kw)
    except TypeError as e:
        for key, flag in _FLAG_OF.items():
            if f"'{key}'" in str(e) and key in kw:
                raise ModelError(f"{flag} {kw[key]}: model {name!r} does not support it (its constructor takes "
                                 f"no {key}); leave {flag} out for this model") from None
        raise


def create_model(name: str, num_classes: int, in_chans: int = 3, pretrained: bool = False,
                 pretrained_file: str = "", drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 img_size: int = 0) -> nn.Module:
    """A timm model with a fresh `num_classes` head.

    pretrained_file: a local ImageNet checkpoint loaded through timm's own
    mechanism (pretrained_cfg_overlay=dict(file=...)), so offline machines and
    Kaggle notebooks work. pretrained without a file downloads from the hub once, into the hub's
    cache (HF_HOME), as timm does; unreachable, it is one ModelError naming both ways out.
    img_size: the training size, passed to models built for one size (fixed_input_size).
    """
    check_model_name(name)
    kw = dict(num_classes=num_classes, in_chans=in_chans)
    if drop_rate:
        kw["drop_rate"] = drop_rate
    if drop_path_rate:
        kw["drop_path_rate"] = drop_path_rate
    if img_size and fixed_input_size(name):
        kw["img_size"] = img_size
    if pretrained_file:
        path = Path(pretrained_file)
        if not path.is_file():
            raise ModelError(f"--pretrained-file {path} does not exist")
        try:
            model = _timm_create(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kw)
        except ModelError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure here means the file does not fit this model
            raise ModelError(f"cannot load {path} as pretrained weights of {name!r}: "
                             f"{type(e).__name__}: {str(e)[:300]}") from None
        return zero_head(model)
    if pretrained:
        # Fail fast instead of hanging when offline.
        os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
        os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "20")
        try:
            return zero_head(_timm_create(name, pretrained=True, **kw))
        except ModelError:
            raise
        except Exception as e:  # noqa: BLE001 - hub client errors come in many types
            raise ModelError(
                f"could not get pretrained weights for {name!r} from the hub ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:200] if str(e) else ''}): pass --pretrained-file PATH (the "
                "weights downloaded elsewhere), or --no-pretrained to train from scratch") from None
    return _timm_create(name, pretrained=False, **kw)


def zero_head(model: nn.Module) -> nn.Module:
    """Start a new head on pretrained features from zero logits. Some timm heads start with
    weights up to +-1/sqrt(fan_in) (mobilenetv2: +-0.7), whose large initial logits stall
    head-only fine-tuning (benchmarks/RESULTS.md, "A zero-initialised head")."""
    head = model.get_classifier()
    for m in head.modules() if isinstance(head, nn.Module) else []:
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.zeros_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def data_config(model_name: str, img_size: int = 0, in_chans: int = 3, crop_pct: float = 0.0,
                test_img_size: int = 0) -> dict:
    """Input size, mean/std, interpolation and crop_pct from the model's pretrained config (timm's
    resolve_data_config; no model is built), with optional image-size and crop overrides.
    test_img_size (FixRes): the size validation, OOF, predict and the bundle use, recorded as
    `test_input_size` when it differs from the training size (images.eval_size reads it)."""
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    pc = get_pretrained_cfg(model_name)
    cfg = resolve_data_config(pretrained_cfg=pc.to_dict() if pc is not None else {})
    mean, std = list(cfg["mean"]), list(cfg["std"])
    if in_chans == 1 and len(mean) == 3:
        mean, std = [sum(mean) / 3], [sum(std) / 3]
    size = img_size or cfg["input_size"][-1]
    out = {"input_size": [in_chans, size, size], "mean": mean, "std": std,
           "interpolation": cfg.get("interpolation", "bilinear"),
           "crop_pct": crop_pct or cfg.get("crop_pct", 0.875)}
    if test_img_size and test_img_size != size:
        out["test_input_size"] = [in_chans, test_img_size, test_img_size]
    return out


def head_parameters(model: nn.Module) -> list[str]:
    """Names of the classifier parameters (what a frozen-backbone phase trains)."""
    head = model.get_classifier()
    ids = {id(p) for p in head.parameters()}
    return [n for n, p in model.named_parameters() if id(p) in ids]


def set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze everything but the classifier (the head-only phase of fine-tuning)."""
    head = set(head_parameters(model))
    for n, p in model.named_parameters():
        p.requires_grad_(n in head or not frozen)
    model._foldkit_frozen = frozen


def _batchnorms(model: nn.Module) -> list[nn.Module]:
    head = {id(m) for m in model.get_classifier().modules()} if isinstance(model.get_classifier(), nn.Module) else set()
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in head]


def bn_is_folded(model: nn.Module) -> bool:
    """True when every BatchNorm layer is an identity (weight 1, running mean 0, running var + eps 1)
    carrying the folded shift in its bias: weights exported from a deployed model with BN folded
    into the convolutions. Training such BN
    layers replaces the identity with batch statistics: a different network."""
    bns = [m for m in _batchnorms(model) if m.running_var is not None]
    if not bns:
        return False
    with torch.no_grad():
        if not any(m.bias is not None and bool(m.bias.abs().max() > 0) for m in bns):
            return False     # a freshly initialised network: identity BN with zero shifts, nothing folded
        return all(torch.allclose(m.running_mean, torch.zeros_like(m.running_mean), atol=1e-6)
                   and torch.allclose(m.running_var + m.eps, torch.ones_like(m.running_var), atol=1e-4)
                   and (m.weight is None or torch.allclose(m.weight, torch.ones_like(m.weight), atol=1e-6))
                   for m in bns)


def choose_bn(mode: str, pretrained: bool, folded: bool, batch_size: int) -> tuple[bool, str]:
    """(freeze BN statistics?, why) for --bn train|frozen|auto. auto keeps pretrained statistics when
    the pretrained BN is folded, or when the per-device batch is too small (< 16) to estimate them;
    from-scratch models always train their BN."""
    if mode == "frozen":
        return True, "--bn frozen"
    if mode == "train" or not pretrained:
        return False, "--bn train" if mode == "train" else "trained from scratch"
    if folded:
        return True, "the pretrained BatchNorm layers are identities (folded into the convolutions)"
    if batch_size < 16:
        return True, f"batch size {batch_size} < 16 is too small for batch statistics"
    return False, "pretrained statistics re-estimated on this data (batch >= 16)"


def train_mode(model: nn.Module, freeze_bn: bool = False) -> None:
    """model.train(), but backbone BatchNorm layers stay in eval mode (their running statistics fixed,
    their scale and shift still learned, as the Keras fine-tuning guide does) when the backbone is
    frozen or freeze_bn is set. Hand-written instead of timm's freeze_batch_norm_2d: the modules stay
    BatchNorm, so checkpoints keep the same keys and rebuild as plain timm models."""
    model.train()
    if freeze_bn or getattr(model, "_foldkit_frozen", False):
        for m in _batchnorms(model):
            m.eval()


def param_groups(model: nn.Module, weight_decay: float, backbone_lr: float, layer_decay: float) -> list[dict]:
    """timm's parameter groups (no weight decay on biases and norms; layer-wise LR decay when
    layer_decay > 0), split into head and backbone: backbone groups get lr_scale x backbone_lr and the
    key "backbone" (for the LR ramp after unfreezing). timm's schedulers apply lr_scale."""
    from timm.optim import param_groups_layer_decay, param_groups_weight_decay

    no_wd = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    if layer_decay:
        groups = param_groups_layer_decay(model, weight_decay, no_weight_decay_list=no_wd, layer_decay=layer_decay)
    else:
        groups = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=no_wd)
    head = {id(p) for p in model.get_classifier().parameters()}
    out = []
    for g in groups:
        for is_head in (True, False):
            ps = [p for p in g["params"] if (id(p) in head) == is_head]
            if ps:
                scale = g.get("lr_scale", 1.0) * (1.0 if is_head else backbone_lr)
                out.append({**g, "params": ps, "lr_scale": scale, "base_lr_scale": scale, "backbone": not is_head})
    return out


class UnfreezeWarmup:
    """Wraps a timm scheduler: after the backbone is unfrozen at optimizer step `start`, the backbone
    groups' lr_scale ramps linearly from 0 to its base value over `steps` steps (the head keeps its
    LR), so the first unfrozen updates cannot wreck the pretrained features. Stateless beyond the
    wrapped scheduler (the ramp is a function of the step count and each group's "base_lr_scale",
    which the optimizer's state carries), so resume stays exact."""

    def __init__(self, scheduler, optimizer, start: int, steps: int):
        self.scheduler, self.optimizer, self.start, self.steps = scheduler, optimizer, start, max(1, steps)

    def step_update(self, num_updates: int) -> None:
        ramp = min(1.0, max(0.0, (num_updates - self.start) / self.steps)) if self.start > 0 else 1.0
        for g in self.optimizer.param_groups:
            if g.get("backbone"):
                g["lr_scale"] = g["base_lr_scale"] * ramp
        self.scheduler.step_update(num_updates=num_updates)

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


def versions() -> dict:
    import timm
    import torchvision
    return {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "timm": str(timm.__version__), "foldkit": str(foldkit.__version__)}


def _plain(v):
    """Config values to plain types (a weights_only load accepts nothing else)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, torch.Tensor):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    return v


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model under DDP / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def make_checkpoint(model: nn.Module, *, model_name: str, classes: list, data_cfg: dict, fold: int,
                    epoch: int, metric_name: str, metric_value: float, config: dict, folds_sha256: str,
                    **extra) -> dict:
    m = unwrap(model)
    ckpt = {
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in m.state_dict().items()},
        "model_name": model_name, "num_classes": len(classes), "classes": _plain(list(classes)),
        "in_chans": int(data_cfg["input_size"][0]), "data_config": _plain(data_cfg),
        "fold": int(fold), "epoch": int(epoch),
        "metric": {"name": metric_name, "value": float(metric_value)},
        "config": _plain(config), "versions": versions(), "folds_sha256": folds_sha256,
    }
    ckpt.update(extra)
    return ckpt


def save_checkpoint(ckpt: dict, path: str | Path) -> None:
    atomic_write_with(path, lambda tmp: torch.save(ckpt, tmp))


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"{path}: not a readable foldkit checkpoint ({type(e).__name__}: {str(e)[:200]})") from None


def model_from_checkpoint(ckpt: dict) -> nn.Module:
    """Rebuild the model of a checkpoint: no network, no other file."""
    import timm

    for key in ("state_dict", "model_name", "num_classes", "in_chans"):
        if key not in ckpt:
            raise ModelError(f"checkpoint lacks {key!r}: not a foldkit checkpoint")
    kw = {}
    if fixed_input_size(ckpt["model_name"]) and ckpt.get("data_config"):   # trained at its own size
        kw["img_size"] = ckpt["data_config"]["input_size"][-1]
    model = timm.create_model(ckpt["model_name"], pretrained=False, num_classes=ckpt["num_classes"],
                              in_chans=ckpt["in_chans"], **kw)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
