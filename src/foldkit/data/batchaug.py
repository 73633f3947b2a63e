"""Augmentation on whole batches, on the training device (`--aug-device device`), with kornia.

The per-image path (foldkit.data.augment, `--aug-device cpu`) draws and applies each image's random ops in
the DataLoader on the CPU. Here the loader only gathers uint8 images of one fixed size (`gather_transform`,
a cheap deterministic step per image) and `BatchAugment` runs the preset's random ops on the whole batch
where the model trains, with random parameters drawn per sample (kornia.augmentation; torchvision v2
transforms on a batch share one draw per batch, a different recipe).

The presets mean what they mean in foldkit.data.augment (same scales, degrees, translation, probabilities;
`RECIPES` maps every name of augment.PRESETS to its batched recipe, tested):

* ``none``   the eval geometry on the CPU (shortest side to size/crop_pct, centre crop): no randomness
* ``light``  RandomResizedCrop(scale 0.35-1) + flips
* ``medium`` resize + centre crop to the size on the CPU (as per image), then RandomAffine(30 deg, shift
             0.2, zoom 0.8-1.2) + flips, as one per-sample affine_grid + grid_sample (RandomAffineFlip)
* ``heavy``  RandomResizedCrop(scale 0.08-1) + flips + TrivialAugment (RandAugment n=2 m=9 with
             --randaugment), one operation chosen per image + RandomErasing(p=0.25) after normalising

What differs from the per-image recipe: `light` and `heavy` crop from a square canvas, the centre square
of the image (its whole shortest side) at the prepared side (images.cache_side), rather than from the
whole image: a non-square photo loses the ends of its long side to the random crops (a 4:3 photo keeps
75% of its area); square images are cropped alike. TrivialAugment/RandAugment are kornia's policies
(its operations and magnitude ranges, close to torchvision's). The crops are resampled bilinearly from
the canvas (kornia's batched warp, no antialiasing filter: the canvas is at most 1.5 x size / crop_pct).

Reproducible: each batch's draws come from the CPU generator seeded by (seed, epoch, batch, rank)
(`set_epoch`, `__call__`), so a resumed epoch draws exactly what an uninterrupted one did, on any device.
kornia and torch are imported inside the functions: `--help` reads RECIPES without them.
"""
from __future__ import annotations

import math

from foldkit.data.augment import ResizeCrop, interpolation, interpolation_name
from foldkit.data.images import cache_side
from foldkit.errors import ConfigError

# preset -> (what the loader gathers per image, the random ops run on the batch); the names of foldkit.choices.AUG_PRESETS
RECIPES = {"none": ("eval", None), "light": ("canvas", "light"), "medium": ("resize", "medium"),
           "heavy": ("canvas", "heavy")}

CHOICES = ("cpu", "device")


# On a CPU the batched path wins where per-image work dominates, i.e. on small images; at larger sizes the
# model's forward/backward dominates and the two paths are within noise (benchmarks/RESULTS.md,
# "Augmentation per image (CPU) vs batched on the device")
CPU_BATCHED_MAX_SIZE = 64


def choose(setting: str, device, size: int = 0) -> str:
    """--aug-device resolved for a training device and training image size: cpu (per image in the
    DataLoader) or device (batched, kornia). auto = batched on CUDA, and on a CPU for images of at most
    CPU_BATCHED_MAX_SIZE px (where it was measured faster); per image otherwise."""
    if setting in CHOICES:
        return setting
    if getattr(device, "type", str(device)) == "cuda":
        return "device"
    return "device" if 0 < size <= CPU_BATCHED_MAX_SIZE else "cpu"


def path_line(choice: str, device, preset: str, workers: int | None = None) -> str:
    """The one log line of the augmentation path a run trains with."""
    if choice == "device":
        return (f"augmentation: batched on {getattr(device, 'type', device)} (kornia), --aug {preset}; the loader "
                "gathers fixed-size uint8 images (--aug-device cpu: per image in the loader)")
    return (f"augmentation: per image on CPU (torchvision) in the DataLoader, --aug {preset} "
            "(--aug-device device: batched on the training device with kornia)")


def check_available() -> None:
    """ConfigError when kornia cannot be imported (the batched path needs it)."""
    try:
        import kornia.augmentation  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"--aug-device device needs kornia ({e}): pip install 'kornia>=0.9', or use "
                          "--aug-device cpu under a new --experiment name") from None


def gather_transform(data_cfg: dict, preset: str = "light"):
    """The per-image CPU step of the batched path: uint8 CHW in, uint8 C x S x S out, no randomness.
    none: the eval transform's geometry; medium: resize + centre crop to the training size (as per image);
    light/heavy: the centre square (the whole shortest side) at the prepared side images.cache_side."""
    from torchvision.transforms import v2

    size = data_cfg["input_size"][-1]
    interp = interpolation(data_cfg)
    kind = RECIPES[preset][0]
    if kind == "eval":
        return ResizeCrop(size, int(round(size / (data_cfg.get("crop_pct", 1.0) or 1.0))), interp)
    if kind == "resize":
        return ResizeCrop(size, size, interp)
    side = cache_side(data_cfg)
    return v2.Compose([_CentreSquare(), ResizeCrop(side, side, interp)])


class _CentreSquare:
    """The centre square of a CHW image: its whole shortest side."""

    def __call__(self, img):
        h, w = img.shape[-2:]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        return img[..., top:top + s, left:left + s]


