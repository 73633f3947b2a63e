"""The README's first command, end to end, on scikit-learn's real digits."""
import hashlib
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO


def tree_hashes(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_demo_builds_competition_and_runs_pipeline(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "src" / "demo.py"), "--root", str(tmp_path)],
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout + r.stderr
    comp = tmp_path / "input" / "demo"
    train = pd.read_csv(comp / "train.csv", dtype={"id": str})
    sample = pd.read_csv(comp / "sample_submission.csv", dtype={"id": str})
    solution = pd.read_csv(comp / "solution.csv", dtype={"id": str})
    assert len(train) + len(sample) == 1797 and abs(len(sample) / 1797 - 0.2) < 0.01
    assert set(train["id"]).isdisjoint(sample["id"]) and (sample["id"] == solution["id"]).all()
    assert sorted(train["label"].unique()) == list(range(10))
    assert len(list((comp / "train").glob("*.png"))) == len(train)
    assert len(list((comp / "test").glob("*.png"))) == len(sample)
    folds = pd.read_csv(tmp_path / "folds" / "demo" / "train_folds.csv", dtype={"id": str})
    assert len(folds) == len(train) and sorted(folds["fold"].unique()) == [0, 1, 2, 3, 4]
    # the user's own input/ is untouched: the demo writes only its own subfolders
    assert sorted(p.name for p in (tmp_path / "input").iterdir()) == ["demo"]
    for top in ("folds", "models", "cache", "submissions", "reports"):
        assert sorted(p.name for p in (tmp_path / top).iterdir()) == ["demo"], top
    # trained 5 folds, wrote a validated submission and the report, printed the test accuracy
    exp = tmp_path / "models" / "demo" / "digits-test_resnet"
    assert sorted(p.name for p in exp.glob("fold?.pt")) == [f"fold{k}.pt" for k in range(5)]
    [sub] = list((tmp_path / "submissions" / "demo").glob("digits-test_resnet_cv*.csv"))
    s = pd.read_csv(sub, dtype={"id": str})
    assert (s["id"] == sample["id"]).all() and list(s.columns) == ["id", "label"]
    test_acc = (s["label"].to_numpy() == solution["label"].to_numpy()).mean()
    assert f"demo test accuracy (fold ensemble, 360 held-out images): {test_acc:.4f}" in r.stdout
    assert test_acc > 0.97                      # the kit learns the digits (the bar, 0.99, is in the notes)
    assert (tmp_path / "reports" / "demo" / "digits-test_resnet" / "report.html").is_file()
    before = tree_hashes(comp) | {"folds/" + k: v for k, v in tree_hashes(tmp_path / "folds").items()}
    r2 = subprocess.run([sys.executable, str(REPO / "src" / "demo.py"), "--root", str(tmp_path)],
                        capture_output=True, text=True, timeout=1200)
    assert r2.returncode == 0, r2.stderr
    assert "already finished" in r2.stdout      # finished folds are not trained again
    after = tree_hashes(comp) | {"folds/" + k: v for k, v in tree_hashes(tmp_path / "folds").items()}
    assert before == after   # re-running gives byte-identical files
