"""make_folds --test-like-fold: fold 0 holds the most test-like training rows.

A CSV-layout competition of real Fashion-MNIST images where a fifth of the training images and the
whole test set are blurred and brightened (a planted train/test shift), with a group column and two
planted exact copies across groups. The real audit (ImageNet mobilenetv2 of ../shared/weights, 64 px)
scores every training image's p_test; make_folds through its CLI must put the shifted training
rows in fold 0, keep every group and duplicate cluster inside one fold, give every row one fold and
record it in folds_meta.json; a missing, foreign or test-free adversarial validation is one line.
"""
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, need_shared, write_png
from foldkit import config

N_TRAIN, N_SHIFTED, N_TEST = 150, 31, 60
COPIES = {149: 100, 148: 5}          # row -> the row whose image it repeats (a plain and a shifted one)


def _shift(img):
    import cv2
    return np.clip(cv2.GaussianBlur(img, (5, 5), 1.5).astype(int) + 60, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """(competition folder, reports folder) after the audit: train rows 0..30 and every test image
    shifted; groups of three consecutive rows; rows 148/149 exact copies of rows 5/100."""
    sys.path.insert(0, str(REPO / "benchmarks" / "scenarios"))
    from common import read_idx

    from foldkit.audit.run import run_audit
    raw = need_shared("data", "fashion_mnist")
    weights = need_shared("weights", "mobilenetv2_100_imagenet.pth")
    x = read_idx(raw / "t10k-images-idx3-ubyte.gz")[:N_TRAIN + N_TEST]
    y = read_idx(raw / "t10k-labels-idx1-ubyte.gz")[:N_TRAIN + N_TEST].astype(int)
    root = tmp_path_factory.mktemp("testlike") / "comp"
    train = [(_shift(im) if i < N_SHIFTED else im) for i, im in enumerate(x[:N_TRAIN])]
    for i, j in COPIES.items():
        train[i] = train[j]
    for i, im in enumerate(train):
        write_png(root / "train" / f"r{i:03d}.png", im)
    for i, im in enumerate(x[N_TRAIN:]):
        write_png(root / "test" / f"t{i:03d}.png", _shift(im))
    pd.DataFrame({"id": [f"r{i:03d}" for i in range(N_TRAIN)], "label": y[:N_TRAIN],
                  "group": [f"g{i // 3}" for i in range(N_TRAIN)]}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"id": [f"t{i:03d}" for i in range(N_TEST)], "label": 0}).to_csv(
        root / "sample_submission.csv", index=False)
    reports = root.parent / "reports"
    cfg = config.resolve(dict(input_dir=str(root), reports_dir=str(reports), embed_weights=str(weights),
                              embed_size=64))
    run_audit(cfg, log=lambda *a: None)
    return root, reports


def _make_folds(root, reports, folds, *flags):
    return subprocess.run([sys.executable, str(REPO / "src" / "make_folds.py"), "--input-dir", str(root),
                           "--reports-dir", str(reports), "--folds-dir", str(folds), *flags],
                          capture_output=True, text=True, timeout=120)


def test_fold0_holds_the_test_like_rows_and_no_group_or_copy_spans_folds(audited, tmp_path):
    root, reports = audited
    r = _make_folds(root, reports, tmp_path / "f", "--test-like-fold", "--group-col", "group")
    assert r.returncode == 0, r.stderr
    assert "fold 0 is test-like" in r.stdout, r.stdout
    t = pd.read_csv(tmp_path / "f" / "train_folds.csv")
    row = t["id"].str[1:].astype(int)
    assert len(t) == N_TRAIN and set(t["fold"]) == {0, 1, 2, 3, 4}       # every row validated once
    zero = t["fold"] == 0
    shifted = (row < N_SHIFTED) | (row == 148)
    assert abs(zero.sum() - N_TRAIN / 5) <= 3
    assert (shifted & zero).sum() >= 0.8 * zero.sum(), t[zero]            # fold 0: the shifted rows
    assert (shifted & zero).sum() >= 0.8 * N_SHIFTED
    assert (t.groupby("group")["fold"].nunique() == 1).all()
    for i, j in COPIES.items():
        assert t["fold"][row == i].item() == t["fold"][row == j].item()
    meta = json.loads((tmp_path / "f" / "folds_meta.json").read_text())
    tl = meta["test_like"]
    assert tl["fold"] == 0 and tl["rows"] == zero.sum() and tl["adversarial_auc"] > 0.75
    assert tl["mean_p_test"] > tl["mean_p_test_other_folds"] and tl["source"].endswith("adversarial.csv")
    assert meta["duplicates"]["grouped"] and meta["splitter"] == "StratifiedGroupKFold"


