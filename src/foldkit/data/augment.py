"""Named augmentation presets -> torchvision.transforms.v2 pipelines from the model's data config.

The kit's images arrive as uint8 CHW tensors (decoded once with OpenCV), so
the presets are tensor-native torchvision v2 transforms (faster than timm's
PIL-based create_transform on the same recipes). `PRESETS` builds each name of
foldkit.choices.AUG_PRESETS (the `--aug` choices and what each one does).

Flips: horizontal by default (``--no-hflip`` for digits and text), vertical with
``--vflip`` (satellite, microscopy). Mixup/CutMix work on batches (engine).
torch/torchvision are imported inside the builders (importing this module stays cheap).
"""
from __future__ import annotations
from foldkit.data.images import eval_size


def _v2():
    from torchvision.transforms import v2
    return v2


def interpolation_name(data_cfg: dict) -> str:
    """The model's resampling (its timm data config): bicubic or nearest, bilinear for anything else."""
    name = data_cfg.get("interpolation")
    return name if name in ("bicubic", "nearest") else "bilinear"


def interpolation(data_cfg: dict):
    """interpolation_name as torchvision's InterpolationMode (the per-image transforms')."""
    return _v2().InterpolationMode(interpolation_name(data_cfg))


class ResizeCrop:
    """Shortest side to `resize`, then a centre `size` x `size` crop (torchvision v2 Resize + CenterCrop).
    An image already `size` x `size` with resize == size is returned as it is, as torchvision itself
    returns it, without the two transforms' dispatch (which costs more than the rest of gathering a
    32 px digit: benchmarks/RESULTS.md, "Per-image transforms without torchvision's dispatch")."""

    def __init__(self, size: int, resize: int, interpolation):
        v2 = _v2()
        self.size, self.resize = size, resize
        self.ops = v2.Compose([v2.Resize(resize, interpolation=interpolation, antialias=True), v2.CenterCrop(size)])

    def __call__(self, img):
        if self.resize == self.size and img.shape[-1] == img.shape[-2] == self.size:
            return img
        return self.ops(img)


class Normalize:
    """uint8 CHW -> float32 scaled to [0, 1], minus mean, over std: the arithmetic of torchvision v2's
    ToDtype(float32, scale=True) + Normalize, step for step (bit-identical, tested), in one call without
    their dispatch (benchmarks/RESULTS.md, "Per-image transforms without torchvision's dispatch")."""

    def __init__(self, mean, std):
        import torch
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, img):
        import torch
        x = img.to(torch.float32)
        if not img.is_floating_point():
            x = x.mul_(1.0 / 255)       # uint8's largest value: the kit's images are uint8
        return x.sub_(self.mean).div_(self.std)


def _normalize(data_cfg: dict) -> list:
    return [Normalize(data_cfg["mean"], data_cfg["std"])]


def eval_transform(data_cfg: dict):
    v2 = _v2()
    size = eval_size(data_cfg)      # the training size, or --test-img-size's (FixRes)
    crop_pct = data_cfg.get("crop_pct", 1.0) or 1.0
    resize = int(round(size / crop_pct))
    # the shortest side to size/crop_pct, then a square centre crop: with crop_pct 1 a non-square
    # photo is still cropped to size x size, so images of any shape batch together
    return v2.Compose([ResizeCrop(size, resize, interpolation(data_cfg))] + _normalize(data_cfg))


def _light(data_cfg: dict, flips: list, randaugment: bool) -> list:
    v2 = _v2()
    size = data_cfg["input_size"][-1]
    return [v2.RandomResizedCrop(size, scale=(0.35, 1.0), interpolation=interpolation(data_cfg), antialias=True)] + flips


def _medium(data_cfg: dict, flips: list, randaugment: bool) -> list:
    v2 = _v2()
    size = data_cfg["input_size"][-1]
    return [ResizeCrop(size, size, interpolation(data_cfg)),
            # grid transforms on tensors support nearest/bilinear only
            v2.RandomAffine(degrees=30, translate=(0.2, 0.2), scale=(0.8, 1.2),
                            interpolation=v2.InterpolationMode.BILINEAR)] + flips


def _heavy(data_cfg: dict, flips: list, randaugment: bool) -> list:
    v2 = _v2()
    size = data_cfg["input_size"][-1]
    policy = v2.RandAugment(num_ops=2, magnitude=9) if randaugment else v2.TrivialAugmentWide()
    return [v2.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=interpolation(data_cfg), antialias=True)] \
        + flips + [policy]


# foldkit.choices.AUG_PRESETS' names -> builder of the geometric/colour ops (None: the eval transform, no
# randomness); tests/test_batchaug.py keeps the two in step
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
