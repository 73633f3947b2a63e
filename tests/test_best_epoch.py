"""Which epoch a fold keeps, and the constant answer it must beat (issue 28).

A multi-label competition with sparse tags (18 tags, one or two per image) tried as a new user would:
make_folds.py, train.py --fold all, predict.py. Sparse tags' sigmoid outputs sit below 0.5 for the
first epochs, so an F metric cut at 0.5 is 0 at every epoch and the first epoch was kept while the
validation loss went on falling. Epochs are now kept by the score the submission gets (the F metric at
each epoch's best global threshold), the log shows that score and the constant answer's, and the
submitted tags beat tagging every image with the commonest tags.
"""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, write_png
from foldkit import metrics, tasks

# no augmentation: a random crop of a two-slot image can cut a digit out and leave its tag
TRAIN = ["--model", "test_resnet", "--img-size", "16", "--epochs", "6", "--lr", "1e-2", "--batch-size", "16",
         "--aug", "none", "--no-pretrained"]


def sparse_tags(root, n_train: int = 200, n_test: int = 60, seed: int = 0):
    """Real digits (scikit-learn's 8 x 8, drawn at 16 px) in two slots of a 16 x 32 canvas, each slot filled
    with probability 0.6 (at least one): tags `L<d>` / `R<d>` name the digit 0-8 in each slot (18 tags, one
    or two per image, each on about one image in thirteen)."""
    from foldkit.data.demo import digit_images
    x, y = digit_images(16)
    keep = np.flatnonzero(y < 9)
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_train + n_test):
        left, right = rng.random(2) < 0.6
        if not (left or right):
            left = True
        img, tags = np.zeros((16, 32), np.uint8), []
        for side, on, col in (("L", left, 0), ("R", right, 16)):
            if on:
                i = rng.choice(keep)
                img[:, col:col + 16] = x[i]
                tags.append(f"{side}{y[i]}")
        write_png(root / ("train" if k < n_train else "test") / f"s{k:04d}.png", img)
        rows.append((f"s{k:04d}", " ".join(tags)))
    pd.DataFrame(rows[:n_train], columns=["id", "tags"]).to_csv(root / "train.csv", index=False)
    test = pd.DataFrame(rows[n_train:], columns=["id", "tags"])
    test.assign(tags="L0 R1").to_csv(root / "sample_submission.csv", index=False)
    test.to_csv(root / "solution.csv", index=False)
    return root


def kit(script, *args):
    r = subprocess.run([sys.executable, str(REPO / "src" / script), *args], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return r.stdout


def test_sparse_tags_keep_a_later_epoch_and_beat_the_constant_answer(tmp_path):
    sparse_tags(tmp_path / "in")
    dirs = ["--folds-dir", str(tmp_path / "folds"), "--models-dir", str(tmp_path / "models"),
            "--submissions-dir", str(tmp_path / "subs"), "--reports-dir", str(tmp_path / "reports")]
    kit("make_folds.py", "--input-dir", str(tmp_path / "in"), "--n-folds", "2", *dirs)
    out = kit("train.py", "--fold", "all", *TRAIN, *dirs)
    [exp] = (tmp_path / "models").iterdir()
    logs = [pd.read_csv(exp / f"log_fold{k}.csv") for k in range(2)]
    # the validation loss falls after the first epoch, and the folds keep a later epoch
    assert all(log["valid_loss"].iloc[-1] < log["valid_loss"].iloc[0] for log in logs)
    best = [int(pd.read_json(exp / f"fold{k}.json", typ="series")["best_epoch"]) for k in range(2)]
    assert all(b > 1 for b in best), (best, out)
    # the log says what the epochs are kept by, prints only the columns that apply, and the constant answer
    assert "f1_samples@thr" in out and "valid_acc" not in out
    assert "constant answer" in out and "commonest tag" in out
    # the submitted tags score at least twice the constant answer (the commonest tags on every image)
    pred = kit("predict.py", *dirs)
    [sub] = (tmp_path / "subs").glob("*.csv")
    labels = [f"{s}{d}" for s in "LR" for d in range(9)]
    hot = lambda col: np.array([[t in str(v).split() for t in labels] for v in col], dtype=float)  # noqa: E731
    truth = hot(pd.read_csv(tmp_path / "in" / "solution.csv", keep_default_na=False).set_index("id")
                .loc[pd.read_csv(sub, keep_default_na=False)["id"], "tags"])
    submitted = metrics.score("f1_samples", truth, hot(pd.read_csv(sub, keep_default_na=False)["tags"]))
    train_y = hot(pd.read_csv(tmp_path / "in" / "train.csv")["tags"])
    constant, what = tasks.constant_answer("multilabel", "f1_samples", train_y, truth)
    assert "commonest tag" in what
    assert submitted >= 2 * constant, (submitted, constant, pred)
    # the report's first screen gives the constant answer too, and its CV is read as the tags are cut (at the
    # fitted threshold, not at 0.5, where sparse tags score near 0): it beats the constant answer
    [page] = (tmp_path / "reports").glob("*/report.html")
    assert "constant answer" in page.read_text()
    scores = json.loads(next((tmp_path / "reports").glob("*/cv_scores.json")).read_text())
    assert scores["scored_at_threshold"] and scores["cv"] > 1.5 * constant, (scores["cv"], constant)


def test_the_cv_of_a_threshold_metric_is_read_where_the_submission_cuts():
    """Sparse tags' probabilities all below 0.5: f1_samples at 0.5 is 0, at the fitted threshold it is 1; the
    CV summary the report, tune and the leaderboard read takes the second (predict.calibrate.cv_scorer)."""
    from foldkit.oof import cv_summary
    from foldkit.predict.calibrate import cv_scorer
    y = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]] * 5)
    oof = pd.DataFrame({"id": [f"i{i}" for i in range(20)], "fold": [0, 1] * 10,
                        "label": [" ".join(t for t, v in zip("abc", r) if v) for r in y], "pred": ""})
    for j, c in enumerate("abc"):
        oof[f"prob_{c}"] = 0.1 + 0.2 * y[:, j]
    plain = cv_summary(oof, list("abc"), "f1_samples", "multilabel", " ")
    fitted = cv_summary(oof, list("abc"), "f1_samples", "multilabel", " ",
                        cv_scorer("f1_samples", "multilabel", 3))
    assert plain["cv"] == 0 and not plain["scored_at_threshold"]
    assert fitted["cv"] == 1 and fitted["fold_scores"] == [1, 1] and fitted["scored_at_threshold"]
    assert cv_scorer("map", "multilabel", 3) is None and cv_scorer("accuracy", "single", 5) is None


