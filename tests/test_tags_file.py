"""The file written is the file scored: a tags file gets per-label thresholds fitted on the OOF for the F
metric its tags will get, at least one tag a row, and its own score printed and in its name; a
probability file is scored by a probability metric; a binary one-column file holds the probability of
the class the sample (or --positive-class) names; numbers keep their significant digits; predict.py's
--label-sep joins the tags written. Run with the real CLIs on tiny real competitions (tests/task_data.py)."""
import contextlib
import io
import shutil
from collections import namedtuple

import numpy as np
import pandas as pd
import pytest

import task_data
from conftest import write_png

TRAIN = ["--model", "test_resnet", "--img-size", "32", "--lr", "1e-2", "--batch-size", "16", "--no-pretrained",
         "--no-hflip", "--no-progress", "--workers", "0"]
LABELS = [str(d) for d in range(10)]
Run = namedtuple("Run", "returncode stdout stderr")


def kit(script, *args, ok=True):
    """The command as `python src/<script>` runs it (foldkit.cli.run_script), in this process: one torch
    import for the whole module. Returns its (returncode, stdout, stderr)."""
    from foldkit.cli import run_script
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_script(script.removesuffix(".py"), list(args))
        except SystemExit as e:
            code = e.code or 0
    r = Run(code, out.getvalue(), err.getvalue())
    if ok:
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return r


def dirs(root):
    return ["--folds-dir", str(root / "folds"), "--models-dir", str(root / "models"),
            "--submissions-dir", str(root / "subs"), "--reports-dir", str(root / "reports")]


def newest(root):
    return max((root / "subs").glob("*.csv"), key=lambda p: p.stat().st_mtime_ns)


def read(path):
    return pd.read_csv(path, dtype={"id": str}, keep_default_na=False)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """digit_pairs (one tags column) trained with --metric map, as the issue's user did, and a second
    experiment trained with the default f1_samples; a copy of the competition whose sample asks for one
    probability column per label."""
    root = tmp_path_factory.mktemp("tags")
    task_data.digit_pairs(root / "in", n_train=96, n_test=24)
    kit("make_folds.py", "--input-dir", str(root / "in"), "--n-folds", "2", *dirs(root))
    kit("train.py", "--fold", "all", *TRAIN, "--epochs", "3", "--metric", "map", "--experiment", "map", *dirs(root))
    kit("train.py", "--fold", "all", *TRAIN, "--epochs", "1", "--experiment", "f1", *dirs(root))
    shutil.copytree(root / "in", root / "in_probs")
    sample = read(root / "in" / "sample_submission.csv")
    pd.DataFrame({"id": sample["id"], **{c: 0.1 for c in LABELS}}).to_csv(root / "in_probs" / "sample_submission.csv",
                                                                         index=False)
    return root


def f_samples(truth, sub, beta=1.0):
    from sklearn.metrics import fbeta_score
    from sklearn.preprocessing import MultiLabelBinarizer
    mlb = MultiLabelBinarizer(classes=LABELS)
    y = mlb.fit_transform([v.split() for v in truth.loc[sub["id"], "tags"]])
    return fbeta_score(y, mlb.transform([v.split() for v in sub["tags"]]), beta=beta, average="samples",
                       zero_division=0)


