"""A new user's first real competition: Kaggle's other training-CSV names and one-hot labels, rare
classes, hostile ids and huge images, every reading flag honoured, unfinished folds, resume messages,
NaN losses, and pretrained fine-tuning that keeps its features (folded BatchNorm, backbone LR)."""
import contextlib
import io
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO, need_shared, write_png
from foldkit import config
from foldkit.data.reading import read_competition
from foldkit.data.images import ImageError, InputError, decode_image
from foldkit.train.fit import TrainError, train

CLASSES = ["healthy", "rust", "scab"]          # sorted: the kit's class order
SAMPLE_COLS = ["image_id", "scab", "healthy", "rust"]   # the sample's own column order
FAST = dict(model="test_resnet", img_size=32, crop_pct=1.0, hflip=False, aug="none", lr=3e-3, epochs=1,
            pretrained=False, batch_size=32, progress=False, workers=0, warmup_epochs=0.0)


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def leafy(tmp_path_factory):
    """A Plant-Pathology-like competition from real digits 0/1/2: one-hot train.csv under another name
    (train_labels.csv is not it: this one is labels.csv), a probability sample_submission, one training
    id whose file is missing; folds made with --skip-bad-images."""
    from foldkit.data.demo import digit_images
    from foldkit.folds.file import make_folds
    root = tmp_path_factory.mktemp("leafy")
    comp = root / "in"
    x, y = digit_images(32)
    keep = np.flatnonzero(y < 3)[:150]
    rows = []
    for k, i in enumerate(keep):
        write_png(comp / "train" / f"leaf_{k}.png", x[i])
        rows.append({"image_id": f"leaf_{k}", **{c: int(y[i] == j) for j, c in enumerate(CLASSES)}})
    rows.append({"image_id": "leaf_missing", "healthy": 1, "rust": 0, "scab": 0})
    pd.DataFrame(rows).to_csv(comp / "labels.csv", index=False)
    test = np.flatnonzero(y < 3)[150:170]
    for k, i in enumerate(test):
        write_png(comp / "test" / f"t{k}.png", x[i])
    pd.DataFrame({"image_id": [f"t{k}" for k in range(len(test))], "scab": 0.25, "healthy": 0.5, "rust": 0.25}
                 )[SAMPLE_COLS].to_csv(comp / "sample_submission.csv", index=False)
    make_folds(config.resolve({"input_dir": str(comp), "folds_dir": str(root / "folds"),
                               "models_dir": str(root / "models"), "n_folds": 2, "skip_bad_images": True}),
               log=quiet)
    return root


@pytest.fixture(scope="module")
def trained(leafy):
    """Two experiments on the leafy folds: a (both folds) and b (fold 0 only)."""
    train(leafy_cfg(leafy, fold="all", experiment="a"), log=quiet)
    train(leafy_cfg(leafy, fold="0", experiment="b", lr=1e-3), log=quiet)
    return leafy


def leafy_cfg(root, **kw):
    """Settings as a user types them after make_folds: no --input-dir, no --skip-bad-images."""
    return config.resolve({"folds_dir": str(root / "folds"), "models_dir": str(root / "models"),
                           "submissions_dir": str(root / "subs"), "reports_dir": str(root / "reports"),
                           **FAST, **kw})


# ---------------------------------------------------------------- reading any Kaggle competition

def test_labels_csv_with_one_hot_columns_is_read_as_one_label(leafy):
    from foldkit.folds.file import read_folds
    table, meta = read_folds(leafy / "folds")
    assert meta["train_csv"] == "labels.csv" and meta["one_hot_columns"] == CLASSES
    assert meta["classes"] == CLASSES and len(table) == 150          # the missing file was skipped
    assert meta["reading"]["skip_bad_images"] is True
    assert set(table["label"]) == set(CLASSES) and "healthy" not in table.columns


def test_train_csv_flag_and_multi_label_rows(tmp_path):
    write_png(tmp_path / "train" / "a.png", np.zeros((8, 8, 3), np.uint8))
    write_png(tmp_path / "train" / "b.png", np.zeros((8, 8, 3), np.uint8))
    pd.DataFrame({"id": ["a", "b"], "cat": [1, 1], "dog": [0, 1]}).to_csv(tmp_path / "my_labels.csv", index=False)
    assert read_competition(tmp_path).train_csv == "my_labels.csv"     # its ids name train/'s files
    assert read_competition(tmp_path, train_csv="my_labels.csv").task == "multilabel"   # several classes a row
    with pytest.raises(InputError, match=r"data rows \[2\] have 2 classes set: that is multi-label data"):
        read_competition(tmp_path, train_csv="my_labels.csv", task="single")
    with pytest.raises(InputError, match="--train-csv nope.csv: no such file.*my_labels.csv"):
        read_competition(tmp_path, train_csv="nope.csv")


