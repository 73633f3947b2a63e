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
    assert "blend optimize" in r.stdout and " h of 1 h" in r.stdout
