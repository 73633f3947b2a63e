"""RMSLE, as Kaggle scores prices (issue 29): the metric is scikit-learn's, training runs on log1p of the
target and every path writes the original scale (OOF, CV, predict.py, both bundle runners, --image); a negative
target is refused in one line. End to end on the real houses photos and prices (../shared/data/houses)."""
import json

import numpy as np
import pandas as pd
import pytest

import task_data
from conftest import WEIGHTS, need_shared
from test_task_competitions import kit
from foldkit import config
from foldkit.errors import ConfigError
from foldkit.metrics import score
from foldkit.tasks import TASKS, TargetScale, constant_answer

# the pretrained backbone (../shared/weights), one epoch at 32 px: enough to beat the constant answer
TRAIN = ["--model", "mobilenetv2_100", "--img-size", "32", "--epochs", "1", "--batch-size", "32", "--no-hflip"]


def rmsle(y, p):
    return float(np.sqrt(np.mean((np.log1p(p) - np.log1p(y)) ** 2)))


def test_rmsle_is_sklearns_and_its_constant_answer_is_the_geometric_one():
    from sklearn.metrics import mean_squared_log_error
    rng = np.random.default_rng(0)
    y, p = rng.lognormal(12, 1, 200), rng.lognormal(12, 1.2, 200)
    assert score("rmsle", y, p[:, None]) == pytest.approx(mean_squared_log_error(y, p) ** 0.5, rel=1e-12)
    # a negative prediction counts as 0 (never worse for a target >= 0); a negative target is undefined
    q = p.copy()
    q[:5] = -3.0
    assert score("rmsle", y, q) == pytest.approx(mean_squared_log_error(y, np.clip(q, 0, None)) ** 0.5)
    assert np.isnan(score("rmsle", np.r_[-1.0, y], np.r_[1.0, p]))
    value, what = constant_answer("regression", "rmsle", y, y)
    assert what == "expm1 of the mean log1p target"
    assert value == pytest.approx(rmsle(y, np.expm1(np.log1p(y).mean())))
    assert constant_answer("regression", "rmse", y, y)[1] == "the mean target"


def test_the_target_transform_is_in_the_checkpoint_and_old_checkpoints_read_as_none():
    y = np.array([22_000.0, 150_000.0, 5_858_000.0])
    scale = TASKS["regression"].target_scale("rmsle", y)
    assert scale.to_json()["transform"] == "log1p" and scale.mean == pytest.approx(np.log1p(y).mean())
    z = scale.standardise(y)
    assert np.allclose(TargetScale.from_json(scale.to_json()).restore(z[:, None]), y)
    old = {"mean": 10.0, "std": 2.0}           # a checkpoint written before the transform
    assert TASKS["regression"].target_scale("rmse", y).to_json().keys() == old.keys()
    assert np.allclose(TASKS["regression"].to_predictions(np.array([[1.0]]), old), [[12.0]])
    # the validation loss is the MSE in the model's units: 0 for outputs that restore to the targets
    assert TASKS["regression"].valid_loss(z[:, None], y, scale) == pytest.approx(0.0, abs=1e-20)


def test_negative_targets_are_refused_in_one_line_and_wide_positive_ones_get_a_hint(tmp_path):
    task = TASKS["regression"]
    with pytest.raises(ConfigError) as e:
        task.check_targets(config.resolve({"metric": "rmsle"}), np.array([3.0, -0.5, 7.0]), "train.csv column 'y'")
    assert "train.csv column 'y'" in str(e.value) and "smallest -0.5" in str(e.value) and "\n" not in str(e.value)
    prices = np.array([22_000.0, 5_858_000.0])
    assert "--metric rmsle" in task.check_targets(config.resolve({}), prices, "x")
    assert task.check_targets(config.resolve({}), np.array([1.0, 110.0]), "x") == ""     # ages: no hint
    assert task.check_targets(config.resolve({"metric": "rmse"}), prices, "x") == ""     # the user chose
    # through train.py: rotated digits' angles go below 0
    task_data.rotated_digits(tmp_path / "in", n_train=30, n_test=6)
    dirs = ["--folds-dir", str(tmp_path / "folds"), "--models-dir", str(tmp_path / "models")]
    kit("make_folds.py", "--input-dir", str(tmp_path / "in"), "--n-folds", "2", *dirs)
    r = kit("train.py", "--fold", "all", "--metric", "rmsle", "--model", "test_resnet", "--no-pretrained",
            "--batch-size", "8", *dirs, ok=False)
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert "train.csv column 'angle'" in r.stderr and "negative targets (smallest -" in r.stderr, r.stderr
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


