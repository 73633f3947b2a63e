"""Training a fold with a tiny timm model on real digits (CPU)."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO, need_shared
from foldkit import config
from foldkit.experiment import ExperimentError
from foldkit.train.fit import train
from foldkit.runtime.model import ModelError, create_model, load_checkpoint, model_from_checkpoint

FAST = dict(pretrained=False, model="test_resnet", img_size=32, crop_pct=1.0, hflip=False, aug="medium", lr=3e-3,
            batch_size=32, progress=False, workers=0)


@pytest.fixture(scope="session")
def comp(tmp_path_factory):
    """400 real digits in the CSV layout, 3 stratified folds."""
    from foldkit.data.demo import build_demo
    from foldkit.folds.file import make_folds
    root = tmp_path_factory.mktemp("digits")
    build_demo(root / "in")
    make_folds(config.resolve({"input_dir": str(root / "in"), "folds_dir": str(root / "folds"),
                               "models_dir": str(root / "m0"), "limit": 400, "n_folds": 3}), log=lambda *_: None)
    return root


def cfg_for(comp, tmp_path, **kw):
    return config.resolve({"input_dir": str(comp / "in"), "folds_dir": str(comp / "folds"),
                           "models_dir": str(tmp_path / "models"), **FAST, **kw})


def quiet(*_):
    pass


def test_short_run_learns_and_writes_every_output(comp, tmp_path):
    cfg = cfg_for(comp, tmp_path, epochs=6, batch_size=16, aug="none", warmup_epochs=0.0, experiment="learn")
    [s] = train(cfg, log=quiet)
    exp = tmp_path / "models" / "learn"
    log = pd.read_csv(exp / "log_fold0.csv")
    assert log["train_loss"].iloc[-1] < log["train_loss"].iloc[0]
    assert log["valid_accuracy"].max() > 0.5          # 10 classes: chance is 0.1
    assert s["value"] == pytest.approx(log["valid_metric"].max())
    for name in ("fold0.pt", "fold0.json", "oof_fold0.csv", "curve_fold0.png", "config.json"):
        assert (exp / name).is_file(), name
    assert not (exp / "fold0_last.pt").exists()        # removed once the fold is finished
    oof = pd.read_csv(exp / "oof_fold0.csv", dtype={"id": str})
    folds = pd.read_csv(comp / "folds" / "train_folds.csv", dtype={"id": str})
    assert sorted(oof["id"]) == sorted(folds.loc[folds["fold"] == 0, "id"])
    probs = oof[[f"prob_{c}" for c in range(10)]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    assert (oof["pred"].to_numpy() == probs.argmax(1)).all()
    assert (oof["label"] == oof["pred"]).mean() == pytest.approx(s["value"], abs=1e-6)


def test_checkpoint_round_trip_weights_only_reproduces_oof(comp, tmp_path):
    cfg = cfg_for(comp, tmp_path, epochs=1, experiment="ck")
    train(cfg, log=quiet)
    exp = tmp_path / "models" / "ck"
    ckpt = torch.load(exp / "fold0.pt", map_location="cpu", weights_only=True)
    for key in ("model_name", "classes", "in_chans", "data_config", "fold", "epoch", "metric", "config",
                "versions", "folds_sha256"):
        assert key in ckpt, key
    assert ckpt["classes"] == list(range(10)) and ckpt["in_chans"] == 1   # digits are grey
    assert ckpt["data_config"]["input_size"] == [1, 32, 32]
    model = model_from_checkpoint(ckpt)
    from foldkit.data.augment import eval_transform
    from foldkit.data.images import decode_image
    oof = pd.read_csv(exp / "oof_fold0.csv", dtype={"id": str}).head(16)
    tf = eval_transform(ckpt["data_config"])
    x = torch.stack([tf(torch.from_numpy(decode_image(comp / "in" / "train" / f"{i}.png", grey=True)).permute(2, 0, 1))
                     for i in oof["id"]])
    with torch.no_grad():
        p = torch.softmax(model(x), 1).numpy()
    assert np.allclose(p, oof[[f"prob_{c}" for c in range(10)]].to_numpy(), atol=1e-4)


# per image in the loader; batched (foldkit.data.batchaug) with progressive resizing across the kill
@pytest.mark.parametrize("aug_device,extra", [("cpu", []), ("device", ["--img-size-schedule", "16:1,24:2"])])
def test_killed_run_resumes_to_the_same_result(comp, tmp_path, aug_device, extra):
    args = ["--input-dir", str(comp / "in"), "--folds-dir", str(comp / "folds"), "--model", "test_resnet",
            "--img-size", "32", "--crop-pct", "1.0", "--no-hflip", "--aug", "medium", "--epochs", "4",
            "--batch-size", "32", "--no-progress", "--experiment", "r", "--fold", "1", "--workers", "1",
            "--no-pretrained", "--aug-device", aug_device, *extra]
    cmd = [sys.executable, str(REPO / "src" / "train.py"), *args]
    ref = subprocess.run(cmd + ["--models-dir", str(tmp_path / "a")], capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    # second run: killed hard once two epochs are logged, then started again
    p = subprocess.Popen(cmd + ["--models-dir", str(tmp_path / "b")], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    log = tmp_path / "b" / "r" / "log_fold1.csv"
    t0 = time.time()
    while time.time() - t0 < 120:
        if log.is_file() and len(log.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (tmp_path / "b" / "r" / "fold1_last.pt").is_file(), log.read_text() if log.is_file() else "no log"
    again = subprocess.run(cmd + ["--models-dir", str(tmp_path / "b")], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "resuming after epoch" in again.stdout, again.stdout
    a = pd.read_csv(tmp_path / "a" / "r" / "log_fold1.csv")
    b = pd.read_csv(tmp_path / "b" / "r" / "log_fold1.csv")
    cols = ["epoch", "train_loss", "valid_loss", "valid_metric"] + (["img_size"] if extra else [])
    pd.testing.assert_frame_equal(a[cols], b[cols])
    if extra:     # the sizes the model was given, read from its batches
        assert a["img_size"].tolist() == [16, 24, 24, 32]
    oa = pd.read_csv(tmp_path / "a" / "r" / "oof_fold1.csv")
    ob = pd.read_csv(tmp_path / "b" / "r" / "oof_fold1.csv")
    pd.testing.assert_frame_equal(oa, ob)


@pytest.mark.parametrize("aug", ["light", "none"])
def test_progressive_resizing_trains_small_first_and_evaluates_at_the_training_size(comp, tmp_path, aug):
    """--img-size-schedule on the per-image path: the first epochs see smaller crops (the log's img_size is
    read from the batches), validation and the checkpoint stay at --img-size, and --aug none trains at the
    training size even with --test-img-size (it used to take the evaluation size)."""
    lines = []
    [s] = train(cfg_for(comp, tmp_path, epochs=3, aug=aug, aug_device="cpu", img_size_schedule="16:1,24:1",
                        test_img_size=40 if aug == "none" else 0, experiment="prog"), log=lines.append)
    log = pd.read_csv(tmp_path / "models" / "prog" / "log_fold0.csv")
    assert log["img_size"].tolist() == [16, 24, 32]
    assert any("progressive resizing, epochs 1 at 16 px, 2 at 24 px, 3 at 32 px" in str(x) for x in lines), lines
    ckpt = load_checkpoint(tmp_path / "models" / "prog" / "fold0.pt")
    assert ckpt["data_config"]["input_size"] == [1, 32, 32] and s["epochs_run"] == 3
    assert ckpt["config"]["img_size_schedule"] == "16:1,24:1"


def test_same_seed_same_metrics(comp, tmp_path):
    r1 = train(cfg_for(comp, tmp_path / "1", epochs=2, experiment="s", fold="2"), log=quiet)
    r2 = train(cfg_for(comp, tmp_path / "2", epochs=2, experiment="s", fold="2"), log=quiet)
    l1 = pd.read_csv(tmp_path / "1" / "models" / "s" / "log_fold2.csv")
    l2 = pd.read_csv(tmp_path / "2" / "models" / "s" / "log_fold2.csv")
    assert r1[0]["value"] == r2[0]["value"]
    assert (l1["train_loss"] == l2["train_loss"]).all()


def test_local_pretrained_file_loads_backbone_and_new_head(tmp_path):
    src = create_model("test_resnet", 1000)
    path = tmp_path / "imagenet.pth"
    torch.save(src.state_dict(), path)
    m = create_model("test_resnet", 7, pretrained_file=str(path))
    sd, ref = m.state_dict(), src.state_dict()
    head = {k for k in sd if k.startswith("fc.")}
    assert head and all(torch.equal(sd[k], ref[k]) for k in sd if k not in head)
    assert sd["fc.weight"].shape[0] == 7
    assert torch.count_nonzero(sd["fc.weight"]) == 0       # a new head on pretrained features starts at zero
    with pytest.raises(ModelError, match="does not exist"):
        create_model("test_resnet", 7, pretrained_file=str(tmp_path / "nope.pth"))
    with pytest.raises(ModelError, match="is not a timm model"):
        create_model("resnet_does_not_exist", 7)


def test_real_pretrained_mobilenet_file():
    w = need_shared("weights", "mobilenetv2_100_imagenet.pth")
    m = create_model("mobilenetv2_100", 2, pretrained_file=str(w), in_chans=1)
    ref = torch.load(w, map_location="cpu", weights_only=True)
    sd = m.state_dict()
    assert torch.allclose(sd["conv_stem.weight"], ref["conv_stem.weight"].sum(1, keepdim=True), atol=1e-5)
    assert torch.equal(sd["blocks.3.0.conv_pw.weight"], ref["blocks.3.0.conv_pw.weight"])


def test_pretrained_without_network_is_a_clear_error(tmp_path):
    code = ("import sys; sys.path.insert(0, 'src'); from foldkit.runtime.model import create_model, ModelError\n"
            "try:\n    create_model('resnet18', 3, pretrained=True)\nexcept ModelError as e:\n    print('ERR', e)\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "th"))
    t0 = time.time()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert r.stdout.startswith("ERR") and "--pretrained-file" in r.stdout, r.stdout + r.stderr
    assert time.time() - t0 < 60


def test_freeze_phase_keeps_backbone_weights(comp, tmp_path):
    init = create_model("test_resnet", 1000, in_chans=1)
    path = tmp_path / "init.pth"
    torch.save(init.state_dict(), path)
    cfg = cfg_for(comp, tmp_path, epochs=1, freeze_epochs=1, pretrained_file=str(path), experiment="fz")
    train(cfg, log=quiet)
    sd = load_checkpoint(tmp_path / "models" / "fz" / "fold0.pt")["state_dict"]
    ref = init.state_dict()
    body = [k for k in sd if not k.startswith("fc.")]
    assert all(torch.equal(sd[k], ref[k]) for k in body)       # weights and BN statistics untouched
    assert not torch.equal(sd["fc.bias"], torch.zeros_like(sd["fc.bias"]))   # the head learned


def test_mixup_cutmix_path(comp, tmp_path):
    cfg = cfg_for(comp, tmp_path, epochs=2, mixup=0.2, cutmix=1.0, experiment="mx", ema=True, ema_decay=0.9)
    [s] = train(cfg, log=quiet)
    log = pd.read_csv(tmp_path / "models" / "mx" / "log_fold0.csv")
    assert np.isfinite(log["train_loss"]).all() and log["train_accuracy"].isna().all()
    assert s["epochs_run"] == 2


def test_early_stopping(comp, tmp_path):
    # lr 0: nothing can improve after the first epoch, so patience 1 stops after epoch 2
    cfg = cfg_for(comp, tmp_path, epochs=6, lr=0.0, min_lr=0.0, patience=1, metric="logloss", experiment="es")
    [s] = train(cfg, log=quiet)
    assert s["epochs_run"] == 2 and s["best_epoch"] == 1
    assert len(pd.read_csv(tmp_path / "models" / "es" / "log_fold0.csv")) == 2


def test_experiment_name_is_not_reused_for_other_settings_and_finished_folds_skip(comp, tmp_path):
    train(cfg_for(comp, tmp_path, epochs=1, experiment="x"), log=quiet)
    with pytest.raises(ExperimentError, match="other settings.*lr"):
        train(cfg_for(comp, tmp_path, epochs=1, experiment="x", lr=0.1), log=quiet)
    lines = []
    train(cfg_for(comp, tmp_path, epochs=1, experiment="x"), log=lines.append)
    assert any("already finished" in str(l) for l in lines)
    cfgj = json.loads((tmp_path / "models" / "x" / "config.json").read_text())
    assert cfgj["folds_sha256"] and cfgj["classes"] == list(range(10))


def test_gpu_code_paths_run_on_cpu_bf16_channels_last(comp, tmp_path):
    """The AMP (bf16 autocast) and channels_last paths CI cannot run on a GPU, exercised on the CPU."""
    from foldkit.runtime.device import amp_dtype, pick_device
    assert amp_dtype(pick_device("cpu"), "auto") is None            # auto: no AMP on CPU
    assert amp_dtype(pick_device("cpu"), "bf16") == torch.bfloat16
    cfg = cfg_for(comp, tmp_path, epochs=1, amp="bf16", channels_last="on", experiment="bf16", accum_steps=2,
                  clip_grad=1.0)
    [s] = train(cfg, log=quiet)
    log = pd.read_csv(tmp_path / "models" / "bf16" / "log_fold0.csv")
    assert np.isfinite(log["train_loss"]).all() and s["epochs_run"] == 1


def run_cli(capsys, comp, tmp_path, *argv):
    """train.py's main on the digits folds: (exit code, stderr lines)."""
    sys.path.insert(0, str(REPO / "src"))
    import train as train_cli
    base = ["--input-dir", str(comp / "in"), "--folds-dir", str(comp / "folds"),
            "--models-dir", str(tmp_path / "models"), "--no-pretrained", "--model", "test_resnet", "--img-size", "32",
            "--epochs", "1", "--no-progress", "--workers", "0"]
    try:
        train_cli.main(base + list(argv))
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("argv,message", [
    (["--opt", "adamww"], "error: --opt 'adamww': not a timm optimizer; did you mean adamw"),
    (["--sched", "cosin"], "error: --sched 'cosin': not a timm schedule; use one of cosine, step"),
    (["--sched", "plateau"], "error: --sched plateau is not supported: timm's plateau schedule is deprecated"),
    (["--model", "resnet_18"], "error: --model 'resnet_18' is not a timm model; did you mean resnet18"),
    (["--device", "cuda:9"], "error: --device cuda:9: this machine has "),
    (["--device", "gpu"], "error: --device 'gpu' is not a device name"),
    (["--batch-size", "1", "--mixup", "0.2"], "error: --batch-size 1 with --mixup/--cutmix: mixing needs pairs"),
    (["--backbone-lr", "half"], "error: --backbone-lr 'half': give a fraction of --lr"),
    (["--img-size-schedule", "16:2"], "error: --img-size-schedule '16:2': 2 scheduled epochs but --epochs is 1: "
                                      "set --epochs 2 or more"),
    (["--img-size-schedule", "48:1", "--epochs", "3"], "error: --img-size-schedule '48:1': '48:1' is not between "
                                                       "8 px and the training size 32 px"),
    (["--img-size-schedule", "16:1", "--epochs", "3", "--model", "test_vit"],
     "error: --img-size-schedule 16:1: test_vit is built for one input size (--img-size, now 32)")])
