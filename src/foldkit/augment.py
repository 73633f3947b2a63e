"""Named augmentation presets -> torchvision.transforms.v2 pipelines from the model's data config.

The kit's images arrive as uint8 CHW tensors (decoded once with OpenCV), so
the presets are tensor-native torchvision v2 transforms (faster than timm's
PIL-based create_transform on the same recipes). `PRESETS` is the one registry of
preset names (the CLI's `--aug` choices come from it):

* ``none``   resize (shortest side to size/crop_pct) + centre crop: no randomness
* ``light``  RandomResizedCrop(scale 0.35-1) + flips
* ``medium`` the classic Keras ImageDataGenerator recipe: rotation 30 deg, shift 0.2,
             zoom 0.2, + flips
* ``heavy``  RandomResizedCrop(scale 0.08-1) + flips + TrivialAugmentWide
             (or RandAugment with --randaugment) + RandomErasing(p=0.25)

Flips: horizontal by default (``--no-hflip`` for digits and text), vertical with
``--vflip`` (satellite, microscopy). Mixup/CutMix work on batches (engine).
torch/torchvision are imported inside the builders: `--help` reads PRESETS without them.
"""
from __future__ import annotations


def _v2():
    from torchvision.transforms import v2
    return v2


def _interp(data_cfg: dict):
    v2 = _v2()
    return {"bilinear": v2.InterpolationMode.BILINEAR, "bicubic": v2.InterpolationMode.BICUBIC,
            "nearest": v2.InterpolationMode.NEAREST}.get(data_cfg.get("interpolation"),
                                                         v2.InterpolationMode.BILINEAR)


def _normalize(data_cfg: dict) -> list:
    import torch
    v2 = _v2()
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(data_cfg["mean"], data_cfg["std"])]


def eval_transform(data_cfg: dict):
    from foldkit.images import eval_size
    v2 = _v2()
    size = eval_size(data_cfg)      # the training size, or --test-img-size's (FixRes)
    crop_pct = data_cfg.get("crop_pct", 1.0) or 1.0
    resize = int(round(size / crop_pct))
    # the shortest side to size/crop_pct, then a square centre crop: with crop_pct 1 a non-square
    # photo is still cropped to size x size, so images of any shape batch together
    ops = [v2.Resize(resize, interpolation=_interp(data_cfg), antialias=True), v2.CenterCrop(size)]
    return v2.Compose(ops + _normalize(data_cfg))


def _light(data_cfg: dict, flips: list, randaugment: bool) -> list:
    v2 = _v2()
    size = data_cfg["input_size"][-1]
    return [v2.RandomResizedCrop(size, scale=(0.35, 1.0), interpolation=_interp(data_cfg), antialias=True)] + flips


def _medium(data_cfg: dict, flips: list, randaugment: bool) -> list:
    v2 = _v2()
    size = data_cfg["input_size"][-1]
    return [v2.Resize(size, interpolation=_interp(data_cfg), antialias=True), v2.CenterCrop(size),
            # grid transforms on tensors support nearest/bilinear only
            v2.RandomAffine(degrees=30, translate=(0.2, 0.2), scale=(0.8, 1.2),
                            interpolation=v2.InterpolationMode.BILINEAR)] + flips


def _heavy(data_cfg: dict, flips: list, randaugment: bool) -> list:
    v2 = _v2()
    size = data_cfg["input_size"][-1]
    policy = v2.RandAugment(num_ops=2, magnitude=9) if randaugment else v2.TrivialAugmentWide()
    return [v2.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=_interp(data_cfg), antialias=True)] \
        + flips + [policy]


# name -> builder of the geometric/colour ops (None: the eval transform, no randomness)
PRESETS = {"none": None, "light": _light, "medium": _medium, "heavy": _heavy}


def train_transform(data_cfg: dict, preset: str = "light", hflip: bool = True, vflip: bool = False,
                    randaugment: bool = False):
    if preset not in PRESETS:
        raise ValueError(f"unknown --aug {preset!r}; choose from {', '.join(PRESETS)}")
    if PRESETS[preset] is None:   # the eval geometry at the training size (never --test-img-size's)
        return eval_transform({k: v for k, v in data_cfg.items() if k != "test_input_size"})
    v2 = _v2()
    flips = ([v2.RandomHorizontalFlip()] if hflip else []) + ([v2.RandomVerticalFlip()] if vflip else [])
    ops = PRESETS[preset](data_cfg, flips, randaugment) + _normalize(data_cfg)
    if preset == "heavy":
        ops.append(v2.RandomErasing(p=0.25, value=0))
    return v2.Compose(ops)