@pytest.fixture(scope="module")
def houses(tmp_path_factory):
    source, weights = need_shared("data", "houses"), need_shared("weights", "mobilenetv2_100_imagenet.pth")
    assert weights.parent == WEIGHTS
    root = tmp_path_factory.mktemp("houses")
    task_data.houses(root / "in", source, n_test=40, side=32)
    dirs = ["--folds-dir", str(root / "folds"), "--models-dir", str(root / "models"),
            "--submissions-dir", str(root / "subs"), "--reports-dir", str(root / "reports")]
    kit("make_folds.py", "--input-dir", str(root / "in"), "--n-folds", "2", *dirs)
    train = kit("train.py", "--fold", "all", "--metric", "rmsle", "--pretrained-file", str(weights), *TRAIN,
                *dirs).stdout
    pred = kit("predict.py", *dirs).stdout
    kit("export.py", *dirs, "--onnx", "--out", str(root / "bundle"))
    for r in ("onnx", "torch"):
        kit(root / "bundle" / "predict_offline.py", "--input-dir", str(root / "in"), "--runner", r,
            "--out", str(root / f"offline_{r}.csv"))
    return {"root": root, "dirs": dirs, "train": train, "predict": pred}


@pytest.mark.slow
def test_houses_by_rmsle_end_to_end_on_the_price_scale(houses):
    root, out = houses["root"], houses["predict"]
    train = pd.read_csv(root / "in" / "train.csv")
    [exp] = [p for p in (root / "models").iterdir() if p.is_dir()]
    # OOF: pred on the price scale; the CV is the RMSLE of the OOF files (the report's, and the one predict.py
    # prints and fits its post-processing on: the OOF of its TTA views)
    oof = pd.concat([pd.read_csv(p) for p in sorted(exp.glob("oof_fold*.csv"))])
    assert len(oof) == len(train) and oof["pred"].median() > 0.2 * train["price"].median()
    assert oof["pred"].max() < 3 * train["price"].max()
    cv = json.loads((root / "reports" / exp.name / "cv_scores.json").read_text())
    assert cv["metric"] == "rmsle" and cv["cv"] == pytest.approx(rmsle(oof["label"], oof["pred"]))
    tta = pd.concat([pd.read_csv(p) for p in sorted(exp.glob("oof_tta_fold*.csv"))] or [oof])
    assert f"CV rmsle {rmsle(tta['label'], tta['pred']):.5f}" in out
    # it beats the right constant answer (expm1 of the mean log1p target of the other folds)
    assert cv["constant_answer"]["what"] == "expm1 of the mean log1p target", cv["constant_answer"]
    assert cv["cv"] < cv["constant_answer"]["value"]
    assert "the constant answer (expm1 of the mean log1p target" in houses["train"]
    # the submission: prices, clipped to the training range, its printed test score is its RMSLE
    [sub_path] = sorted((root / "subs").glob("*.csv"))
    sub = pd.read_csv(sub_path)
    truth = pd.read_csv(root / "in" / "solution.csv").set_index("id").loc[sub["id"], "price"].to_numpy(float)
    assert sub["price"].min() >= train["price"].min() - 1e-6 and sub["price"].max() <= train["price"].max() + 1e-6
    assert f"test rmsle: {rmsle(truth, sub['price'].to_numpy(float)):.5f}" in out
    # the bundle's runners and --image write the same prices: the torch runner byte for byte; the ONNX runner's
    # own numpy preprocessing moves a price by about 3e-4 of itself (an output error in log units is relative)
    assert (root / "offline_torch.csv").read_bytes() == sub_path.read_bytes()
    other = pd.read_csv(root / "offline_onnx.csv")
    assert other["id"].tolist() == sub["id"].tolist() and np.allclose(other["price"], sub["price"], rtol=2e-3)
    row = sub.iloc[0]
    img = kit("predict.py", *houses["dirs"], "--image", str(root / "in" / "test" / f"{row['id']}.png")).stdout
    said = float(img.split("predicted value: ")[1].split()[0])
    assert said == pytest.approx(float(row["price"]), rel=1e-3), img
