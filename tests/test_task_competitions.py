"""Multi-label and regression competitions end to end (issue 16): make_folds.py, train.py --fold all,
predict.py, export.py --onnx and the bundle's predict_offline.py (ONNX and torch runners), and
predict.py --image, run as a user runs them on two small real competitions (tests/task_data.py):
two real digits side by side with the set of digits as space-separated tags, and real digits rotated
by a known angle. Every path must write the same file, in the sample's shape, validated."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import task_data
from conftest import REPO
from foldkit.predict import blend
from foldkit.predict import submission
from foldkit.predict.calibrate import steps_for
from foldkit.errors import ConfigError
from foldkit.predict.submission import SubmissionError

TRAIN = ["--model", "test_resnet", "--img-size", "32", "--epochs", "12", "--lr", "1e-2", "--batch-size", "16",
         "--no-pretrained", "--no-hflip"]


def kit(script, *args, cwd=None, ok=True):
    r = subprocess.run([sys.executable, str(script if "/" in str(script) else REPO / "src" / script), *args],
                       capture_output=True, text=True, timeout=600, cwd=cwd)
    if ok:
        assert r.returncode == 0, r.stderr[-3000:]
        assert "Traceback" not in r.stderr and "Warning" not in r.stderr, r.stderr[-3000:]
    return r


def run_competition(root, build):
    """The three commands, then export --onnx and the bundle on both runners. Returns what each wrote."""
    build(root / "in")
    dirs = ["--folds-dir", str(root / "folds"), "--models-dir", str(root / "models"),
            "--submissions-dir", str(root / "subs"), "--reports-dir", str(root / "reports")]
    folds = kit("make_folds.py", "--input-dir", str(root / "in"), "--n-folds", "3", *dirs).stdout
    train = kit("train.py", "--fold", "all", *TRAIN, *dirs).stdout
    pred = kit("predict.py", *dirs).stdout
    [sub] = sorted((root / "subs").glob("*.csv"))
    kit("export.py", *dirs, "--onnx", "--out", str(root / "bundle"))
    offline = {r: kit(root / "bundle" / "predict_offline.py", "--input-dir", str(root / "in"), "--runner", r,
                      "--out", str(root / f"offline_{r}.csv")) for r in ("onnx", "torch")}
    read = lambda p: pd.read_csv(p, dtype={"id": str}, keep_default_na=False)
    return {"folds": folds, "train": train, "predict": pred, "sub": read(sub), "sub_path": sub,
            "offline": {r: read(root / f"offline_{r}.csv") for r in offline}, "dirs": dirs,
            "sample": read(root / "in" / "sample_submission.csv"), "solution": read(root / "in" / "solution.csv")}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return run_competition(tmp_path_factory.mktemp("pairs"), task_data.digit_pairs)


@pytest.fixture(scope="module")
def rotated(tmp_path_factory):
    return run_competition(tmp_path_factory.mktemp("rotated"), task_data.rotated_digits)


def test_multilabel_competition_end_to_end(pairs, tmp_path):
    assert "multi-label, 10 labels" in pairs["folds"] and "MultilabelStratifiedKFold" in pairs["folds"]
    out = pairs["predict"]
    assert "label thresholds" in out and "submission mode: label (the predicted tags in tags)" in out
    # the submission: the sample's columns and ids, every tag a label, tags joined as the sample joins them
    sub, sample = pairs["sub"], pairs["sample"]
    assert list(sub.columns) == list(sample.columns) and sub["id"].tolist() == sample["id"].tolist()
    tags = {t for v in sub["tags"] for t in v.split(" ") if t}
    assert tags and tags <= {str(d) for d in range(10)}
    # the test score printed is the metric of the file written (scored here with sklearn)
    from sklearn.metrics import fbeta_score
    from sklearn.preprocessing import MultiLabelBinarizer
    mlb = MultiLabelBinarizer(classes=[str(d) for d in range(10)])
    truth = mlb.fit_transform([v.split() for v in pairs["solution"].set_index("id").loc[sub["id"], "tags"]])
    score = fbeta_score(truth, mlb.transform([v.split() for v in sub["tags"]]), beta=1, average="samples",
                        zero_division=0)
    assert f"test f1_samples: {score:.5f}" in out
    # the per-label thresholds fitted on OOF beat the plain 0.5 cut, in nested CV
    before, after = [float(x) for x in out.split("nested ")[1].split("\n")[0].split(" -> ")]
    assert after > before
    # the report: per-label figures and the thresholds chosen
    report = pairs["sub_path"].parents[1] / "reports" / pairs["sub_path"].stem.split("_cv")[0]
    per_label = pd.read_csv(report / "per_label.csv")
    assert {"precision", "recall"} <= set(per_label.columns) and (report / "report.html").is_file()
    # every other path writes the same file
    for runner, other in pairs["offline"].items():
        assert other.equals(sub), runner
    row = sub.iloc[0]
    r = kit("predict.py", *pairs["dirs"], "--image", str(pairs["sub_path"].parents[1] / "in" / "test" / f"{row['id']}.png"))
    assert f"tags: {row['tags'] or '(none)'}" in r.stdout


def test_regression_competition_end_to_end(rotated):
    assert "regression target" in rotated["folds"] and "quantile bins" in rotated["folds"]
    out, sub, sample = rotated["predict"], rotated["sub"], rotated["sample"]
    assert "submission mode: label (the predicted number in angle)" in out and "clip" in out
    assert list(sub.columns) == list(sample.columns) and sub["id"].tolist() == sample["id"].tolist()
    truth = rotated["solution"].set_index("id").loc[sub["id"], "angle"].to_numpy(dtype=float)
    pred = sub["angle"].to_numpy(dtype=float)
    rmse = float(np.sqrt(np.mean((pred - truth) ** 2)))
    assert f"test rmse: {rmse:.5f}" in out
    # the kit beats predicting the training mean, in CV and on the test images
    train = pd.read_csv(sub.attrs.get("train", rotated["sub_path"].parents[1] / "in" / "train.csv"))
    cv = float(out.split("CV rmse ")[1].split(" ")[0])
    assert cv < 0.7 * train["angle"].std(ddof=0)
    assert rmse < 0.7 * float(np.sqrt(np.mean((truth - train["angle"].mean()) ** 2)))
    assert pred.min() >= train["angle"].min() - 1e-6 and pred.max() <= train["angle"].max() + 1e-6   # clipped
    report = rotated["sub_path"].parents[1] / "reports" / rotated["sub_path"].stem.split("_cv")[0]
    assert (report / "scatter.png").is_file() and (report / "residuals.csv").is_file()
    for runner, other in rotated["offline"].items():
        assert np.allclose(other["angle"].to_numpy(float), pred, atol=1e-4), runner
    # the bundle reads the competition as make_folds recorded it: whole-degree targets (an ambiguous integer
    # column, a question at make_folds) do not stop it
    root = rotated["sub_path"].parents[1]
    shutil.copytree(root / "in", root / "in_int")
    train_int = pd.read_csv(root / "in_int" / "train.csv")
    train_int.assign(angle=train_int["angle"].round().astype(int)).to_csv(root / "in_int" / "train.csv", index=False)
    kit(root / "bundle" / "predict_offline.py", "--input-dir", str(root / "in_int"), "--out", str(root / "int.csv"))
    assert np.allclose(pd.read_csv(root / "int.csv")["angle"].to_numpy(float), pred, atol=1e-4)
    row = sub.iloc[0]
    r = kit("predict.py", *rotated["dirs"], "--image",
            str(rotated["sub_path"].parents[1] / "in" / "test" / f"{row['id']}.png"))
    assert f"predicted value: {float(row['angle']):.6g}"[:-2] in r.stdout


def test_regression_blend_fitted_on_oof_and_leaderboard(rotated):
    """Two experiments blended with weights fitted for RMSE on their OOF (nested CV), its own report page;
    the leaderboard ranks regression experiments lowest RMSE first."""
    first = rotated["sub_path"].stem.split("_cv")[0]
    kit("train.py", "--fold", "all", *TRAIN[:5], "4", *TRAIN[6:], "--experiment", "short", *rotated["dirs"])
    out = kit("predict.py", *rotated["dirs"], "--experiments", f"{first},short", "--blend", "optimize").stdout
    assert "optimize blend of 2 experiments" in out and "test rmse:" in out
    root = rotated["sub_path"].parents[1]
    page = root / "reports" / f"{first}+short" / "report.html"
    assert page.is_file()
    board = kit("leaderboard.py", "--models-dir", str(root / "models")).stdout
    lines = [ln for ln in board.splitlines() if first in ln or " short " in f" {ln} "]
    cv = {n: float(out.split(f"{n}: CV rmse ")[1].split(" ")[0]) for n in (first, "short")}
    best = min(cv, key=cv.get)
    assert best in lines[0]


def test_settings_that_would_write_a_wrong_file_are_refused_in_one_line(rotated, pairs):
    r = kit("predict.py", *pairs["dirs"], "--ensemble", "geometric", ok=False)
    assert r.returncode == 2 and r.stderr.startswith("error: --ensemble geometric averages softmax probabilities")
    r = kit("export.py", *rotated["dirs"], "--clip", "on", "--out", str(rotated["sub_path"].parents[1] / "b2"),
            "--thresholds", "on", ok=False)       # export takes predict's plan flags, --clip included
    assert r.returncode == 2 and "--thresholds on is for classification" in r.stderr
    r = kit("predict.py", *rotated["dirs"], "--thresholds", "on", ok=False)
    assert r.returncode == 2 and "--thresholds on is for classification" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- the pieces, without training

def test_submission_mode_from_sample_metric_and_task():
    labels = ["a", "b", "c"]
    tags = pd.DataFrame({"id": ["1", "2"], "tags": ["a b", "c"]})
    probs = pd.DataFrame({"id": ["1", "2"], "a": 0.0, "b": 0.0, "c": 0.0})
    assert submission.decide_mode(tags, labels, "auto", "f2_samples", "multilabel")[0] == "label"
    assert submission.decide_mode(probs, labels, "auto", "map", "multilabel")[0] == "probs"
    with pytest.raises(SubmissionError, match="scored on probabilities"):
        submission.decide_mode(tags, labels, "auto", "map", "multilabel")
    num = pd.DataFrame({"id": ["1"], "age": [0]})
    assert submission.decide_mode(num, [], "auto", "rmse", "regression")[0] == "label"
    with pytest.raises(SubmissionError, match="is for classification"):
        submission.decide_mode(num, [], "probs", "rmse", "regression")
    assert submission.tags_separator(pd.DataFrame({"id": ["1"], "t": ["a|b"]}), " ") == "|"
    assert submission.tags_separator(pd.DataFrame({"id": ["1"], "t": ["0"]}), ";") == ";"


def test_multilabel_submission_built_and_validated():
    labels = ["a", "b", "c"]
    p = np.array([[0.9, 0.6, 0.1], [0.2, 0.1, 0.3]])
    sample = pd.DataFrame({"id": ["y", "x"], "tags": ["a", "a"]})
    sub = submission.build(["x", "y"], p, labels, sample, "label", task="multilabel", sep=" ")
    assert sub["tags"].tolist() == ["", "a b"]        # the sample's order; no tag: empty
    submission.validate(sub, sample, labels, "label", "multilabel", " ")
    with pytest.raises(SubmissionError, match="tags not among the labels"):
        submission.validate(sub.assign(tags=["d", "a"]), sample, labels, "label", "multilabel", " ")
    psample = pd.DataFrame({"id": ["x", "y"], "c": 0.0, "a": 0.0, "b": 0.0})
    sub = submission.build(["x", "y"], p, labels, psample, "probs", task="multilabel")
    assert np.allclose(sub[["a", "b", "c"]].to_numpy(), p)           # independent, not renormalised
    submission.validate(sub, psample, labels, "probs", "multilabel")
    with pytest.raises(SubmissionError, match="not finite numbers"):
        submission.validate(pd.DataFrame({"id": ["x"], "v": ["nan"]}), None, [], "label", "regression")


def test_plan_records_the_task_and_refuses_softmax_arithmetic():
    plan = blend.Plan("mean", np.array([1.0]), [("clip", np.array([0.0, 10.0]))], experiments=["e"],
                      members=[("e", 0), ("e", 1)], task="regression")
    back = blend.Plan.from_json(json.loads(json.dumps(plan.to_json())))
    preds = [np.array([[3.0], [12.0]]), np.array([[5.0], [-4.0]])]
    assert back.task == "regression" and np.allclose(back.apply(preds), [[4.0], [4.0]])
    with pytest.raises(ConfigError, match="--ensemble geometric"):
        blend.Plan.from_json({**plan.to_json(), "ensemble": "geometric"})
    assert steps_for("rmse", task="regression") == ("clip",)
    assert steps_for("rmse", task="regression", clip="off") == ()
    with pytest.raises(ConfigError, match="--clip on"):
        steps_for("accuracy", clip="on")


def test_speed_estimate_never_divides_timing_noise():
    from foldkit.export.estimate import _speed
    assert _speed(8, 0.30, 40, 0.25) == {"img_per_s": 160.0, "fixed_seconds": 0.0}     # was 3.2e10 img/s
    s = _speed(8, 1.0, 256, 4.1)
    assert abs(s["img_per_s"] - 80.0) < 1e-9 and abs(s["fixed_seconds"] - 0.9) < 1e-9


def test_test_labels_read_from_multi_hot_and_one_hot_solution_columns(tmp_path):
    """A solution.csv with one 0/1 column per label (the multi-hot layout of the training CSV) gives the
    tags set to 1, never the first column's 0/1 read as a tag (the printed test score was wrong)."""
    from types import SimpleNamespace
    from foldkit.predict.predicting import labelled_test
    pd.DataFrame({"id": ["a", "b", "c"], "cat": [1, 0, 0], "dog": [1, 0, 1], "owl": [0, 0, 0]}).to_csv(
        tmp_path / "solution.csv", index=False)
    comp = SimpleNamespace(root=str(tmp_path), test=pd.DataFrame({"id": ["c", "a", "b"]}))
    keep, y = labelled_test(comp, ["cat", "dog", "owl"], "multilabel", " ")
    assert keep.all() and y.tolist() == [[0, 1, 0], [1, 1, 0], [0, 0, 0]]
    pd.DataFrame({"id": ["a", "b", "c"], "cat": [0, 1, 0], "dog": [1, 0, 0], "owl": [0, 0, 1]}).to_csv(
        tmp_path / "solution.csv", index=False)
    keep, y = labelled_test(comp, ["cat", "dog", "owl"], "single")
    assert y.tolist() == [2, 1, 0]