@pytest.mark.parametrize("task,metric,y_fit,y_score,expect", [
    ("single", "accuracy", np.array([0, 0, 1]), np.array([0, 1, 0, 0]), 0.75),
    ("single", "f1", np.array([0, 0, 1]), np.array([0, 1, 0, 1]), 2 / 3),        # always the positive class
    ("single", "logloss", np.array([0, 0, 1, 1]), np.array([0, 1]), np.log(2)),
    ("multilabel", "f1_samples", np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1]]), np.array([[1, 0, 0], [1, 1, 0]]),
     (2 / 3 + 1) / 2),                                                            # the two commonest tags
    ("regression", "mae", np.array([1.0, 2.0, 10.0]), np.array([2.0, 4.0]), 1.0),   # the median
    ("regression", "rmse", np.array([0.0, 2.0]), np.array([1.0, 3.0]), np.sqrt(2)),  # the mean
])
def test_constant_answer_of_every_task_kind(task, metric, y_fit, y_score, expect):
    value, what = tasks.constant_answer(task, metric, y_fit, y_score,
                                        n_outputs=2 if task == "single" else None)
    assert value == pytest.approx(expect) and what


def test_epoch_scored_at_its_best_threshold_and_kept_by_the_loss_where_undefined():
    from foldkit.train.selection import EpochScore, epoch_rule, keeps, score_epoch
    rule = epoch_rule("f1_samples", "multilabel", 4)
    assert rule.name == "f1_samples@thr" and epoch_rule("f1", "single", 2).name == "f1@thr"
    assert epoch_rule("accuracy", "single", 2).name == "accuracy" and epoch_rule("map", "multilabel", 4).fit == "none"
    y = np.eye(4)[[0, 1, 2, 3, 0, 1]]
    probs = 0.05 + 0.25 * y                         # every output below 0.5, the right tag highest
    s = score_epoch(rule, "multilabel", probs, y, float("nan"), None)
    assert s.plain == 0.0 and s.value == 1.0 and s.threshold < 0.3 and np.isnan(s.accuracy) and s.loss > 0
    b = score_epoch(epoch_rule("f1", "single", 2), "single", np.array([[0.8, 0.2], [0.7, 0.3], [0.9, 0.1]]),
                    np.array([1, 1, 0]), 0.5, None)
    assert b.plain == 0.0 and b.value == 1.0 and b.accuracy == pytest.approx(1 / 3)
    nan = float("nan")
    assert keeps("auc", EpochScore(nan, nan, None, nan, 0.4), nan, 0.5)       # undefined: the lower loss
    assert not keeps("auc", EpochScore(nan, nan, None, nan, 0.6), nan, 0.5)
    assert not keeps("auc", EpochScore(nan, nan, None, nan, 0.1), 0.7, 0.5)   # a defined score stays
    assert keeps("auc", EpochScore(0.6, 0.6, None, nan, 0.9), nan, 0.5)
    assert keeps("logloss", EpochScore(0.3, 0.3, None, nan, 0.3), None, None)  # the first epoch


def test_report_warns_when_the_cv_does_not_beat_the_constant_answer():
    from foldkit.report.words import constant_in_words
    r = {"metric": "f1_samples", "cv": 0.0, "constant_answer": {"value": 0.128, "what": "the 2 commonest tags"}}
    told, warn = constant_in_words(r)
    assert "constant answer (the 2 commonest tags" in told and "0.12800" in told
    assert "does not beat the constant answer" in warn
    told, warn = constant_in_words({**r, "extra": {"cv_final_nested": 0.4}})     # what is submitted beats it
    assert told and not warn
