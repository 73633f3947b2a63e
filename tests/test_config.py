"""Defaults < config file < command line, in one place."""
import dataclasses
import os
import subprocess
import sys

import pytest

from conftest import REPO
from foldkit import config
from foldkit.errors import ConfigError


def test_precedence_file_then_cli(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('n_folds = 3\n[folds]\nseed = 9\n')
    p = config.build_parser(["paths", "data", "folds"], "x")
    cfg = config.resolve(p.parse_args(["--config", str(f), "--seed", "11"]))
    assert cfg.n_folds == 3 and cfg.seed == 11 and cfg.limit == 0


def test_unknown_key_in_file_is_named(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('n_fold = 3\n')
    with pytest.raises(ConfigError, match="unknown setting.*n_fold"):
        config.resolve({"config": str(f)})


@pytest.mark.parametrize("script", ["make_folds.py", "train.py", "predict.py"])
def test_user_errors_are_one_line_and_exit_2(tmp_path, script):
    """Every CLI turns an error the user can fix into one line on stderr and exit code 2."""
    f = tmp_path / "c.toml"
    f.write_text('n_fold = 3\n')
    r = subprocess.run([sys.executable, str(REPO / "src" / script), "--config", str(f)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: unknown setting(s) n_fold in {f}; see --help for the valid names"]


def test_help_is_fast_and_documents_options():
    r = subprocess.run([sys.executable, "-X", "importtime", str(REPO / "src" / "make_folds.py"), "--help"],
                       capture_output=True, text=True)
    assert r.returncode == 0
    for opt in ("--n-folds", "--group-col", "--limit", "--skip-bad-images", "--force", "--config"):
        assert opt in r.stdout
    assert "torch" not in r.stderr.split()   # --help does not import torch


# The examples: each once silently trained something else (or crashed after the experiment
# was recorded); each is now the flag's own check, naming the key, the value, the choices and the file.
BAD_TOML = [('amp = "fp32"', "amp = 'fp32'", "one of auto, bf16, fp16, off"),
            ('bn = "freeze"', "bn = 'freeze'", "one of auto, train, frozen"),
            ('balance = "weight"', "balance = 'weight'", "one of none, weights, sampler; did you mean weights?"),
            ('cache = "yes"', "cache = 'yes'", "one of auto, disk, ram, off"),
            ('metric = "mape"', "metric = 'mape'", "one of accuracy, logloss"),
            ('rare_classes = "drop"', "rare_classes = 'drop'", "one of warn, train-only, error"),
            ('epochs = "ten"', "epochs = 'ten'", "not a whole number"),
            ('epochs = 2.5', "epochs = 2.5", "not a whole number"),
            ('hflip = "no"', "hflip = 'no'", "not true or false"),
            ('[train]\nbatch_size = 0', "batch_size = 0", "not at least 1 or auto"),
            ('lr = -0.1', "lr = -0.1", "not at least 0"),
            ('in_chans = 2', "in_chans = 2", "not one of 0, 1, 3")]


@pytest.mark.parametrize("line,named,expected", BAD_TOML)
def test_toml_values_get_the_flags_checks(tmp_path, line, named, expected):
    f = tmp_path / "c.toml"
    f.write_text(line + "\n")
    with pytest.raises(ConfigError) as e:
        config.resolve({"config": str(f)})
    assert str(e.value).startswith(f"setting {named} in {f} is not ") and expected in str(e.value)


def test_toml_bad_value_is_one_line_through_the_cli(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('amp = "fp32"\n')
    r = subprocess.run([sys.executable, str(REPO / "src" / "train.py"), "--config", str(f)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: setting amp = 'fp32' in {f} is not one of auto, bf16, fp16, off"]


def test_toml_text_converts_like_the_flag(tmp_path):
    """A number written as text converts as its flag would; a number or list where text is expected
    becomes the flag's text."""
    f = tmp_path / "c.toml"
    f.write_text('epochs = "10"\nlr = "3e-4"\nwarmup_epochs = 2\nfold = [0, 2]\n[train]\nbackbone_lr = 0.5\n')
    cfg = config.resolve({"config": str(f)})
    assert (cfg.epochs, cfg.lr, cfg.warmup_epochs, cfg.fold, cfg.backbone_lr) == (10, 3e-4, 2.0, "0,2", "0.5")
    p = config.build_parser(["train"], "x")
    assert config.resolve(p.parse_args(["--epochs", "10", "--lr", "3e-4"])).epochs == cfg.epochs


@pytest.mark.parametrize("argv,message", [
    (["--amp", "fp32"], "error: argument --amp: 'fp32' is not one of auto, bf16, fp16, off (see train.py --help)"),
    (["--epochs", "ten"], "error: argument --epochs: 'ten' is not a whole number (see train.py --help)"),
    (["--batch-size", "0"], "error: argument --batch-size: '0' is not at least 1 or auto (see train.py --help)")])
def test_flag_mistake_is_one_line(capsys, argv, message):
    sys.path.insert(0, str(REPO / "src"))
    import train as train_cli
    with pytest.raises(SystemExit) as e:
        train_cli.main(argv)
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [message]


def test_config_reads_toml_on_python_310(tmp_path):
    """Python 3.10 has no tomllib: a config file is read with the tomli package (setup.cfg declares it
    there); without tomli every script still runs, and a --config file is one line saying what to install."""
    f = tmp_path / "c.toml"
    f.write_text("n_folds = 3\n")
    py310 = "import sys, tomllib; sys.modules['tomllib'] = None; sys.version_info = (3, 10, 0); "
    read = f"from foldkit import config; print(config.resolve({{'config': {str(f)!r}}}).n_folds)"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    with_tomli = py310.replace("sys.modules['tomllib'] = None", "sys.modules['tomli'] = tomllib; "
                               "sys.modules['tomllib'] = None")
    r = subprocess.run([sys.executable, "-c", with_tomli + read], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.split() == ["3"], r.stderr
    without = py310 + "sys.modules['tomli'] = None; " + read
    r = subprocess.run([sys.executable, "-c", without], capture_output=True, text=True, env=env)
    assert "reading a --config file on Python 3.10 needs the tomli package" in r.stderr
    r = subprocess.run([sys.executable, "-c", py310 + "sys.modules['tomli'] = None; from foldkit import config; "
                        "print(config.resolve({'n_folds': 4}).n_folds)"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.split() == ["4"], r.stderr


def test_choices_offered_by_help_are_the_ones_the_work_takes():
    """--aug, --blend and the post-processing switches are listed from the ground floor's names
    (foldkit.choices); the modules doing the work build on exactly those names."""
    from foldkit import choices
    from foldkit.config import Config
    from foldkit.predict.blend import BLENDS
    from foldkit.predict.calibrate import steps_for
    meta = {f.name: f.metadata for f in dataclasses.fields(Config)}
    assert meta["aug"]["choices"] == list(choices.AUG_PRESETS)
    assert meta["blend"]["choices"] == list(BLENDS) == list(choices.BLEND_MODES)
    assert all(BLENDS[k].help in meta["blend"]["help"] for k in BLENDS)
    for switch in ("calibrate", "thresholds", "clip"):
        assert meta[switch]["choices"] == choices.SWITCHES
    with pytest.raises(ConfigError, match="use one of auto, on, off"):
        steps_for("accuracy", calibrate="sometimes")

