"""predict.py: fold ensemble -> validated submission, reports, one image; offline."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO
from foldkit.experiment import Experiment
from foldkit.inference import EnsembleError, combine, load_members
from foldkit.submission import SubmissionError, build, choose_mode, unused_path, validate

FAST = ["--model", "test_resnet", "--img-size", "32", "--crop-pct", "1.0", "--no-hflip", "--epochs", "1",
        "--batch-size", "32", "--no-progress", "--workers", "0"]


def run(script, *args, env=None):
    r = subprocess.run([sys.executable, str(REPO / "src" / script), *args], capture_output=True, text=True,
                       env=env, timeout=600)
    return r


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The demo competition, 2 folds over 300 rows, both trained one epoch."""
    from foldkit.demo import build_demo
    root = tmp_path_factory.mktemp("pred")
    build_demo(root / "input")
    paths = ["--input-dir", str(root / "input"), "--folds-dir", str(root / "folds"),
             "--models-dir", str(root / "models")]
    assert run("make_folds.py", *paths, "--limit", "300", "--n-folds", "2").returncode == 0
    r = run("train.py", *paths, *FAST, "--fold", "all", "--experiment", "tiny")
    assert r.returncode == 0, r.stderr
    return root, paths + ["--submissions-dir", str(root / "subs"), "--reports-dir", str(root / "reports")]


# ---------------------------------------------------------------- submission unit tests

CLASSES = [0, 1, 2]
PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])


def test_label_submission_follows_sample_order_and_types():
    sample = pd.DataFrame({"ImageId": ["3", "1", "2"], "Label": ["0", "0", "0"]})
    sub = build(["1", "2", "3"], PROBS, CLASSES, sample)
    assert list(sub.columns) == ["ImageId", "Label"]
    assert sub["ImageId"].tolist() == ["3", "1", "2"] and sub["Label"].tolist() == [2, 0, 1]
    validate(sub, sample, CLASSES, "label")


def test_binary_probability_mode_uses_positive_class():
    sample = pd.DataFrame({"id": ["1", "2"], "label": ["0.5", "0.5"]})       # Dogs vs Cats Redux style
    classes = ["cat", "dog"]
    assert choose_mode(sample, classes) == "probs"
    sub = build(["2", "1"], np.array([[0.9, 0.1], [0.3, 0.7]]), classes, sample)
    assert sub["label"].tolist() == [0.7, 0.1]                                # P(dog), sample order
    validate(sub, sample, classes, "probs")


def test_per_class_probability_columns():
    sample = pd.DataFrame({"id": ["a", "b", "c"], "0": "0", "1": "0", "2": "0"})
    assert choose_mode(sample, CLASSES) == "probs"
    sub = build(["a", "b", "c"], PROBS, CLASSES, sample)
    assert np.allclose(sub[["0", "1", "2"]].to_numpy(), PROBS)
    validate(sub, sample, CLASSES, "probs")


@pytest.mark.parametrize("case,msg", [
    ("order", "ids differ from the sample's"),
    ("missing_row", "rows but the sample has"),
    ("columns", "columns"),
    ("nan", "empty values for ids \\['b'\\]"),
    ("range", "outside \\[0, 1\\] for ids \\['a'\\]"),
    ("sum", "do not sum to 1 for ids \\['c'\\]"),
    ("dup", "duplicate ids"),
])
def test_validation_catches_each_mismatch(case, msg):
    sample = pd.DataFrame({"id": ["a", "b", "c"], "0": "0", "1": "0", "2": "0"})
    sub = build(["a", "b", "c"], PROBS, CLASSES, sample)
    if case == "order":
        sub = sub.iloc[[1, 0, 2]].reset_index(drop=True)
    elif case == "missing_row":
        sub = sub.iloc[:2]
    elif case == "columns":
        sub = sub.rename(columns={"2": "two"})
    elif case == "nan":
        sub.loc[1, "1"] = np.nan
    elif case == "range":
        sub.loc[0, "0"] = 1.2
    elif case == "sum":
        sub.loc[2, "2"] = 0.9
    elif case == "dup":
        sub.loc[2, "id"] = "a"
        sample = None
    with pytest.raises(SubmissionError, match=msg):
        validate(sub, sample, CLASSES, "probs")


def test_label_outside_classes_and_missing_prediction():
    sample = pd.DataFrame({"id": ["a", "b"], "label": ["0", "0"]})
    sub = pd.DataFrame({"id": ["a", "b"], "label": [1, 7]})
    with pytest.raises(SubmissionError, match="not among the classes for ids \\['b'\\]"):
        validate(sub, sample, CLASSES, "label")
    with pytest.raises(SubmissionError, match="have no prediction, first: \\['b'\\]"):
        build(["a"], PROBS[:1], CLASSES, sample)


def test_existing_submission_is_never_overwritten(tmp_path):
    (tmp_path / "exp_cv0.9.csv").write_text("x")
    assert unused_path(tmp_path, "exp_cv0.9").name == "exp_cv0.9_2.csv"


def test_geometric_mean_is_normalised_and_resists_one_overconfident_member():
    a = np.array([[0.9, 0.1]])
    b = np.array([[1e-9, 1 - 1e-9]])
    g = combine([a, b], "geometric")
    assert np.allclose(g.sum(1), 1) and np.allclose(combine([a, b], "mean"), [[0.45, 0.55]])
    assert g[0, 1] > 0.99


# ---------------------------------------------------------------- end to end