def test_training_is_honest_about_unused_flags_and_decodes_images_once(leafy, monkeypatch):
    """train.py without --input-dir/--skip-bad-images finds the competition and skips the missing file
    as make_folds did; --image-ext is a reading setting, not part of the experiment's identity; the
    training images are decoded once for all folds; a notebook's matplotlib backend is left alone."""
    import matplotlib
    import matplotlib.pyplot  # noqa: F401 - a notebook has pyplot loaded with its own backend
    matplotlib.pyplot.switch_backend("pdf")
    import foldkit.data.dataset as ds
    made = []
    real_init = ds.ImageSource.__init__
    monkeypatch.setattr(ds.ImageSource, "__init__", lambda self, *a, **k: made.append(1) or real_init(self, *a, **k))
    res = train(leafy_cfg(leafy, fold="all", experiment="honest"), log=quiet)
    assert [r["fold"] for r in res] == [0, 1] and len(made) == 1
    assert matplotlib.get_backend() == "pdf"
    from foldkit.config import learning_settings
    assert "image_ext" not in learning_settings(leafy_cfg(leafy, image_ext=".png"))


def test_probability_submission_in_the_samples_column_order(trained):
    leafy = trained
    from foldkit.predict.predicting import run_predict
    out = run_predict(leafy_cfg(leafy, experiments="a"), log=quiet)
    sub = pd.read_csv(out["submission"])
    assert list(sub.columns) == SAMPLE_COLS and out["mode"] == "probs"
    assert np.allclose(sub[CLASSES].sum(axis=1), 1, atol=1e-4)


def test_cross_experiment_cv_uses_the_rows_both_have(trained):
    leafy = trained
    from foldkit.predict.blend import from_experiments
    from foldkit.experiment import find_experiments
    from foldkit.oof import load_oof
    exps = find_experiments(leafy / "models", ["a", "b"])
    fold0 = load_oof(exps[0].dir, [0])[0]
    for order in (exps, exps[::-1]):      # one experiment has fewer finished folds, either way round
        lines = []
        res = from_experiments(order, CLASSES, "mean", log=lines.append)
        assert res["cv"] is not None and any(f"on the {len(fold0)} OOF rows every experiment has" in m
                                             for m in lines), lines


def test_unfinished_fold_counts_nowhere(trained, tmp_path):
    """A fold killed mid-run (OOF and checkpoint of its best epoch so far, no fold{k}.json): CV, report,
    ensemble and one-image prediction all use the finished folds only."""
    leafy = trained
    import shutil

    from foldkit.predict.predicting import predict_image, run_predict
    from foldkit.report.predicted import write_reports
    models = tmp_path / "models"
    shutil.copytree(leafy / "models" / "a", models / "a")
    (models / "a" / "fold1.json").unlink()
    lines = []
    cfg = leafy_cfg(leafy, experiments="a", models_dir=str(models), reports_dir=str(tmp_path / "r"),
                    submissions_dir=str(tmp_path / "s"))
    out = run_predict(cfg, log=lines.append, reports=write_reports)
    assert out["members"] == 1 and any("1 fold(s): [0]" in m for m in lines), lines
    import json
    assert json.loads((tmp_path / "r" / "a" / "cv_scores.json").read_text())["folds"] == [0]
    img = leafy / "in" / "test" / "t0.png"
    lines = []
    predict_image(leafy_cfg(leafy, experiments="a", models_dir=str(models), image=str(img)), log=lines.append)
    assert "(1 models of a)" in lines[0]


def test_test_image_missing_warns_at_make_folds_and_stops_predict(trained, tmp_path):
    leafy = trained
    import shutil

    from foldkit.folds.file import make_folds
    from foldkit.predict.predicting import run_predict
    from foldkit.predict.submission import SubmissionError
    comp = tmp_path / "in"
    shutil.copytree(leafy / "in", comp)
    (comp / "test" / "t3.png").unlink()
    lines = []
    make_folds(config.resolve({"input_dir": str(comp), "folds_dir": str(tmp_path / "f"), "n_folds": 2,
                               "models_dir": str(tmp_path / "m"), "skip_bad_images": True}), log=lines.append)
    assert any("warning: 1 test image(s)" in m and "'t3'" in m for m in lines), lines
    cfg = leafy_cfg(leafy, experiments="a", input_dir=str(comp), submissions_dir=str(tmp_path / "s"), report=False)
    with pytest.raises(SubmissionError, match=r"(?s)1 test image\(s\).*data row 4 \(id 't3'\)"):
        run_predict(cfg, log=quiet)


# ---------------------------------------------------------------- hostile files