def test_setting_mistakes_are_one_line_before_anything_is_recorded(comp, tmp_path, capsys, argv, message):
    if argv == ["--device", "cuda:9"] and torch.cuda.device_count() > 9:
        pytest.skip("this machine has a cuda:9")
    code, err = run_cli(capsys, comp, tmp_path, *argv)
    assert code == 2 and len(err) == 1 and err[0].startswith(message), err
    assert not (tmp_path / "models").exists()            # no experiment recorded


def test_drop_path_on_a_model_without_it_is_one_line(comp, tmp_path, capsys):
    code, err = run_cli(capsys, comp, tmp_path, "--model", "vgg11", "--drop-path", "0.1")
    assert code == 2 and err == ["error: --drop-path 0.1: model 'vgg11' does not support it (its constructor "
                                 "takes no drop_path_rate); leave --drop-path out for this model"]


def test_corrupt_folds_meta_is_one_line(comp, tmp_path, capsys):
    import shutil
    folds = tmp_path / "folds"
    shutil.copytree(comp / "folds", folds)
    (folds / "folds_meta.json").write_text('{"classes": [0, 1')       # cut short
    code, err = run_cli(capsys, comp, tmp_path, "--folds-dir", str(folds))
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: {folds / 'folds_meta.json'} is not valid JSON") and "make_folds.py" in err[0]