BLOCK_NET = """
import socket
_connect = socket.socket.connect
def _blocked(*a, **k):
    raise OSError("network blocked by the test")
def _connect_local_only(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _blocked()
    return _connect(self, address)
socket.socket.connect = _connect_local_only
socket.create_connection = _blocked
socket.getaddrinfo = _blocked
"""


def test_predict_offline_writes_validated_submission_and_report(trained, tmp_path):
    root, paths = trained
    (tmp_path / "sitecustomize.py").write_text(BLOCK_NET)
    import os
    env = dict(os.environ, PYTHONPATH=str(tmp_path), HF_HUB_OFFLINE="0")
    r = run("predict.py", *paths, "--no-progress", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    subs = sorted((root / "subs").glob("tiny_cv*.csv"))
    assert len(subs) == 1
    sub = pd.read_csv(subs[0], dtype={"id": str})
    sample = pd.read_csv(root / "input" / "sample_submission.csv", dtype={"id": str})
    assert list(sub.columns) == list(sample.columns) and (sub["id"] == sample["id"]).all()
    assert set(sub["label"]) <= set(range(10))
    # the CV score in the name and the report equals the accuracy of the OOF files
    oof = pd.concat([pd.read_csv(root / "models" / "tiny" / f"oof_fold{k}.csv") for k in (0, 1)])
    acc = (oof["label"] == oof["pred"]).mean()
    scores = json.loads((root / "reports" / "tiny" / "cv_scores.json").read_text())
    assert scores["cv"] == pytest.approx(acc, abs=1e-9) and f"_cv{acc:.5f}" in subs[0].name
    # test score from the demo's solution.csv, recomputed here from the submission
    sol = pd.read_csv(root / "input" / "solution.csv", dtype={"id": str})
    test_acc = (sub["label"].to_numpy() == sol["label"].to_numpy()).mean()
    assert f"test accuracy: {test_acc:.5f}" in r.stdout
    assert scores["test_score"] == pytest.approx(test_acc)
    for f in ("report.html", "confusion.png", "confusion.csv", "per_class.csv", "worst_errors.png", "oof.csv"):
        assert (root / "reports" / "tiny" / f).is_file(), f
    assert "kaggle competitions submit" in r.stdout
    # a second run never overwrites the first submission
    r2 = run("predict.py", *paths, "--no-progress", "--no-report")
    assert r2.returncode == 0, r2.stderr
    assert len(list((root / "subs").glob("tiny_cv*.csv"))) == 2


def test_wrong_checkpoint_is_refused(trained, tmp_path):
    root, paths = trained
    exp = root / "models" / "tiny"
    ckpt = torch.load(exp / "fold0.pt", weights_only=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    ckpt["classes"] = list("abcdefghij")
    torch.save(ckpt, other / "fold0.pt")
    (other / "fold0.json").write_text("{}")
    with pytest.raises(EnsembleError, match="different class lists"):
        load_members([Experiment(exp), Experiment(other)])
    with pytest.raises(EnsembleError, match="wrong checkpoint for this competition"):
        load_members([Experiment(other)], expected_classes=list(range(10)))


def test_each_image_is_decoded_once(trained, monkeypatch):
    root, _ = trained
    import foldkit.images as ds_mod   # where prepare_image decodes
    from foldkit.data import read_competition
    from foldkit.engine import pick_device
    from foldkit.experiment import find_experiments
    from foldkit.inference import predict_ensemble
    from foldkit.predicting import make_sources
    calls = []
    real = ds_mod.decode_image
    monkeypatch.setattr(ds_mod, "decode_image", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    comp = read_competition(root / "input")
    members = load_members(find_experiments(root / "models", ["tiny"]))
    test = comp.test.head(40)
    probs = predict_ensemble(members, make_sources(comp, test, "test", members), tta=["none", "hflip", "vflip"],
                             device=pick_device("cpu"), progress=False)
    assert probs.shape == (40, 10) and len(members) == 2
    assert len(calls) == 40 and len(set(calls)) == 40


def test_one_image_top_k_and_offline_url(trained):
    root, paths = trained
    img = root / "input" / "test" / sorted(p.name for p in (root / "input" / "test").iterdir())[0]
    r = run("predict.py", *paths, "--image", str(img), "--topk", "3")
    assert r.returncode == 0, r.stderr
    lines = [l.split() for l in r.stdout.strip().splitlines()[1:]]
    assert len(lines) == 3
    p = [float(l[1]) for l in lines]
    assert p == sorted(p, reverse=True) and 0 < sum(p) <= 1.0001
    r = run("predict.py", *paths, "--image", "http://127.0.0.1:9/none.png")
    assert r.returncode != 0 and "cannot fetch" in r.stderr and "Traceback" not in r.stderr


def test_submit_says_what_is_missing(tmp_path, monkeypatch):
    from foldkit.submission import kaggle_submit
    monkeypatch.setenv("PATH", str(tmp_path))           # no kaggle CLI on PATH
    with pytest.raises(SubmissionError, match="kaggle CLI is not installed"):
        kaggle_submit("digit-recognizer", tmp_path / "s.csv", "cv")
    fake = tmp_path / "kaggle"
    fake.write_text("#!/bin/sh\necho uploaded\n")
    fake.chmod(0o755)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "nokaggle"))
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    with pytest.raises(SubmissionError, match="no credentials"):
        kaggle_submit("digit-recognizer", tmp_path / "s.csv", "cv")
    monkeypatch.setenv("KAGGLE_USERNAME", "u")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    assert kaggle_submit("digit-recognizer", tmp_path / "s.csv", "cv") == "uploaded"
