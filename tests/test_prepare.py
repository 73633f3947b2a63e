"""One image preparation for training, OOF, test, the offline bundle and --image: the file you upload
is the pipeline your CV measured. Real photos (hymenoptera, ~500 px) with a small --img-size, so
that how an image is shrunk matters."""
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, need_shared

FAST = ["--model", "test_resnet", "--img-size", "32", "--crop-pct", "1.0", "--no-hflip", "--epochs", "1",
        "--no-pretrained", "--batch-size", "8", "--no-progress", "--workers", "0"]


def run(script, *args):
    r = subprocess.run([sys.executable, str(REPO / "src" / script), *args], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    return r


def photo_competition(root, n=8):
    """csv_images: n ants + n bees photos for training, the same photos again as test images
    (ids t_<id>), a probability-column sample submission."""
    hym = need_shared("data", "hymenoptera", "train")
    rows = []
    for cls in ("ants", "bees"):
        for k, src in enumerate(sorted((hym / cls).glob("*.jpg"))[:n]):
            iid = f"{cls[0]}{k}"
            for folder, name in (("train", iid), ("test", f"t_{iid}")):
                (root / folder).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, root / folder / f"{name}.jpg")
            rows.append({"id": iid, "label": cls})
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"id": [f"t_{r['id']}" for r in rows], "ants": 0.5, "bees": 0.5}).to_csv(
        root / "sample_submission.csv", index=False)
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return photo_competition(tmp_path_factory.mktemp("photos") / "input")


def test_cache_on_and_off_prepare_the_same_pixels(photos):
    from foldkit.data.reading import read_competition
    from foldkit.data.dataset import ImageSource
    comp = read_competition(photos)
    ram = ImageSource(comp, comp.train, grey=False, cache="ram", max_side=48, progress=False)
    off = ImageSource(comp, comp.train, grey=False, cache="off", max_side=48, progress=False)
    assert ram.cached is not None and off.cached is None
    for i in range(len(comp.train)):
        assert min(ram[i].shape[:2]) == 48
        assert np.array_equal(ram[i], off[i]), comp.train["id"][i]


def test_every_runner_gets_the_training_preparation(photos):
    """The predict/bundle torch sources, the onnx runner's torch-free reader and --image's loader
    give the pixels training gave, per distinct preparation (grey/side) of the ensemble; the onnx reader
    of training rows (export --int8's calibration and OOF) too."""
    from foldkit.export.bundle import table_images
    from foldkit.data.reading import read_competition
    from foldkit.data.dataset import ImageSource
    from foldkit.predict.inference import load_single_image
    from foldkit.predict.predicting import make_sources

    class M:   # the two attributes of an ensemble member that decide its preparation
        def __init__(self, in_chans, size):
            self.in_chans, self.data_config = in_chans, {"input_size": [in_chans, size, size], "crop_pct": 1.0}

    comp = read_competition(photos)
    members = [M(3, 32), M(3, 32), M(1, 32), M(3, 64)]
    preps = {(False, 48), (True, 48), (False, 96)}
    sources = make_sources(comp, comp.test, "test", members)
    assert set(sources) == preps
    onnx = list(table_images(comp, comp.test, "test", preps))
    onnx_train = list(table_images(comp, comp.train, "train", preps))
    for grey, side in preps:
        train = ImageSource(comp, comp.train, grey=grey, cache="off", max_side=side, progress=False)
        for i in range(len(comp.test)):
            want = train[i]      # test image i is a copy of training image i
            assert min(want.shape[:2]) == side and want.shape[2] == (1 if grey else 3)
            assert np.array_equal(sources[grey, side][i], want)
            assert np.array_equal(onnx[i][grey, side], want)
            assert np.array_equal(onnx_train[i][grey, side], want)
        one = load_single_image(str(photos / comp.test["path"][0]), [(grey, side)])
        assert np.array_equal(one[grey, side], train[0])