def test_odd_batch_with_mixup_trains(comp, tmp_path):
    """timm's Mixup mixes pairs: an odd batch leaves its last image out (and says so) instead of failing."""
    lines = []
    [s] = train(cfg_for(comp, tmp_path, epochs=1, batch_size=15, mixup=0.2, experiment="odd"), log=lines.append)
    assert s["epochs_run"] == 1
    assert any("--batch-size 15 is odd" in str(l) for l in lines)


def test_vit_trains_and_reloads_at_any_img_size(comp, tmp_path):
    """Models built for one size (ViT, Swin: timm's fixed_input_size) are created for --img-size, and
    their checkpoints rebuild at it."""
    [s] = train(cfg_for(comp, tmp_path, model="test_vit3", epochs=1, batch_size=64, aug="none",
                             experiment="vit"), log=quiet)
    ckpt = load_checkpoint(tmp_path / "models" / "vit" / "fold0.pt")
    model = model_from_checkpoint(ckpt)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    assert s["data_config"]["input_size"] == [1, 32, 32]


def test_deterministic_flag_reaches_torch_and_is_recorded(comp, tmp_path, monkeypatch):
    """--deterministic (the GPU's exact resume) sets torch's deterministic algorithms, cuDNN and cuBLAS in the
    process that trains, and is part of the experiment's settings; checked on CPU, where it costs nothing."""
    from foldkit.cli import script
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    argv = ["--input-dir", str(comp / "in"), "--folds-dir", str(comp / "folds"), "--models-dir", str(tmp_path),
            "--model", "test_resnet", "--img-size", "32", "--crop-pct", "1.0", "--batch-size", "32", "--workers", "0",
            "--no-pretrained", "--no-progress", "--epochs", "1", "--experiment", "det", "--deterministic"]
    try:
        script("train")(argv)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(False)
    assert json.loads((tmp_path / "det" / "config.json").read_text())["deterministic"] is True


