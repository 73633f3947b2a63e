"""Named augmentation presets -> torchvision.transforms.v2 pipelines from the model's data config.

The kit's images arrive as uint8 CHW tensors (decoded once with OpenCV), so
the presets are tensor-native torchvision v2 transforms (faster than timm's
PIL-based create_transform on the same recipes). Presets:

* ``none``   resize (shortest side to size/crop_pct) + centre crop: no randomness
* ``light``  RandomResizedCrop(scale 0.35-1) + flips
* ``medium`` the classic Keras ImageDataGenerator recipe: rotation 30 deg, shift 0.2,
             zoom 0.2, + flips
* ``heavy``  RandomResizedCrop(scale 0.08-1) + flips + TrivialAugmentWide
             (or RandAugment with --randaugment) + RandomErasing(p=0.25)

Flips: horizontal by default (``--no-hflip`` for digits and text), vertical with
``--vflip`` (satellite, microscopy). Mixup/CutMix work on batches (engine).
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2

PRESETS = ("none", "light", "medium", "heavy")

_INTERP = {"bilinear": v2.InterpolationMode.BILINEAR, "bicubic": v2.InterpolationMode.BICUBIC,
           "nearest": v2.InterpolationMode.NEAREST}


def _normalize(data_cfg: dict) -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(data_cfg["mean"], data_cfg["std"])]


def eval_transform(data_cfg: dict) -> v2.Compose:
    size = data_cfg["input_size"][-1]
    interp = _INTERP.get(data_cfg.get("interpolation"), v2.InterpolationMode.BILINEAR)
    crop_pct = data_cfg.get("crop_pct", 1.0) or 1.0
    resize = int(round(size / crop_pct))
    ops = [v2.Resize(resize, interpolation=interp, antialias=True)]
    if resize != size:
        ops.append(v2.CenterCrop(size))
    return v2.Compose(ops + _normalize(data_cfg))


def train_transform(data_cfg: dict, preset: str = "light", hflip: bool = True, vflip: bool = False,
                    randaugment: bool = False) -> v2.Compose:
    if preset not in PRESETS:
        raise ValueError(f"unknown --aug {preset!r}; choose from {', '.join(PRESETS)}")
    if preset == "none":
        return eval_transform(data_cfg)
    size = data_cfg["input_size"][-1]
    interp = _INTERP.get(data_cfg.get("interpolation"), v2.InterpolationMode.BILINEAR)
    flips = ([v2.RandomHorizontalFlip()] if hflip else []) + ([v2.RandomVerticalFlip()] if vflip else [])
    if preset == "light":
        ops = [v2.RandomResizedCrop(size, scale=(0.35, 1.0), interpolation=interp, antialias=True)] + flips
    elif preset == "medium":
        ops = [v2.Resize(size, interpolation=interp, antialias=True), v2.CenterCrop(size),
               # grid transforms on tensors support nearest/bilinear only
               v2.RandomAffine(degrees=30, translate=(0.2, 0.2), scale=(0.8, 1.2),
                               interpolation=v2.InterpolationMode.BILINEAR)] + flips
    else:
        policy = v2.RandAugment(num_ops=2, magnitude=9) if randaugment else v2.TrivialAugmentWide()
        ops = [v2.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=interp, antialias=True)] + flips
        ops += [policy]
    ops += _normalize(data_cfg)
    if preset == "heavy":
        ops.append(v2.RandomErasing(p=0.25, value=0))
    return v2.Compose(ops)
