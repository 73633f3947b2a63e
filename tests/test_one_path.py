"""One way to build a run (foldkit.train.builder): train.py, a tune trial and its held-out fold, auto.py's
candidates and speed probe, --lr-find and a teacher's student all get their settings from the same steps
(the task's defaults, the checks, --batch-size auto, the experiment name). Tiny real multi-label and
regression competitions (tests/task_data.py), a tiny model on the CPU."""
import os
import subprocess
import sys

import pytest

import task_data
from conftest import REPO
from foldkit import config
from foldkit.folds.file import make_folds

TINY = dict(model="test_resnet", img_size=32, crop_pct=1.0, hflip=False, batch_size=16, progress=False,
            pretrained=False, workers=0, warmup_epochs=0.0, aug="none", epochs=1)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def quiet(*_):
    pass


def competition(root, build, n_train=40):
    build(root / "in", n_train=n_train, n_test=10)
    make_folds(config.resolve({"input_dir": str(root / "in"), "folds_dir": str(root / "folds"), "n_folds": 2,
                               "models_dir": str(root / "m0")}), log=quiet)
    return root


@pytest.fixture(scope="module")
def rotated(tmp_path_factory):
    return competition(tmp_path_factory.mktemp("rotated"), task_data.rotated_digits)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return competition(tmp_path_factory.mktemp("pairs"), task_data.digit_pairs)


def dirs(comp, out):
    return {"input_dir": str(comp / "in"), "folds_dir": str(comp / "folds"), "models_dir": str(out / "m"),
            "submissions_dir": str(out / "s"), "reports_dir": str(out / "r")}


def predict_cli(comp, out, name):
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in dirs(comp, out).items()]
    return subprocess.run([sys.executable, str(REPO / "src" / "predict.py"), *flags, "--experiments", name,
                           "--no-report"], capture_output=True, text=True, env=ENV, timeout=300)


@pytest.mark.parametrize("kind", ["rotated", "pairs"])
def test_a_tune_trial_on_regression_and_multilabel_takes_the_task_metric_and_predicts(kind, request, tmp_path):
    """Without --metric a trial scores the task's own metric (rmse, f1_samples): it used to score accuracy
    on numbers or multi-hot rows and crash."""
    pytest.importorskip("optuna")
    from foldkit.search.tune import run_study
    comp = request.getfixturevalue(kind)
    cfg = config.resolve({**dirs(comp, tmp_path), **TINY, "n_trials": 1, "tune_folds": "0", "pruner": "none"})
    study = run_study(cfg, log=quiet)
    [trial] = study.trials
    assert trial.state.name == "COMPLETE", trial.user_attrs
    name = trial.user_attrs["experiment"]
    assert study.study_name.split("-")[1] == {"rotated": "rmse", "pairs": "f1_samples"}[kind]
    r = predict_cli(comp, tmp_path, name)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list((tmp_path / "s").glob("*.csv"))) == 1


@pytest.mark.parametrize("kind", ["rotated", "pairs"])
def test_auto_on_regression_and_multilabel_with_batch_size_auto(kind, request, tmp_path):
    """auto.py without --metric, with --batch-size auto: the speed probe measures the resolved batch and
    the task's outputs (it divided by a batch of 0 and drew labels from an empty class list), and its
    experiment predicts."""
    from foldkit.search.auto import run_auto
    comp = request.getfixturevalue(kind)
    cfg = config.resolve({**dirs(comp, tmp_path), **TINY, "batch_size": "auto", "device": "cpu",
                          "portfolio": "test_resnet", "hours": 1.0, "report": False})
    out = run_auto(cfg, log=quiet)
    [name] = out["experiments"]
    assert out["plan"][0]["img_per_s"] > 0
    r = predict_cli(comp, tmp_path, name)
    assert r.returncode == 0, r.stderr[-3000:]


def test_the_held_out_fold_lands_in_the_best_trials_experiment(rotated, tmp_path):
    """On a regression competition the trials and the held-out fold get the same settings (label smoothing
    0 for a number): the held-out fold is the best trial's fold 1, not a new experiment."""
    pytest.importorskip("optuna")
    from foldkit.search.tune import tune
    cfg = config.resolve({**dirs(rotated, tmp_path), **TINY, "n_trials": 1, "tune_folds": "0", "holdout_fold": 1,
                          "pruner": "none", "metric": "rmse"})
    result = tune(cfg, log=quiet)
    best = result["study"].best_trial.user_attrs["experiment"]
    assert result["holdout"] is not None
    assert sorted(p.parent.name for p in (tmp_path / "m").glob("*/config.json")) == [best]
    assert (tmp_path / "m" / best / "fold1.json").is_file()


def test_a_task_flag_that_differs_from_the_folds_is_one_line(digits150, tmp_path):
    """--task regression on single-label folds was recorded and ignored."""
    r = subprocess.run([sys.executable, str(REPO / "src" / "train.py"), "--folds-dir", str(digits150 / "folds"),
                        "--input-dir", str(digits150 / "in"), "--models-dir", str(tmp_path / "m"),
                        "--task", "regression", "--model", "test_resnet", "--epochs", "1"],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stderr.startswith("error: --task regression: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").glob("*/config.json"))


def test_given_is_each_configs_own():
    """The names a user set belong to one Config, not to the class."""
    assert "given" not in vars(config.Config)
    a, b = config.resolve({"lr": 0.1}), config.resolve({"epochs": 3})
    assert a.given == {"lr"} and b.given == {"epochs"} and config.Config().given == frozenset()