def test_a_photo_scored_as_oof_row_and_as_test_image_gets_the_same_probabilities(photos, tmp_path):
    paths = ["--input-dir", str(photos), "--folds-dir", str(tmp_path / "folds"),
             "--models-dir", str(tmp_path / "models")]
    run("make_folds.py", *paths, "--n-folds", "2")
    run("train.py", *paths, *FAST, "--fold", "0", "--experiment", "x")
    run("predict.py", *paths, "--experiments", "x", "--tta", "none", "--calibrate", "off", "--thresholds", "off",
        "--submissions-dir", str(tmp_path / "subs"), "--no-report", "--workers", "0")
    oof = pd.read_csv(tmp_path / "models" / "x" / "oof_fold0.csv", dtype={"id": str}).set_index("id")
    sub = pd.read_csv(next((tmp_path / "subs").glob("*.csv")), dtype={"id": str}).set_index("id")
    assert len(oof) == 8
    test = sub.loc[[f"t_{i}" for i in oof.index]].to_numpy()
    assert np.abs(test - oof[["prob_ants", "prob_bees"]].to_numpy()).max() < 2e-6
    # predict.py --image on one photo: the probability its OOF row has
    iid = oof.index[0]
    r = run("predict.py", *paths, "--experiments", "x", "--tta", "none", "--image",
            str(photos / "train" / f"{iid}.jpg"), "--topk", "2")
    top = {c: float(p) for c, p in (line.split() for line in r.stdout.strip().splitlines()[1:])}
    assert abs(top["ants"] - oof.loc[iid, "prob_ants"]) < 1e-4


def test_an_ensemble_of_sizes_and_channels_runs_each_member_on_its_own_preparation(photos):
    """Mixed members (RGB 32, grey 32, RGB 64) predicted together give each member the probabilities
    it gets alone, i.e. on exactly its own preparation."""
    import torch

    from foldkit.data.reading import read_competition
    from foldkit.runtime.device import pick_device
    from foldkit.predict.inference import Member, predict_ensemble
    from foldkit.predict.predicting import make_sources

    class Tiny(Member):   # a Member without a checkpoint: a pooled linear model
        def __init__(self, in_chans, size, seed):
            self.in_chans, self.fold, self.classes = in_chans, 0, ["ants", "bees"]
            self.task, self.target = "single", None
            self.data_config = {"input_size": [in_chans, size, size], "mean": [0.5] * in_chans,
                                "std": [0.25] * in_chans, "interpolation": "bilinear", "crop_pct": 1.0}
            torch.manual_seed(seed)
            self.model = torch.nn.Sequential(torch.nn.Conv2d(in_chans, 4, 5, stride=2), torch.nn.Flatten(),
                                             torch.nn.LazyLinear(2))

    comp = read_competition(photos)
    test = comp.test.head(6)
    members = [Tiny(3, 32, 0), Tiny(1, 32, 1), Tiny(3, 64, 2)]
    kw = dict(tta=["none"], device=pick_device("cpu"), progress=False)
    alone = [predict_ensemble([m], make_sources(comp, test, "test", [m]), **kw) for m in members]
    _, together = predict_ensemble(members, make_sources(comp, test, "test", members), return_members=True, **kw)
    for a, t in zip(alone, together):
        assert np.allclose(a, t, atol=1e-6)


