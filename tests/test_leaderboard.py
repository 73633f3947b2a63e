"""End to end on two tiny trained experiments: predict.py --blend optimize and hill, temperature scaling
applied to the submitted probabilities, and the leaderboard CLI."""
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from foldkit.metrics import METRICS

FAST = ["--no-pretrained", "--model", "test_resnet", "--crop-pct", "1.0", "--no-hflip", "--epochs", "1",
        "--batch-size", "32", "--no-progress", "--workers", "0", "--fold", "all"]


def run(script, *args):
    return subprocess.run([sys.executable, str(REPO / "src" / script), *args], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def two(tmp_path_factory, digits_32_module):
    """A numpy-layout competition of real digits (300 training rows in 2 folds; 80 labelled test
    images, submitted as one probability column per class) and two experiments that differ in
    image size and label smoothing."""
    import train
    from foldkit import config
    from foldkit.folds.file import make_folds
    root = tmp_path_factory.mktemp("board")
    x, y = digits_32_module
    comp = root / "input"
    comp.mkdir()
    for name, arr in (("x_train", x[:300]), ("y_train", y[:300]), ("x_test", x[300:380]), ("y_test", y[300:380])):
        np.save(comp / f"{name}.npy", arr)
    pd.DataFrame({"id": [str(i) for i in range(80)], **{str(c): 0.1 for c in range(10)}}).to_csv(
        comp / "sample_submission.csv", index=False)
    paths = ["--input-dir", str(comp), "--folds-dir", str(root / "folds"), "--models-dir", str(root / "models")]
    # setup in-process (the CLIs under test are predict.py and leaderboard.py)
    make_folds(config.resolve(input_dir=str(comp), folds_dir=str(root / "folds"), models_dir=str(root / "models"),
                              n_folds=2), log=lambda *a: None)
    for name, extra in (("s24", ["--img-size", "24"]), ("s32", ["--img-size", "32", "--label-smoothing", "0"])):
        train.main([*paths, *FAST, *extra, "--experiment", name])
    return root, paths + ["--submissions-dir", str(root / "subs"), "--reports-dir", str(root / "reports")]


@pytest.fixture(scope="module")
def digits_32_module():
    from foldkit.data.demo import digit_images
    return digit_images(32)


@pytest.fixture(scope="module")
def blended(two):
    """predict.py --blend optimize (its main(), in-process: no second torch import)."""
    import contextlib
    import io

    import predict
    root, paths = two
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        predict.main([*paths, "--experiments", "s24,s32", "--blend", "optimize", "--no-progress", "--workers", "0"])
    return root, paths, out.getvalue()


def test_predict_blend_optimize_reports_nested_and_in_sample_cv_and_submits(blended):
    root, _, stdout = blended
    assert "optimize blend of 2 experiments" in stdout and "nested" in stdout
    # the blend's figures are the blend's own report, never a member's
    blend_report = json.loads((root / "reports" / "s24+s32" / "cv_scores.json").read_text())
    extra = blend_report["extra"]
    assert blend_report["plan"]["experiments"] == ["s24", "s32"] and "test_score" in blend_report
    for name in ("s24", "s32"):
        own = json.loads((root / "reports" / name / "cv_scores.json").read_text())
        assert "test_score" not in own and not {"plan", "cv_blend_nested", "submission"} & set(own.get("extra", {}))
    weights = extra["plan"]["weights"]
    assert set(weights) == {"s24", "s32"} and sum(weights.values()) == pytest.approx(1, abs=1e-3)
    assert min(weights.values()) >= 0
    for k in ("cv_blend_in_sample", "cv_blend_nested", "cv_singles"):
        assert k in extra
    # in-sample weights never do worse than the best single experiment on the rows they were fitted on
    # (the sample asks for probabilities: the file, and so the blend, is scored by log loss, lower is better)
    sign = 1 if METRICS[blend_report["metric"]].greater_is_better else -1
    best_single = max(sign * v for v in extra["cv_singles"].values())
    assert sign * extra["cv_blend_in_sample"] >= best_single - 1e-12
    # the submission is named after both experiments and the honest (nested) CV
    subs = list((root / "subs").glob("s24+s32_cv*.csv"))
    assert len(subs) == 1 and f"_cv{extra['cv_final_nested']:.5f}" in subs[0].name
    sample = pd.read_csv(root / "input" / "sample_submission.csv", dtype=str)
    sub = pd.read_csv(subs[0], dtype=str)
    assert list(sub.columns) == list(sample.columns) and len(sub) == len(sample)
    assert blend_report["metric"] == "logloss" and "test logloss" in stdout


def test_temperature_fitted_on_oof_changes_the_submitted_probabilities(two, capsys):
    import predict
    from foldkit.predict.calibrate import apply_temperature
    root, paths = two
    files = {}
    for mode in ("off", "on"):
        sub_dir = root / f"subs_t{mode}"
        predict.main([*paths, "--experiments", "s24", "--calibrate", mode, "--submissions-dir", str(sub_dir),
                      "--no-progress", "--workers", "0", "--no-report"])
        (files[mode],) = sub_dir.glob("*.csv")
    out = capsys.readouterr().out
    t = float(re.search(r"post-processing fitted on OOF: temperature \(T ([0-9.]+)\)", out).group(1))
    off = pd.read_csv(files["off"]).iloc[:, 1:].to_numpy()
    on = pd.read_csv(files["on"]).iloc[:, 1:].to_numpy()
    assert abs(t - 1) > 0.05 and not np.allclose(off, on, atol=1e-3)
    assert np.allclose(apply_temperature(off, t), on, atol=2e-3)


def test_predict_blend_hill_weights_are_counts_with_nested_cv_beside_in_sample(two, capsys):
    """predict.py --blend hill: Caruana ensemble selection on the same two experiments, its own nested CV."""
    import predict
    root, paths = two
    predict.main([*paths, "--experiments", "s24,s32", "--blend", "hill", "--submissions-dir", str(root / "subs_hill"),
                  "--reports-dir", str(root / "reports_hill"), "--no-progress", "--workers", "0"])
    out = capsys.readouterr().out
    assert "hill blend of 2 experiments" in out and "nested" in out
    report = json.loads((root / "reports_hill" / "s24+s32" / "cv_scores.json").read_text())
    extra = report["extra"]
    assert report["plan"]["blend"] == "hill" and extra["cv_blend_nested"] is not None
    w = np.array(report["plan"]["weights"])
    assert any(np.allclose(w * k, np.round(w * k)) for k in range(1, 102))      # counts / steps
    sign = 1 if METRICS[report["metric"]].greater_is_better else -1
    assert sign * extra["cv_blend_in_sample"] >= max(sign * v for v in extra["cv_singles"].values()) - 1e-12
    (sub,) = (root / "subs_hill").glob("s24+s32_cv*.csv")
    assert f"_cv{extra['cv_final_nested']:.5f}" in sub.name


def test_leaderboard_lists_every_experiment_best_first_with_its_submissions(blended):
    root, paths, _ = blended
    r = run("leaderboard.py", "--models-dir", str(root / "models"), "--submissions-dir", str(root / "subs"),
            "--csv", str(root / "board.csv"))
    assert r.returncode == 0, r.stderr
    board = pd.read_csv(root / "board.csv")
    assert sorted(board["experiment"]) == ["s24", "s32"]
    assert board["cv"].tolist() == sorted(board["cv"], reverse=True)          # accuracy: higher first
    assert (board["folds"] == "2/2").all() and set(board["img_size"]) == {24, 32}
    settings = dict(zip(board["experiment"], board["settings"]))
    assert settings["s32"] == "label_smoothing=0.0" and settings["s24"] == "label_smoothing=0.1"
    for name in ("s24", "s32"):
        row = board[board["experiment"] == name].iloc[0]
        assert row["submissions"].startswith("s24+s32_cv") and row["train_min"] >= 0
        cv = json.loads((root / "reports" / name / "cv_scores.json").read_text())["cv"]
        assert row["cv"] == pytest.approx(cv, abs=1e-9)
        assert name in r.stdout
    r = run("leaderboard.py", "--models-dir", str(root / "nothing"))
    assert r.returncode == 0 and "no experiments" in r.stdout


def test_help_lists_the_registry_without_torch_and_errors_are_one_line(tmp_path):
    from foldkit.predict.blend import BLENDS
    r = subprocess.run([sys.executable, "-X", "importtime", str(REPO / "src" / "leaderboard.py"), "--help"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "--csv" in r.stdout and "torch" not in r.stderr.split()
    r = run("predict.py", "--help")
    assert "{" + ",".join(BLENDS) + "}" in r.stdout and "--calibrate" in r.stdout and "--thresholds" in r.stdout
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    r = run("leaderboard.py", "--models-dir", str(tmp_path))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "config.json" in r.stderr


def test_bundle_and_image_apply_the_plan_predict_submitted_with(two, tmp_path, capsys):
    """Two experiments with different fold counts (s32: fold 0 only), an `optimize` blend and
    temperature scaling: the bundle's torch runner writes predict.py's file byte for byte, the ONNX
    runner the same probabilities within 1e-3, and --image the same probabilities for one image."""
    import shutil

    import export as export_cli
    import predict
    from conftest import write_png
    from foldkit.export import bundle
    root, paths = two
    models = tmp_path / "models"
    shutil.copytree(root / "models", models)
    (models / "s32" / "fold1.json").unlink()            # s32: one finished fold, s24: two
    paths = [p if p != str(root / "models") else str(models) for p in paths]
    plan_flags = ["--experiments", "s24,s32", "--blend", "optimize", "--calibrate", "on", "--tta", "none",
                  "--workers", "0", "--no-progress"]
    predict.main([*paths, *plan_flags, "--submissions-dir", str(tmp_path / "subs"), "--no-report"])
    (ref,) = (tmp_path / "subs").glob("s24+s32*.csv")
    export_cli.main([*paths, *plan_flags[:-1], "--onnx", "--out", str(tmp_path / "bundle"), "--time-budget", "0"])
    man = bundle.read_manifest(tmp_path / "bundle")
    plan = man["plan"]
    assert plan.members == [("s24", 0), ("s24", 1), ("s32", 0)] and plan.blend == "optimize"
    assert [n for n, _ in plan.steps] == ["temperature"] and plan.submission_mode == "probs"
    # the plan is not a flat mean of the three members: that was the bundle's old answer
    offline = ["--bundle", str(tmp_path / "bundle"), "--input-dir", str(root / "input"), "--workers", "0",
               "--no-progress"]
    bundle.main([*offline, "--runner", "torch", "--out", str(tmp_path / "torch.csv")])
    assert (tmp_path / "torch.csv").read_bytes() == ref.read_bytes()
    bundle.main([*offline, "--runner", "onnx", "--out", str(tmp_path / "onnx.csv")])
    want = pd.read_csv(ref).iloc[:, 1:].to_numpy()
    got = pd.read_csv(tmp_path / "onnx.csv").iloc[:, 1:].to_numpy()
    assert np.abs(got - want).max() < 1e-3 and (got.argmax(1) == want.argmax(1)).all()
    # --image: the same plan on one test image
    x_test = np.load(root / "input" / "x_test.npy")
    img = write_png(tmp_path / "one.png", x_test[3])
    capsys.readouterr()
    top = predict.main([*paths, *plan_flags, "--image", str(img), "--topk", "10"])
    probs = dict(top)
    assert np.abs(np.array([probs[c] for c in range(10)]) - want[3]).max() < 1e-5


def test_a_blend_has_its_own_page_and_each_member_page_points_to_it(blended):
    root, _, _ = blended
    blend_page = (root / "reports" / "s24+s32" / "report.html").read_text()
    extra = json.loads((root / "reports" / "s24+s32" / "cv_scores.json").read_text())["extra"]
    assert "<h1>Blend: s24 + s32</h1>" in blend_page and "the optimize blend of s24 (weight" in blend_page
    assert f"{extra['cv_final_nested']:.5f} in nested CV" in blend_page
    for name in ("s24", "s32"):
        assert f"href='../{name}/report.html'" in blend_page
        member = (root / "reports" / name / "report.html").read_text()
        assert "Member of: the blend s24+s32 (its CV, plan and submission: ../s24+s32/report.html)" in member
        text = re.sub(r"<style>.*?</style>", "", member, flags=re.S)
        assert "weight" not in text and "Submission file" not in text     # the blend's figures stay on its page
    for raw in ("cv_", "in_sample", "verdicts", "{"):
        visible = re.sub(r"<[^>]+>", " ", re.sub(r"<style>.*?</style>|<a [^>]*>.*?</a>", "", blend_page, flags=re.S))
        assert raw not in visible, raw