def _random_ops(data_cfg: dict, preset: str, hflip: bool, vflip: bool, randaugment: bool) -> list:
    import kornia.augmentation as K
    size = data_cfg["input_size"][-1]
    flips = ([K.RandomHorizontalFlip(p=0.5)] if hflip else []) + ([K.RandomVerticalFlip(p=0.5)] if vflip else [])
    kind = RECIPES[preset][1]
    if kind is None:
        return []
    if kind == "medium":    # torchvision's RandomAffine is always applied (p=1); zeros outside the image
        return [RandomAffineFlip(degrees=30, translate=0.2, scale=(0.8, 1.2), hflip=hflip, vflip=vflip)]
    scale = (0.35, 1.0) if kind == "light" else (0.08, 1.0)
    ops = [K.RandomResizedCrop((size, size), scale=scale, ratio=(3 / 4, 4 / 3), resample=interpolation_name(data_cfg),
                               align_corners=False, cropping_mode="resample")] + flips
    if kind == "heavy":
        ops.append(PerSamplePolicy(K.auto.RandAugment(n=2, m=9) if randaugment else K.auto.TrivialAugment(),
                                   rounds=2 if randaugment else 1))
    return ops


def _per_sample_policy_class():
    import torch

    class _PerSamplePolicy(torch.nn.Module):
        """A kornia auto-augment policy with its operations chosen per image (kornia chooses one per
        batch): `rounds` distinct operations per image, each applied to the images that drew it.
        Grey images go through as three equal channels and come back as one."""
        def __init__(self, policy, rounds: int):
            super().__init__()
            self.ops = torch.nn.ModuleList(policy.children())
            self.rounds = rounds

        def forward(self, x):
            grey = x.shape[1] == 1
            if grey:
                x = x.expand(-1, 3, -1, -1)
            picks = torch.rand(len(x), len(self.ops)).argsort(dim=1)[:, :self.rounds]   # CPU generator
            for r in range(self.rounds):
                out = x.clone()
                for k in picks[:, r].unique().tolist():
                    idx = (picks[:, r] == k).nonzero().flatten().to(x.device)
                    out[idx] = self.ops[k](x[idx]).clamp_(0, 1)
                x = out
            return x.mean(1, keepdim=True) if grey else x

    return _PerSamplePolicy


def _random_affine_flip_class():

    import torch
    import torch.nn.functional as F

    class _RandomAffineFlip(torch.nn.Module):
        """kornia's RandomAffine(degrees, translate, scale, bilinear, zeros, align_corners=False) and the
        random flips as one per-sample matrix and one grid_sample: the same recipe (angle, shift as a
        fraction of the side and zoom drawn uniformly per image, about the centre; each flip with p=0.5).
        Hand-written because kornia's per-call work cost 3-4x the warp itself on the demo's 64 x 32 px
        batches (benchmarks/bench_batchaug.py), which the batched path exists to save."""
        def __init__(self, degrees: float, translate: float, scale: tuple, hflip: bool, vflip: bool):
            super().__init__()
            self.degrees, self.translate, self.scale, self.hflip, self.vflip = degrees, translate, scale, hflip, vflip

        def forward(self, x):
            n = len(x)
            u = torch.rand(n, 6)            # the CPU generator (BatchAugment seeds it per batch)
            a = (u[:, 0] * 2 - 1) * math.radians(self.degrees)
            s = self.scale[0] + u[:, 1] * (self.scale[1] - self.scale[0])
            t = (u[:, 2:4] * 2 - 1) * (2 * self.translate)      # a fraction of the side, in [-1, 1] units
            fx = torch.where(u[:, 4] < 0.5, -1.0, 1.0) if self.hflip else torch.ones(n)
            fy = torch.where(u[:, 5] < 0.5, -1.0, 1.0) if self.vflip else torch.ones(n)
            # output -> input coordinates: the inverse of (zoom s, rotate a, shift t) after the flips
            cos, sin = torch.cos(a) / s, torch.sin(a) / s
            inv = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)   # R(-a) / s
            theta = torch.cat([inv * torch.stack([fx, fy], 1)[:, None, :],
                               -(inv @ t[:, :, None])], 2).to(x.device, x.dtype)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    return _RandomAffineFlip


def RandomAffineFlip(**kw):  # noqa: N802 - builds the torch module class on first use
    return _random_affine_flip_class()(**kw)


def PerSamplePolicy(policy, rounds: int):  # noqa: N802 - builds the torch module class on first use
    return _per_sample_policy_class()(policy, rounds)


class BatchAugment:
    """A preset's random ops on a uint8 batch (N, C, S, S) on the training device -> float, normalised
    (N, C, size, size), per-sample random parameters; RandomErasing (heavy) after normalising, as per image."""

    def __init__(self, data_cfg: dict, preset: str = "light", hflip: bool = True, vflip: bool = False,
                 randaugment: bool = False, seed: int = 0, rank: int = 0):
        import torch
        check_available()
        self.ops = torch.nn.Sequential(*_random_ops(data_cfg, preset, hflip, vflip, randaugment))
        self.erasing = None
        if RECIPES[preset][1] == "heavy":
            import kornia.augmentation as K
            self.erasing = K.RandomErasing(scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0.0, p=0.25)
        c = data_cfg["input_size"][0]
        self.mean = torch.tensor(data_cfg["mean"][:c], dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(data_cfg["std"][:c], dtype=torch.float32).view(1, -1, 1, 1)
        self.seed, self.rank, self.epoch = seed, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, x, batch: int = 0):
        import torch
        key = (self.seed * 1_000_003 + self.epoch * 100_003 + batch * 1_009 + self.rank) % (2**63)
        with torch.random.fork_rng(devices=[]):       # the CPU generator only; kornia draws on the CPU
            torch.default_generator.manual_seed(key)
            x = x.float().div_(255)
            if len(self.ops):
                x = self.ops(x).clamp_(0, 1)     # bicubic overshoots; per image, uint8 pixels clip there
            x = (x - self.mean.to(x.device)) / self.std.to(x.device)
            if self.erasing is not None:
                x = self.erasing(x)
        return x.contiguous()