def test_test_img_size_is_the_size_of_every_evaluation_path(photos, tmp_path):
    """--test-img-size (FixRes): trained at 32 px, evaluated at 48 px. The OOF rows (hence the CV),
    predict.py, the bundle's torch and ONNX runners and --image all score the photo at 48 px: the
    same probabilities on every path, and not the ones a 32 px evaluation gives."""
    import torch

    import export as export_cli
    from foldkit.export import bundle
    from foldkit.data.augment import eval_transform
    paths = ["--input-dir", str(photos), "--folds-dir", str(tmp_path / "folds"),
             "--models-dir", str(tmp_path / "models")]
    run("make_folds.py", *paths, "--n-folds", "2")
    run("train.py", *paths, *FAST, "--fold", "0", "--experiment", "fr", "--test-img-size", "48")
    ckpt = torch.load(tmp_path / "models" / "fr" / "fold0.pt", weights_only=True)
    assert ckpt["data_config"]["input_size"] == [3, 32, 32] and ckpt["data_config"]["test_input_size"] == [3, 48, 48]
    assert eval_transform(ckpt["data_config"])(torch.zeros(3, 80, 100, dtype=torch.uint8)).shape == (3, 48, 48)
    plan = ["--experiments", "fr", "--tta", "none", "--calibrate", "off", "--thresholds", "off", "--workers", "0"]
    run("predict.py", *paths, *plan, "--submissions-dir", str(tmp_path / "subs"), "--no-report")
    oof = pd.read_csv(tmp_path / "models" / "fr" / "oof_fold0.csv", dtype={"id": str}).set_index("id")
    (ref,) = (tmp_path / "subs").glob("*.csv")
    sub = pd.read_csv(ref, dtype={"id": str}).set_index("id")
    want = oof[["prob_ants", "prob_bees"]].to_numpy()
    assert np.abs(sub.loc[[f"t_{i}" for i in oof.index]].to_numpy() - want).max() < 2e-6
    iid = oof.index[0]
    r = run("predict.py", *paths, *plan[:4], "--image", str(photos / "train" / f"{iid}.jpg"), "--topk", "2")
    top = {c: float(p) for c, p in (line.split() for line in r.stdout.strip().splitlines()[1:])}
    assert abs(top["ants"] - oof.loc[iid, "prob_ants"]) < 1e-4
    # the offline bundle: its torch runner writes predict.py's file, its ONNX model takes 48 px images
    export_cli.main([*paths, *plan[:-2], "--onnx", "--out", str(tmp_path / "bundle"), "--time-budget", "0"])
    offline = ["--bundle", str(tmp_path / "bundle"), "--input-dir", str(photos), "--workers", "0", "--no-progress"]
    bundle.main([*offline, "--runner", "torch", "--out", str(tmp_path / "torch.csv")])
    assert (tmp_path / "torch.csv").read_bytes() == ref.read_bytes()
    bundle.main([*offline, "--runner", "onnx", "--out", str(tmp_path / "onnx.csv")])
    got = pd.read_csv(tmp_path / "onnx.csv", dtype={"id": str}).set_index("id").loc[sub.index].to_numpy()
    assert np.abs(got - sub.to_numpy()).max() < 1e-3
    # the same model evaluated at its training size gives other probabilities: the size was applied
    from foldkit.predict.inference import load_members
    from foldkit.experiment import Experiment
    (m,) = load_members([Experiment(tmp_path / "models" / "fr")])
    del m.data_config["test_input_size"]
    from foldkit.data.reading import read_competition
    from foldkit.runtime.device import pick_device
    from foldkit.predict.inference import predict_ensemble
    from foldkit.predict.predicting import make_sources
    comp = read_competition(photos)
    at32 = predict_ensemble([m], make_sources(comp, comp.test, "test", [m]), tta=["none"],
                            device=pick_device("cpu"), progress=False)
    assert np.abs(at32 - sub.loc[comp.test["id"]].to_numpy()).max() > 1e-3


def test_test_img_size_is_refused_for_a_model_built_for_one_size(photos, tmp_path):
    paths = ["--input-dir", str(photos), "--folds-dir", str(tmp_path / "folds"),
             "--models-dir", str(tmp_path / "models")]
    run("make_folds.py", *paths, "--n-folds", "2")
    r = subprocess.run([sys.executable, str(REPO / "src" / "train.py"), *paths, *FAST, "--model", "test_vit",
                        "--test-img-size", "48"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "--test-img-size 48: test_vit is built for one input size" in r.stderr
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_the_kits_resize_crop_and_normalise_give_torchvisions_pixels_bit_for_bit():
    """augment.ResizeCrop and augment.Normalize skip torchvision's per-call dispatch (the demo's loaders
    spent most of their time there): every evaluation path uses them, so they must give exactly the
    tensors torchvision's Resize + CenterCrop + ToDtype + Normalize give, at the size and off it."""
    import torch
    from torchvision.transforms import v2

    from foldkit.data.augment import Normalize, ResizeCrop, eval_transform
    g = torch.Generator().manual_seed(0)
    for shape, size, resize, mean, std in [((1, 32, 32), 32, 32, [0.5], [0.5]),
                                           ((3, 32, 32), 32, 37, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
                                           ((3, 61, 45), 32, 32, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]:
        img = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
        for interp in (v2.InterpolationMode.BILINEAR, v2.InterpolationMode.BICUBIC):
            ref = v2.Compose([v2.Resize(resize, interpolation=interp, antialias=True), v2.CenterCrop(size),
                              v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])(img)
            assert torch.equal(Normalize(mean, std)(ResizeCrop(size, resize, interp)(img)), ref)
        dcfg = {"input_size": [shape[0], size, size], "mean": mean, "std": std, "interpolation": "bicubic",
                "crop_pct": size / resize}
        ref = v2.Compose([v2.Resize(resize, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
                          v2.CenterCrop(size), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])(img)
        assert torch.equal(eval_transform(dcfg)(img), ref)