def test_tags_file_of_a_threshold_free_metric_is_fitted_and_scored_as_tags(pairs):
    out = kit("predict.py", *dirs(pairs), "--experiments", "map", "--submission-mode", "label", "--no-report").stdout
    path = newest(pairs)
    sub, truth = read(path), read(pairs / "in" / "solution.csv").set_index("id")
    assert "which map does not score" in out and "fitted and scored for f1_samples" in out
    assert "label thresholds" in out and "at least one tag yes" in out
    assert (sub["tags"].str.strip() != "").all()           # every training row has a tag: so has every row here
    # the score printed and the one in the file's name are the file's own
    assert f"test f1_samples: {f_samples(truth, sub):.5f}" in out and "test map" not in out
    nested = out.split("CV f1_samples before -> after:")[1].split("nested ")[1].split(" -> ")[1].split()[0]
    assert path.name.endswith(f"_cv{float(nested):.5f}.csv")
    # --tag-metric chooses the F metric the thresholds are fitted for
    out = kit("predict.py", *dirs(pairs), "--experiments", "map", "--submission-mode", "label", "--tag-metric",
              "f2_samples", "--no-report").stdout
    assert f"test f2_samples: {f_samples(truth, read(newest(pairs)), 2.0):.5f}" in out
    # ... and only for a tags file
    r = kit("predict.py", *dirs(pairs), "--experiments", "map", "--input-dir", str(pairs / "in_probs"),
            "--tag-metric", "f2_samples", "--no-report", ok=False)
    assert r.returncode == 2 and r.stderr.startswith("error: --tag-metric scores a file of multi-label tags")


def test_probability_file_is_scored_by_a_probability_metric(pairs):
    from sklearn.metrics import average_precision_score
    out = kit("predict.py", *dirs(pairs), "--experiments", "f1", "--input-dir", str(pairs / "in_probs"),
              "--no-report").stdout
    path = newest(pairs)
    sub = read(path)
    assert "submission mode: probs" in out and "scored here by map: the training metric f1_samples scores tags" in out
    assert "test f1_samples" not in out and "label thresholds" not in out      # nothing fitted for tags not written
    truth = read(pairs / "in" / "solution.csv").set_index("id").loc[sub["id"], "tags"]
    y = np.array([[c in v.split() for c in LABELS] for v in truth], dtype=float)
    ok = (y.min(0) == 0) & (y.max(0) == 1)
    expected = average_precision_score(y[:, ok], sub[LABELS].to_numpy(float)[:, ok], average="macro")
    # the file's map: its six significant digits may tie a weak model's close probabilities, hence the margin
    assert abs(float(out.split("test map: ")[1].split()[0]) - expected) < 5e-3
    cv = out.split("-m 'f1 CV map ")[1].split("'")[0]          # the upload line: the file's CV, in map
    assert path.name == f"f1_cv{cv}.csv"


def test_label_sep_joins_the_tags_written_or_is_refused(pairs, tmp_path):
    kit("predict.py", *dirs(pairs), "--experiments", "f1", "--label-sep", ",", "--no-report")
    sub = read(newest(pairs))
    assert sub["tags"].str.contains(",").any() and not sub["tags"].str.contains(" ").any()
    assert {t for v in sub["tags"] for t in v.split(",")} <= set(LABELS)


# --------------------------------------------------------------------------- a binary competition: which class

@pytest.fixture(scope="module")
def fake_real(tmp_path_factory):
    """Digits 0 (FAKE) against 1 (REAL), trained with --metric auc; the sample's one value column is named
    `target` (a copy names it FAKE)."""
    from foldkit.data.demo import digit_images
    root = tmp_path_factory.mktemp("binary")
    x, y = digit_images(32)
    keep = np.flatnonzero(y < 2)[:56]
    names = np.where(y[keep] == 0, "FAKE", "REAL")
    ids = [f"i{k:03d}" for k in range(len(keep))]
    for i, k in zip(ids, keep):
        write_png(root / "in" / ("train" if i < "i040" else "test") / f"{i}.png", x[k])
    pd.DataFrame({"id": ids[:40], "label": names[:40]}).to_csv(root / "in" / "train.csv", index=False)
    pd.DataFrame({"id": ids[40:], "target": 0.5}).to_csv(root / "in" / "sample_submission.csv", index=False)
    pd.DataFrame({"id": ids[40:], "label": names[40:]}).to_csv(root / "in" / "solution.csv", index=False)
    shutil.copytree(root / "in", root / "in_fake")
    pd.DataFrame({"id": ids[40:], "FAKE": 0.5}).to_csv(root / "in_fake" / "sample_submission.csv", index=False)
    kit("make_folds.py", "--input-dir", str(root / "in"), "--n-folds", "2", *dirs(root))
    kit("train.py", "--fold", "all", *TRAIN, "--epochs", "2", "--metric", "auc", *dirs(root))
    return root, names[40:]