def test_id_escaping_the_image_folder_is_refused_before_any_file_is_touched(tmp_path, monkeypatch):
    import foldkit.data.files as files
    write_png(tmp_path / "train" / "a.png", np.zeros((8, 8, 3), np.uint8))
    pd.DataFrame({"id": ["a", "../../../../etc/passwd"], "label": [0, 1]}).to_csv(tmp_path / "train.csv", index=False)
    monkeypatch.setattr(files, "check_image_file", lambda p: pytest.fail(f"opened {p}"))
    with pytest.raises(InputError, match=r"data row 2: id '../../../../etc/passwd' points outside"):
        read_competition(tmp_path)


def test_decoded_pixel_limit_names_the_file_and_the_variable(tmp_path, monkeypatch):
    p = write_png(tmp_path / "huge.png", np.zeros((8, 8, 3), np.uint8))
    buf = bytearray(p.read_bytes())
    buf[16:24] = (20000).to_bytes(4, "big") + (20000).to_bytes(4, "big")   # IHDR says 20,000 x 20,000
    p.write_bytes(bytes(buf))
    with pytest.raises(ImageError, match=r"huge.png.*20000 x 20000 pixels.*FOLDKIT_MAX_IMAGE_PIXELS"):
        decode_image(p)
    small = write_png(tmp_path / "s.png", np.zeros((40, 40, 3), np.uint8))
    monkeypatch.setenv("FOLDKIT_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(ImageError, match="1,000 decoded pixels"):
        decode_image(small)
    monkeypatch.setenv("FOLDKIT_MAX_IMAGE_PIXELS", "2000")
    assert decode_image(small).shape == (40, 40, 3)


def test_non_square_photos_batch_together_with_crop_pct_1():
    """Photos of different shapes at --crop-pct 1.0: evaluation (and --aug none) gives size x size."""
    from foldkit.data.augment import eval_transform, train_transform
    from foldkit.export.bundle import eval_preprocess
    cfg = {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear",
           "crop_pct": 1.0}
    rng = np.random.default_rng(0)
    for h, w in ((40, 64), (64, 40), (32, 32)):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        x = torch.from_numpy(img).permute(2, 0, 1)
        assert eval_transform(cfg)(x).shape == train_transform(cfg, "none")(x).shape == (3, 32, 32)
        ref = eval_transform(cfg)(x).numpy()
        assert eval_preprocess(img, cfg).shape == (3, 32, 32)                 # the torch-free twin too
        assert np.abs(eval_preprocess(img, cfg) - ref).max() < 0.05


# ---------------------------------------------------------------- training loop

def test_repeated_draws_of_a_sample_get_different_augmentations():
    from foldkit.data.dataset import EpochSampler, SeededDataset

    class Noise(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return float(torch.rand(1))

    w = np.array([1.0, 1e-9, 1e-9, 1e-9])     # balanced sampling of a rare image: drawn every time
    keys = list(EpochSampler(4, seed=0, weights=w))
    assert [k[2] for k in keys] == [0, 0, 0, 0]
    ds = SeededDataset(Noise(), seed=1)
    vals = [ds[k] for k in keys]
    assert len(set(vals)) == 4 and vals == [ds[k] for k in keys]    # different per draw, reproducible


def test_resume_message_with_undefined_scores_and_nan_loss(leafy, tmp_path, monkeypatch):
    import foldkit.train.engine as engine
    import foldkit.metrics as metrics
    monkeypatch.setattr(metrics, "score", lambda *a: float("nan"))      # e.g. AUC on a one-class fold
    real_eval, calls = engine.evaluate, []

    def evaluate_then_die(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt        # killed in epoch 2
        return real_eval(*a, **k)
    monkeypatch.setattr(engine, "evaluate", evaluate_then_die)
    cfg = leafy_cfg(leafy, models_dir=str(tmp_path), experiment="nan", epochs=3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, log=quiet)
    monkeypatch.setattr(engine, "evaluate", real_eval)
    lines = []
    [s] = train(cfg, log=lines.append)
    assert any("resuming after epoch 1 (best accuracy n/a at epoch 1)" in m for m in lines), lines
    assert s["value"] is None and s["epochs_run"] == 3

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward",
                        lambda self, out, y: out.sum() * float("nan"))
    with pytest.raises(TrainError, match=r"fold 0 epoch 1: the loss became nan at batch 1 \(optimizer step 1\).*--lr"):
        train(leafy_cfg(leafy, models_dir=str(tmp_path), experiment="boom"), log=quiet)


def test_cli_errors_from_the_report_and_folds_are_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "src" / "predict.py"), "--folds-dir", str(tmp_path / "none")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "make_folds.py" in r.stderr
    from foldkit.errors import FoldkitError
    from foldkit.oof import ReportError
    assert issubclass(ReportError, FoldkitError)


# ---------------------------------------------------------------- fine-tuning that keeps pretrained features

def test_folded_batchnorm_is_detected_and_kept_frozen():
    from foldkit.runtime.model import bn_is_folded, choose_bn, create_model, train_mode
    w = need_shared("weights", "mobilenetv2_100_imagenet.pth")
    m = create_model("mobilenetv2_100", 2, pretrained_file=str(w))
    assert bn_is_folded(m) and not bn_is_folded(create_model("mobilenetv2_100", 2))
    freeze, why = choose_bn("auto", pretrained=True, folded=True, batch_size=64)
    assert freeze and "folded" in why
    assert choose_bn("auto", pretrained=True, folded=False, batch_size=8)[0]          # small batches
    assert not choose_bn("auto", pretrained=False, folded=False, batch_size=8)[0]     # from scratch: trained
    bn = m.blocks[1][0].bn1
    before = bn.running_var.clone()
    train_mode(m, freeze_bn=True)
    m(torch.rand(2, 3, 64, 64))
    assert torch.equal(bn.running_var, before) and not bn.training


def test_backbone_lr_fraction_and_ramp_after_unfreezing():
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    from foldkit.runtime.model import UnfreezeWarmup, create_model, param_groups
    m = create_model("test_resnet", 3)
    opt = create_optimizer_v2(param_groups(m, 0.05, backbone_lr=0.1, layer_decay=0.0), opt="adamw", lr=1e-3)
    sched, _ = create_scheduler_v2(opt, sched="cosine", num_epochs=100, warmup_epochs=0, step_on_epochs=False,
                                   updates_per_epoch=10)
    sched = UnfreezeWarmup(sched, opt, start=10, steps=10)

    def lrs(step):
        sched.step_update(step)
        head = {g["lr"] for g in opt.param_groups if not g["backbone"]}
        body = {g["lr"] for g in opt.param_groups if g["backbone"]}
        return max(head), max(body)
    head, body = lrs(10)
    assert body == 0 and head == pytest.approx(1e-3, rel=0.01)          # unfrozen at step 10: ramp starts at 0
    head, body = lrs(15)
    assert body == pytest.approx(0.5 * 0.1 * head, rel=0.01)
    head, body = lrs(20)
    assert body == pytest.approx(0.1 * head, rel=1e-6)                  # then the backbone runs at 0.1 x --lr


def test_a_probability_sample_with_the_accuracy_metric_is_said_once_at_make_folds_and_train(tmp_path, digits_32):
    """A log-loss competition (the sample has one column per class) trained with --metric left at accuracy:
    make_folds and train each say it in one line; with --metric logloss train says nothing."""
    import make_folds
    import train
    x, y = digits_32
    keep = y < 3
    x, y = x[keep][:90], y[keep][:90]
    comp = tmp_path / "input"
    comp.mkdir()
    for name, arr in (("x_train", x[:60]), ("y_train", y[:60]), ("x_test", x[60:])):
        np.save(comp / f"{name}.npy", arr)
    pd.DataFrame({"id": [str(i) for i in range(30)], "0": 0.3, "1": 0.3, "2": 0.4}).to_csv(
        comp / "sample_submission.csv", index=False)
    paths = ["--input-dir", str(comp), "--folds-dir", str(tmp_path / "folds"), "--models-dir", str(tmp_path / "models")]
    fast = ["--model", "test_resnet", "--img-size", "32", "--epochs", "1", "--batch-size", "32", "--no-progress",
            "--no-pretrained", "--workers", "0", "--fold", "0"]
    hint = "the sample asks for probabilities (one column per class)"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        make_folds.main([*paths, "--n-folds", "2"])
    assert out.getvalue().count(hint) == 1 and "train with --metric logloss" in out.getvalue()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        train.main([*paths, *fast, "--experiment", "acc"])
    assert out.getvalue().count(hint) == 1 and "--metric logloss picks the epoch" in out.getvalue()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        train.main([*paths, *fast, "--metric", "logloss", "--experiment", "ll"])
    assert hint not in out.getvalue()
    # a default that is a guess says so in one line: the image size when --img-size is not given
    from foldkit.train.builder import prepare_run
    lines = []
    prepare_run(config.resolve(input_dir=str(comp), folds_dir=str(tmp_path / "folds"), models_dir=str(tmp_path / "models"),
                               model="test_resnet", metric="logloss", experiment="guess", progress=False),
                log=lines.append)
    assert [line for line in lines if "pretrained size: a guess for your images (--img-size to choose)" in line]
    assert "--img-size to choose" not in out.getvalue()      # given: nothing to say