def test_pretrained_is_the_default_and_an_unreachable_hub_is_one_line_naming_both_ways_out(comp, tmp_path):
    """train.py --fold 0 fine-tunes the hub's weights by default; offline with nothing cached, it stops with one
    line naming --pretrained-file and --no-pretrained (never random weights in silence)."""
    assert config.Config().pretrained is True and config.resolve({}).pretrained is True
    cmd = [sys.executable, str(REPO / "src" / "train.py"), "--input-dir", str(comp / "in"), "--folds-dir",
           str(comp / "folds"), "--models-dir", str(tmp_path / "m"), "--model", "test_resnet", "--img-size", "32",
           "--epochs", "1", "--batch-size", "32", "--no-progress", "--workers", "0", "--fold", "0"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: could not get pretrained weights for 'test_resnet' from the hub"), r.stderr
    assert "--pretrained-file PATH" in r.stderr and "--no-pretrained" in r.stderr, r.stderr
    assert not re.search(r"epoch +\d+/\d+", r.stdout)      # stopped before training anything


def test_a_model_without_pretrained_weights_trains_from_scratch_saying_so():
    from foldkit.train.builder import pretrained_or_scratch
    lines = []
    cfg = pretrained_or_scratch(config.resolve({"model": "cspresnet50d"}), log=lines.append)
    assert cfg.pretrained is False and lines == ["note: timm has no pretrained weights for cspresnet50d: "
                                                 "training it from scratch"]
    with pytest.raises(ModelError, match="--pretrained: timm has no pretrained weights for 'cspresnet50d'.*"
                       "--no-pretrained"):
        pretrained_or_scratch(config.resolve({"model": "cspresnet50d", "pretrained": True}))
    assert pretrained_or_scratch(config.resolve({"model": "test_resnet"})).pretrained is True
    # a local file is not the hub's weights: recorded as before the default changed (experiment names kept)
    assert pretrained_or_scratch(config.resolve({"model": "test_resnet", "pretrained_file": "w.pth"})).pretrained is False