def test_binary_file_holds_the_positive_class_the_sample_or_the_flag_names(fake_real):
    root, truth = fake_real
    out = kit("predict.py", *dirs(root), "--no-report").stdout
    assert "P(REAL) in target" in out and "--positive-class FAKE writes P(FAKE)" in out
    real = read(newest(root))["target"].to_numpy(float)
    out = kit("predict.py", *dirs(root), "--positive-class", "FAKE", "--no-report").stdout
    assert "P(FAKE) in target" in out and "positive class: FAKE (--positive-class)" in out
    fake = read(newest(root))["target"].to_numpy(float)
    assert np.allclose(fake, 1 - real, atol=2e-6)
    out = kit("predict.py", *dirs(root), "--input-dir", str(root / "in_fake"), "--no-report").stdout
    assert "P(FAKE) in FAKE" in out and "the sample's value column is named after it" in out
    assert np.allclose(read(newest(root))["FAKE"].to_numpy(float), fake, atol=2e-6)
    # a file of class labels is scored by accuracy, not the AUC the run was trained with
    out = kit("predict.py", *dirs(root), "--submission-mode", "label", "--no-report").stdout
    assert "scored here by accuracy: the training metric auc scores probabilities" in out
    assert "test accuracy:" in out and "test auc" not in out and "_cv" in newest(root).name
    # a flag that contradicts the sample's column, or names no class, is one line
    r = kit("predict.py", *dirs(root), "--input-dir", str(root / "in_fake"), "--positive-class", "REAL", ok=False)
    assert r.returncode == 2 and "value column is named FAKE" in r.stderr and "Traceback" not in r.stderr
    r = kit("predict.py", *dirs(root), "--positive-class", "fake", ok=False)
    assert r.returncode == 2 and "not a class of this competition: use FAKE or REAL" in r.stderr
    r = kit("train.py", "--fold", "0", *TRAIN, "--epochs", "1", "--metric", "f1", "--positive-class", "FAKE",
            *dirs(root), ok=False)
    assert r.returncode == 2 and "f1 of FAKE is not supported yet" in r.stderr


# --------------------------------------------------------------------------- numbers

def test_small_numbers_keep_their_significant_digits(tmp_path):
    from foldkit.predict import blend, submission
    plan = blend.Plan("mean", np.array([1.0]), submission_mode="label", task="regression")
    ids = ["a", "b", "c"]
    target = np.array([[1.234567e-6], [3.5e-7], [5858123.456789]])
    sub = submission.make(ids, target, plan, pd.DataFrame({"id": ids, "y": 0.0}))
    back = pd.read_csv(submission.write(sub, tmp_path / "reg.csv"))["y"].to_numpy()
    assert np.allclose(back, target[:, 0], rtol=1e-5, atol=0)          # was 0.000001, 0.000000
    probs = np.array([[1 - 3e-7, 3e-7], [2e-9, 1 - 2e-9], [0.25, 0.75]])
    plan = blend.Plan("mean", np.array([1.0]), submission_mode="probs", classes=["a", "b"])
    sub = submission.make(ids, probs, plan, pd.DataFrame({"id": ids, "a": 0.5, "b": 0.5}))
    back = pd.read_csv(submission.write(sub, tmp_path / "p.csv"))[["a", "b"]].to_numpy()
    assert np.allclose(back, probs, rtol=1e-5, atol=0) and (back > 0).all() and (back < 1).all()
    assert submission.number_text(0.5) == "0.5" and submission.number_text(0.1234564) == "0.123456"
