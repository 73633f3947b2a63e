"""auto.py: a time-budgeted portfolio, trained on every fold and blended through predict's path."""
import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def comp(digits150):
    return digits150


def auto(comp, tmp_path, *argv):
    return subprocess.run(
        [sys.executable, str(REPO / "src" / "auto.py"), "--input-dir", str(comp / "in"), "--folds-dir",
         str(comp / "folds"), "--models-dir", str(tmp_path / "m"), "--submissions-dir", str(tmp_path / "s"),
         "--reports-dir", str(tmp_path / "r"), "--no-pretrained", "--img-size", "32", "--crop-pct", "1.0", "--no-hflip",
         "--batch-size", "32", "--no-progress", "--workers", "0", "--warmup-epochs", "0", *argv],
        capture_output=True, text=True, env=ENV, timeout=900)


def test_a_budget_too_small_for_one_model_is_one_line(comp, tmp_path):
    r = auto(comp, tmp_path, "--portfolio", "test_resnet", "--hours", "0.00001")
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("error: --hours 1e-05 is too small for one model: test_resnet (the fastest) "
                               "needs about"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def test_auto_trains_the_portfolio_on_every_fold_and_writes_the_blended_submission(comp, tmp_path):
    r = auto(comp, tmp_path, "--portfolio", "test_resnet,test_efficientnet", "--hours", "1", "--epochs", "1")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "portfolio: test_resnet (1 epochs" in r.stdout and "test_efficientnet (1 epochs" in r.stdout
    exps = sorted(p.parent for p in (tmp_path / "m").glob("*/config.json"))
    assert len(exps) == 2
    for e in exps:
        assert all((e / f"fold{k}.json").is_file() for k in range(3))
    [sub] = list((tmp_path / "s").glob("*.csv"))
    assert "+" in sub.name                                         # a blend of the two experiments
    sample = pd.read_csv(comp / "in" / "sample_submission.csv")
    got = pd.read_csv(sub)
    assert list(got.columns) == list(sample.columns) and len(got) == len(sample)
    assert "blend hill" in r.stdout and " h of 1 h" in r.stdout


def test_the_plan_gives_up_folds_then_epochs_then_image_size_and_refuses_only_below_one_epoch_of_one_fold(
        comp, monkeypatch):
    """A measured 100 img/s (the probe made deterministic): 1000 rows in 5 folds at 128 px take ~8.7 s an epoch
    of a fold (+5 s per fold); each budget keeps the most that fits, in that order."""
    from foldkit import config
    from foldkit.search import auto as auto_mod
    monkeypatch.setattr(auto_mod, "probe_img_per_s", lambda *a, **k: 100.0)
    cfg = config.resolve({"folds_dir": str(comp / "folds"), "model": "test_resnet", "pretrained": False, "img_size": 128,
                          "crop_pct": 1.0, "epochs": 4, "hours": 1.0})

    def plan(left_s):
        lines = []
        [p] = auto_mod.plan_portfolio({"test_resnet": cfg}, 1000, 5, 10, left_s / (1 - auto_mod.RESERVE), lines.append)
        return (p["folds"], p["epochs"], p["img_size"]), " ".join(lines)
    assert plan(250)[0] == (5, 4, 0)
    got, said = plan(100)
    assert got == (2, 4, 0) and "gave up 3 of 5 folds: its CV is scored on the OOF of fold(s) 0,1 (about 400 of " \
                                "1000 rows) and the submission averages 2 fold model(s)" in said, said
    assert plan(30)[0] == (1, 2, 0)
    got, said = plan(10.5)
    assert got == (1, 1, 96) and "2 of 4 epochs" not in said and "3 of 4 epochs, image size 128 -> 96 px" in said
    assert plan(8)[0] == (1, 1, 64)
    with pytest.raises(auto_mod.AutoError, match=r"needs about 0\.002 h for one epoch of one of 5 folds at 64 px "
                                                 r"here\. .*fewer rows \(about 46\d would fit: make_folds.py --limit 46\d\)$"):
        plan(6)


def test_a_small_deadline_trains_the_folds_that_fit_and_submits(comp, tmp_path, monkeypatch):
    """--hours that leave ~10 s of training at a measured ~2 s an epoch of a fold: 1 fold of 3 fits (all 3
    would take ~21 s with their overhead), is trained and submitted, and the log says what was given up."""
    from foldkit import config
    from foldkit.search import auto as auto_mod
    per_epoch_rows = 150 * 2 / 3 + 150 / 3 / 3
    monkeypatch.setattr(auto_mod, "probe_img_per_s", lambda *a, **k: per_epoch_rows / 2)
    lines = []
    cfg = config.resolve({"input_dir": str(comp / "in"), "folds_dir": str(comp / "folds"),
                          "models_dir": str(tmp_path / "m"), "submissions_dir": str(tmp_path / "s"),
                          "reports_dir": str(tmp_path / "r"), "portfolio": "test_resnet", "pretrained": False,
                          "img_size": 32, "crop_pct": 1.0, "hflip": False, "batch_size": 32, "progress": False, "workers": 0,
                          "warmup_epochs": 0.0, "epochs": 1, "hours": 10 / (1 - auto_mod.RESERVE) / 3600})
    out = auto_mod.run_auto(cfg, log=lines.append)
    text = "\n".join(lines)
    assert "gave up 2 of 3 folds: its CV is scored on the OOF of fold(s) 0 (about 50 of 150 rows)" in text, text
    assert "portfolio: test_resnet (1 epochs, folds 0-0 of 3" in text
    [exp] = out["experiments"]
    assert (tmp_path / "m" / exp / "fold0.json").is_file() and not (tmp_path / "m" / exp / "fold1.json").exists()
    [sub] = list((tmp_path / "s").glob("*.csv"))
    assert len(pd.read_csv(sub)) == len(pd.read_csv(comp / "in" / "sample_submission.csv"))


def test_a_callback_that_stops_the_run_after_a_fold_s_last_epoch_leaves_it_finished(comp, tmp_path):
    """auto's deadline raises from on_epoch: after epoch 1 of 2 the fold stays resumable (fold0_last.pt), after
    its last epoch it is finished (fold0.json, no resume state), not lost."""
    from foldkit import config
    from foldkit.train.builder import build_run
    from foldkit.train.fit import fit_fold_locked

    class Stop(Exception):
        pass

    def stop(fold, row):
        raise Stop(row["epoch"])
    cfg = config.resolve({"input_dir": str(comp / "in"), "folds_dir": str(comp / "folds"),
                          "models_dir": str(tmp_path / "m"), "model": "test_resnet", "pretrained": False, "img_size": 32,
                          "crop_pct": 1.0,
                          "hflip": False, "batch_size": 32, "progress": False, "workers": 0, "warmup_epochs": 0.0,
                          "epochs": 2, "fold": "0"})
    cfg, run = build_run(cfg, log=lambda *_: None)
    for epoch in (1, 2):
        with pytest.raises(Stop, match=str(epoch)):
            fit_fold_locked(cfg, run, 0, log=lambda *_: None, on_epoch=[stop])
        assert run.exp.is_finished(0) == (epoch == 2)
        assert run.exp.last_checkpoint(0).is_file() == (epoch == 1)
    assert len(pd.read_csv(run.exp.log(0))) == 2
