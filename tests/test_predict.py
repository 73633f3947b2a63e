"""predict.py: fold ensemble -> validated submission, reports, one image; offline."""
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO
from foldkit.experiment import Experiment
from foldkit.predict.inference import EnsembleError, combine, load_members
from foldkit.predict.submission import SubmissionError, build, choose_mode, unused_path, validate

FAST = ["--model", "test_resnet", "--img-size", "32", "--crop-pct", "1.0", "--no-hflip", "--epochs", "1",
        "--no-pretrained", "--batch-size", "32", "--no-progress", "--workers", "0"]


def run(script, *args, env=None):
    r = subprocess.run([sys.executable, str(REPO / "src" / script), *args], capture_output=True, text=True,
                       env=env, timeout=600)
    return r


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The demo competition, 2 folds over 300 rows, both trained one epoch."""
    from foldkit.data.demo import build_demo
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


@pytest.mark.parametrize("metric,mode", [("auc", "probs"), ("logloss", "probs"), ("accuracy", "label"),
                                         ("f1", "label"), ("qwk", "label")])
def test_the_metric_decides_labels_or_probabilities_whatever_the_sample_holds(metric, mode):
    from foldkit.predict.submission import decide_mode
    zeros = pd.DataFrame({"id": ["a", "b"], "label": ["0", "0"]})            # Histopathologic-style sample
    halves = pd.DataFrame({"id": ["a", "b"], "label": ["0.5", "0.5"]})
    for sample in (zeros, halves):
        got, why = decide_mode(sample, [0, 1], "auto", metric)
        assert got == mode and metric in why
    sub = build(["a", "b"], np.array([[0.9, 0.1], [0.2, 0.8]]), [0, 1], zeros, choose_mode(zeros, [0, 1], "auto", metric))
    assert sub["label"].tolist() == ([0.1, 0.8] if mode == "probs" else [0, 1])
    # multi-class AUC cannot fit one column: one clear line, not a column of labels scored as AUC 0.5
    with pytest.raises(SubmissionError, match="scored on probabilities.*3 classes.*--submission-mode label"):
        decide_mode(pd.DataFrame({"id": ["a"], "label": ["0"]}), CLASSES, "auto", "auc")


def test_probs_mode_with_columns_that_are_not_the_classes_is_one_error():
    sample = pd.DataFrame({"id": ["a", "b", "c"], "cat": "0", "dog": "0", "fox": "0"})
    with pytest.raises(SubmissionError, match=r"value columns of sample_submission.csv \['cat', 'dog', 'fox'\] "
                                              r"are not the classes \[0, 1, 2\]"):
        build(["a", "b", "c"], PROBS, CLASSES, sample, "probs")


def test_a_solution_label_that_is_not_a_class_is_one_error(tmp_path):
    from types import SimpleNamespace

    from foldkit.predict.predicting import labelled_test
    (tmp_path / "solution.csv").write_text("id,label\na,1\nb,7\n")
    comp = SimpleNamespace(root=tmp_path, test=pd.DataFrame({"id": ["a", "b"], "path": ["a.png", "b.png"]}))
    with pytest.raises(SubmissionError, match=r"solution.csv: 1 label\(s\) are not among the classes \[0, 1, 2\], "
                                              r"first: id b label '7'"):
        labelled_test(comp, CLASSES)
    (tmp_path / "solution.csv").write_text("id,label\na,1\nb,2\n")
    keep, y = labelled_test(comp, CLASSES)
    assert keep.tolist() == [True, True] and y.tolist() == [1, 2]


def test_kaggle_cli_timing_out_is_one_error(tmp_path, monkeypatch):
    from foldkit.predict import submission
    fake = tmp_path / "kaggle"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setenv("KAGGLE_USERNAME", "u")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    monkeypatch.setattr(submission, "KAGGLE_TIMEOUT_S", 0.5)
    with pytest.raises(SubmissionError, match="did not finish the upload in 0.5 s.*upload it later with: kaggle"):
        submission.kaggle_submit("digit-recognizer", tmp_path / "s.csv", "cv")


def test_upload_command_is_shell_quoted(tmp_path):
    import shlex

    from foldkit.predict.submission import kaggle_command, upload_line
    path = tmp_path / "it's $HOME" / "a+b_cv0.9.csv"
    msg = 'a+b CV accuracy 0.9 "best"'
    line = upload_line("digit-recognizer", path, msg)
    assert shlex.split(line) == kaggle_command("digit-recognizer", path, msg)


def test_a_120_class_submission_is_built_at_once_without_a_pandas_warning():
    import warnings
    classes = [f"breed{i:03d}" for i in range(120)]
    sample = pd.DataFrame({"id": ["a", "b"], **{c: "0" for c in classes[::-1]}})   # columns in another order
    p = np.random.default_rng(0).dirichlet(np.ones(120), size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sub = build(["b", "a"], p, classes, sample)
    assert list(sub.columns) == list(sample.columns) and np.allclose(sub[classes].to_numpy(), p[::-1])
    validate(sub, sample, classes, "probs")


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
    # the reports are written (by report/, handed to predict) before the upload line is printed
    assert r.stdout.index("report: ") < r.stdout.index("upload with: ")
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
    import foldkit.data.images as ds_mod   # where prepare_image decodes
    from foldkit.data.reading import read_competition
    from foldkit.runtime.device import pick_device
    from foldkit.experiment import find_experiments
    from foldkit.predict.inference import predict_ensemble
    from foldkit.predict.predicting import make_sources
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
    from foldkit.predict.submission import kaggle_submit
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


def test_auc_competition_with_a_sample_of_zeros_submits_the_probabilities_it_scored(tmp_path, digits_32, capsys):
    """Laid out like Histopathologic Cancer Detection: 0/1 labels, a sample of zeros, --metric auc.
    The uploaded column holds P(1), so the file scores the test AUC predict.py prints."""
    import predict
    import train
    from sklearn.metrics import roc_auc_score
    x, y = digits_32
    y = (y >= 5).astype(int)
    comp = tmp_path / "input"
    comp.mkdir()
    for name, arr in (("x_train", x[:200]), ("y_train", y[:200]), ("x_test", x[200:240]), ("y_test", y[200:240])):
        np.save(comp / f"{name}.npy", arr)
    pd.DataFrame({"id": [str(i) for i in range(40)], "label": 0}).to_csv(comp / "sample_submission.csv", index=False)
    paths = ["--input-dir", str(comp), "--folds-dir", str(tmp_path / "folds"), "--models-dir", str(tmp_path / "models")]
    from foldkit import config
    from foldkit.folds.file import make_folds
    make_folds(config.resolve(input_dir=str(comp), folds_dir=str(tmp_path / "folds"), n_folds=2), log=lambda *a: None)
    train.main([*paths, *FAST, "--fold", "0", "--metric", "auc", "--experiment", "auc"])   # one fold is enough
    capsys.readouterr()
    predict.main([*paths, "--submissions-dir", str(tmp_path / "subs"), "--no-report"])
    out = capsys.readouterr().out
    (path,) = (tmp_path / "subs").glob("auc_cv*.csv")
    sub = pd.read_csv(path)
    assert list(sub.columns) == ["id", "label"] and sub["label"].between(0, 1).all() and sub["label"].nunique() > 10
    assert "submission mode: probs (the metric auc is scored on probabilities" in out
    printed = float(re.search(r"test auc: ([0-9.]+)", out).group(1))
    assert roc_auc_score(y[200:240], sub["label"]) == pytest.approx(printed, abs=2e-3)


def test_report_of_a_real_run_reads_in_a_browser(trained, tmp_path):
    """report.html of the tiny demo run, opened in headless Chromium: every image loads, the CV headline
    is on the first screen, the submission is told in words, no JSON or internal key is visible."""
    from browser import RAW, render

    root, paths = trained
    page = root / "reports" / "tiny" / "report.html"
    if not page.is_file() or "headline" not in page.read_text():
        r = run("predict.py", *paths, "--no-progress")
        assert r.returncode == 0, r.stdout + r.stderr
    seen = render(page, tmp_path)
    assert seen["images"] >= 4 and seen["broken"] == []
    assert seen["headline"].startswith("CV accuracy ") and seen["headline_bottom"] < seen["height"]
    first = seen["text"].split("Training curves")[0]
    assert "Submission file " in first and "made from the fold models of tiny" in first
    assert "Test accuracy on the labelled test images" in first
    assert [raw for raw in RAW if raw in seen["text_without_files"]] == []
