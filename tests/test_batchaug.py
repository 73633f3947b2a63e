"""Batched augmentation on the training device (--aug-device device, foldkit.data.batchaug), run here on CPU."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO
from foldkit.data.augment import PRESETS, eval_transform
from foldkit.data.batchaug import RECIPES, BatchAugment, gather_transform

PHOTO = {"input_size": [3, 64, 64], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
         "interpolation": "bicubic", "crop_pct": 0.875}


def photos(n=6, h=90, w=120):
    """Smooth colour images (gradients + a disc), not square: uint8 CHW."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        img = np.stack([xx * 255 // w, yy * 255 // h, ((xx - 20 - 8 * i) ** 2 + (yy - 40) ** 2 < 400) * 200], 0)
        out.append(torch.from_numpy(img.astype(np.uint8)))
    return out


def batch_of(preset, imgs, data_cfg=PHOTO):
    g = gather_transform(data_cfg, preset)
    return torch.stack([g(i) for i in imgs])


def test_every_preset_has_a_batched_recipe():
    from foldkit.choices import AUG_PRESETS
    assert list(PRESETS) == list(AUG_PRESETS)          # every --aug choice has its builder, in order
    assert set(RECIPES) == set(PRESETS)


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("randaugment", [False, True])
def test_every_preset_runs_batched_with_the_right_shape_and_normalisation(preset, randaugment):
    x = batch_of(preset, photos())
    assert x.dtype == torch.uint8 and x.shape[-1] == x.shape[-2]          # one fixed size, gathered on CPU
    out = BatchAugment(PHOTO, preset, vflip=True, randaugment=randaugment, seed=3)(x, 0)
    assert out.shape == (6, 3, 64, 64) and out.dtype == torch.float32 and torch.isfinite(out).all()
    lo = (0 - torch.tensor(PHOTO["mean"])) / torch.tensor(PHOTO["std"])
    hi = (1 - torch.tensor(PHOTO["mean"])) / torch.tensor(PHOTO["std"])
    per_channel = out.transpose(0, 1).reshape(3, -1)
    assert (per_channel.min(1).values >= lo - 1e-4).all() and (per_channel.max(1).values <= hi + 1e-4).all()


def test_grey_images_run_every_preset():
    grey = {"input_size": [1, 32, 32], "mean": [0.5], "std": [0.5], "interpolation": "bilinear", "crop_pct": 1.0}
    imgs = [i[:1] for i in photos(4, 40, 40)]
    for preset in PRESETS:
        out = BatchAugment(grey, preset, randaugment=preset == "heavy", seed=1)(batch_of(preset, imgs, grey), 0)
        assert out.shape == (4, 1, 32, 32)


def test_draws_are_per_sample_and_seeded_by_batch():
    img = photos(1)[0]
    x = batch_of("light", [img, img])                                     # two copies of one image
    aug = BatchAugment(PHOTO, "light", seed=7)
    a = aug(x, 0)
    assert not torch.allclose(a[0], a[1])                                 # each sample its own crop/flip
    assert torch.equal(a, aug(x, 0))                                      # same (seed, epoch, batch): same draws
    assert not torch.equal(a, aug(x, 1))
    aug.set_epoch(1)
    assert not torch.equal(a, aug(x, 0))
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    aug(x, 0)
    assert torch.equal(torch.rand(1), before)                             # the global RNG is left alone


def test_none_equals_the_eval_transform():
    imgs = photos()
    out = BatchAugment(PHOTO, "none")(batch_of("none", imgs), 0)
    ref = torch.stack([eval_transform(PHOTO)(i) for i in imgs])
    assert torch.allclose(out, ref, atol=1e-5)


def test_medium_keeps_the_per_image_geometry():
    """medium's deterministic part (resize + centre crop) is the per-image one; the affine is drawn per sample."""
    from torchvision.transforms import v2
    imgs = photos(2)
    x = batch_of("medium", imgs)
    ref = v2.Compose([v2.Resize(64, antialias=True, interpolation=v2.InterpolationMode.BICUBIC),
                      v2.CenterCrop(64)])
    assert torch.equal(x[0], ref(imgs[0]))