def test_without_the_flag_the_folds_are_random_and_meta_unchanged(audited, tmp_path):
    root, reports = audited
    r = _make_folds(root, reports, tmp_path / "f", "--group-col", "group")
    assert r.returncode == 0, r.stderr
    t = pd.read_csv(tmp_path / "f" / "train_folds.csv")
    zero = t["fold"] == 0
    assert (t["id"].str[1:].astype(int)[zero] < N_SHIFTED).sum() < 0.5 * zero.sum()
    assert "test_like" not in json.loads((tmp_path / "f" / "folds_meta.json").read_text())


def _foreign_ids(audit):
    a = pd.read_csv(audit / "adversarial.csv", dtype={"id": str})
    a.assign(id="x" + a["id"]).to_csv(audit / "adversarial.csv", index=False)


def _no_test(audit):
    s = json.loads((audit / "audit.json").read_text())
    (audit / "audit.json").write_text(json.dumps({**s, "shift": {}, "test_rows": 0}))


@pytest.mark.parametrize("spoil, says", [
    (lambda a: (a / "adversarial.csv").unlink(), "cannot read {audit}/adversarial.csv"),
    (_foreign_ids, "{audit}/adversarial.csv scores no p_test for 150 of the 150 training rows"),
    (_no_test, "{audit}/audit.json has no adversarial validation (it saw no test images"),
    (lambda a: (a / "audit.json").unlink(), "no audit of"),
])
def test_a_missing_or_foreign_adversarial_validation_is_one_line(audited, tmp_path, spoil, says):
    root, reports = audited
    audit = tmp_path / "audit"
    shutil.copytree(reports / "audit", audit)
    spoil(audit)
    r = _make_folds(root, reports, tmp_path / "f", "--test-like-fold", "--audit-dir", str(audit))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: --test-like-fold: " ) and r.stderr.count("\n") == 1, r.stderr
    assert says.format(audit=audit) in r.stderr and "python src/audit.py --embed-weights FILE" in r.stderr
    assert not (tmp_path / "f" / "train_folds.csv").exists()


def test_train_predict_and_report_name_fold0_the_test_like_estimate(audited, tmp_path):
    """train says fold 0 is the test-like fold; predict's CV line and report.html name its score as the
    test-like estimate, and the report's fold table marks it (in-process: one torch import)."""
    from foldkit.train.fit import train
    from foldkit.predict.predicting import run_predict
    from foldkit.report.predicted import write_reports
    root, reports = audited
    assert _make_folds(root, reports, tmp_path / "f", "--test-like-fold", "--n-folds", "3").returncode == 0
    cfg = config.resolve(dict(input_dir=str(root), folds_dir=str(tmp_path / "f"), models_dir=str(tmp_path / "m"),
                              reports_dir=str(tmp_path / "rep"), submissions_dir=str(tmp_path / "sub"),
                              pretrained=False, model="test_resnet", img_size=32, epochs=1, progress=False, workers=0,
                              experiment="tl", fold="0,1"))
    logs = []
    train(cfg, log=logs.append)
    assert any(str(m).startswith("fold 0 is the test-like fold") for m in logs), logs
    logs.clear()
    run_predict(cfg, log=logs.append, reports=write_reports)
    assert any("test-like estimate (fold 0, the most test-like rows)" in str(m) for m in logs), logs
    cv = json.loads((tmp_path / "rep" / "tl" / "cv_scores.json").read_text())
    assert cv["test_like_fold"]["score"] == cv["fold_scores"][0]
    page = (tmp_path / "rep" / "tl" / "report.html").read_text()
    assert "fold 0 (test-like)" in page and "0 (test-like)" in page and "test-like estimate" in page