def test_medium_affine_draws_the_recipe_per_sample():
    """medium's hand-written affine + flips (one grid_sample): an identity draw leaves the image as it is,
    each flip is drawn per image, and a shift moves a spot by at most 0.2 of the side."""
    from foldkit.data.batchaug import RandomAffineFlip
    x = torch.zeros(32, 1, 33, 33)
    x[:, :, 10, 12] = 1.0                                                  # one bright pixel off centre
    same = RandomAffineFlip(degrees=0, translate=0.0, scale=(1.0, 1.0), hflip=False, vflip=False)(x)
    assert torch.allclose(same, x, atol=1e-6)
    flipped = RandomAffineFlip(degrees=0, translate=0.0, scale=(1.0, 1.0), hflip=True, vflip=False)(x)
    is_flip = [bool(torch.allclose(f, x[0].flip(-1), atol=1e-6)) for f in flipped]
    assert all(is_flip[i] or torch.allclose(flipped[i], x[0], atol=1e-6) for i in range(32))
    assert 4 < sum(is_flip) < 28                                           # p=0.5 per image
    moved = RandomAffineFlip(degrees=0, translate=0.2, scale=(1.0, 1.0), hflip=False, vflip=False)(x)
    ys, xs = torch.meshgrid(torch.arange(33.0), torch.arange(33.0), indexing="ij")
    mass = moved[:, 0].sum((1, 2))
    cy, cx = (moved[:, 0] * ys).sum((1, 2)) / mass, (moved[:, 0] * xs).sum((1, 2)) / mass
    assert ((cy - 10).abs() <= 0.2 * 33 + 0.5).all() and ((cx - 12).abs() <= 0.2 * 33 + 0.5).all()
    assert (cx - 12).abs().max() > 2                                       # it does move


# --------------------------------------------------------------------------- the CLI, end to end
def run_train(comp, models, *extra):
    args = ["--input-dir", str(comp / "in"), "--folds-dir", str(comp / "folds"), "--models-dir", str(models),
            "--no-pretrained", "--model", "test_resnet", "--img-size", "32", "--crop-pct", "1.0", "--no-hflip", "--aug", "light",
            "--epochs", "2", "--batch-size", "32", "--no-progress", "--fold", "0", "--workers", "0", *extra]
    return subprocess.run([sys.executable, str(REPO / "src" / "train.py"), *args], capture_output=True, text=True)


def test_cli_trains_batched_records_it_and_repeats_exactly(digits150, tmp_path):
    a = run_train(digits150, tmp_path / "a", "--aug-device", "device", "--experiment", "b")
    assert a.returncode == 0, a.stderr
    assert "augmentation: batched on cpu (kornia)" in a.stdout
    exp = tmp_path / "a" / "b"
    assert json.loads((exp / "fold0.json").read_text())["aug_device"] == "device"
    assert json.loads((exp / "config.json").read_text())["aug_device"] == "device"
    log = pd.read_csv(exp / "log_fold0.csv")
    assert np.isfinite(log["train_loss"]).all()
    again = run_train(digits150, tmp_path / "b", "--aug-device", "device", "--experiment", "b")
    assert again.returncode == 0, again.stderr
    pd.testing.assert_frame_equal(pd.read_csv(exp / "oof_fold0.csv"),
                                  pd.read_csv(tmp_path / "b" / "b" / "oof_fold0.csv"))


def test_cli_auto_is_batched_for_small_images_on_cpu_and_keeps_old_names(digits150, tmp_path):
    r = run_train(digits150, tmp_path / "m", "--epochs", "1")
    assert r.returncode == 0, r.stderr
    assert "augmentation: batched on cpu (kornia)" in r.stdout          # 32 px: batched wins on a CPU
    [exp] = [p for p in (tmp_path / "m").iterdir() if p.is_dir()]
    assert json.loads((exp / "fold0.json").read_text())["aug_device"] == "device"
    from foldkit.data.batchaug import choose
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [choose("auto", cpu, s) for s in (32, 64, 96, 224)] == ["device", "device", "cpu", "cpu"]
    assert choose("auto", cuda, 224) == "device" and choose("cpu", cuda, 32) == "cpu"
    from foldkit.config import learning_settings, resolve
    assert "aug_device" not in learning_settings(resolve({}))                # auto: old experiment names stay
    assert learning_settings(resolve({"aug_device": "device"}))["aug_device"] == "device"   # like --amp


def test_a_resumed_fold_keeps_the_path_it_started_with(tmp_path):
    """auto on a CPU at 128 px means per image, but a fold started batched (say on a GPU) resumes batched;
    a resume file from before the setting existed resumes per image."""
    from foldkit.config import resolve
    from foldkit.train.fit import augmentation_path
    grey = {"input_size": [1, 128, 128], "mean": [0.5], "std": [0.5], "interpolation": "bilinear", "crop_pct": 1.0}
    cfg, cpu = resolve({}), torch.device("cpu")
    assert augmentation_path(cfg, grey, cpu, 0) == "cpu"
    assert augmentation_path(cfg, grey, cpu, 0, {"epochs_done": 1, "aug_device": "device"}) == "device"
    assert augmentation_path(cfg, grey, cpu, 0, {"epochs_done": 1}) == "cpu"
