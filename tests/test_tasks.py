"""Multi-label and regression competitions (issue 16): the task kind detected when reading and recorded
in folds_meta.json, the folds of both kinds, the training losses and post-processing, and the settings that
do not fit a task kind refused in one line (the end-to-end runs: tests/test_task_competitions.py).

Real data: 80 images of the Planet sample (space-separated tags, shrunk to 48 px), real digits rotated by
a known angle (a fractional regression target), 120 UTKFace faces (integer ages)."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import REPO, need_shared, write_png
from foldkit import config
from foldkit.data.reading import InputError, read_competition
from foldkit.folds.file import FoldsError, make_folds, read_folds


def quiet(*_):
    pass


def cfg_for(root, **kw):
    return config.resolve({"input_dir": str(root / "in"), "folds_dir": str(root / "folds"),
                           "models_dir": str(root / "models"), "n_folds": 4, **kw})


@pytest.fixture(scope="module")
def planet(tmp_path_factory):
    """80 Planet images (48 px) with their real tags; a tag-less row; a group column."""
    src = need_shared("data", "planet_sample")
    root = tmp_path_factory.mktemp("planet")
    labels = pd.read_csv(src / "labels.csv", dtype=str).head(80)
    for name in labels["image_name"]:
        img = cv2.imread(str(src / "train" / f"{name}.jpg"))
        write_png(root / "in" / "train" / f"{name}.png", cv2.resize(img, (48, 48), interpolation=cv2.INTER_AREA))
    labels.loc[5, "tags"] = ""                      # an image with no tag is valid
    labels["site"] = [f"s{i // 4}" for i in range(len(labels))]
    labels.to_csv(root / "in" / "train.csv", index=False)
    return root


@pytest.fixture(scope="module")
def rotated(tmp_path_factory):
    """Real digits each rotated by a known angle: train.csv id,angle (fractional degrees)."""
    from foldkit.data.demo import digit_images
    root = tmp_path_factory.mktemp("rotated")
    x, _ = digit_images(32)
    angles = np.round(np.random.default_rng(0).uniform(-45, 45, 60), 2)
    for i, a in enumerate(angles):
        m = cv2.getRotationMatrix2D((16, 16), float(a), 1.0)
        write_png(root / "in" / "train" / f"r{i}.png", cv2.warpAffine(x[i], m, (32, 32)))
    pd.DataFrame({"id": [f"r{i}" for i in range(60)], "angle": angles}).to_csv(root / "in" / "train.csv", index=False)
    return root


def test_tags_column_is_multilabel_with_folds_stratified_per_label(planet):
    meta = make_folds(cfg_for(planet), log=quiet)
    assert meta["task"] == "multilabel" and meta["label_sep"] == " "
    assert meta["reading"]["task"] == "multilabel" and meta["reading"]["label_sep"] == " "
    assert meta["splitter"] == "MultilabelStratifiedKFold" and "primary" in meta["classes"]
    table, saved = read_folds(planet / "folds")
    src = pd.read_csv(planet / "in" / "train.csv", dtype=str, keep_default_na=False)
    assert table["label"].tolist() == src["tags"].tolist()          # the user's text, '' included
    assert saved["task"] == "multilabel" and sorted(table["fold"].unique()) == [0, 1, 2, 3]
    counts = pd.read_csv(planet / "folds" / "fold_counts.csv", index_col=0)
    assert list(counts.columns) == meta["classes"] + ["total"]
    for c in ("primary", "clear", "agriculture"):                   # frequent labels: near-even folds
        n = counts[c]
        assert n.max() - n.min() <= 2, (c, n.tolist())


def test_groups_are_honoured_by_splitting_groups(planet, tmp_path):
    cfg = config.resolve({"input_dir": str(planet / "in"), "folds_dir": str(tmp_path / "folds"),
                          "models_dir": str(tmp_path / "m"), "n_folds": 4, "group_col": "site"})
    meta = make_folds(cfg, log=quiet)
    table, _ = read_folds(tmp_path / "folds")
    assert meta["splitter"] == "MultilabelStratifiedKFold over groups"
    assert (table.groupby("site")["fold"].nunique() == 1).all()


def test_multi_hot_columns_are_multilabel_and_refused_as_single(planet, tmp_path):
    src = pd.read_csv(planet / "in" / "train.csv", dtype=str, keep_default_na=False)
    tags = sorted({t for v in src["tags"] for t in v.split()})
    hot = pd.DataFrame({"image_name": src["image_name"],
                        **{t: [int(t in v.split()) for v in src["tags"]] for t in tags}})
    comp_dir = tmp_path / "in"
    (comp_dir).mkdir()
    (comp_dir / "train").symlink_to(planet / "in" / "train")
    hot.to_csv(comp_dir / "train.csv", index=False)
    comp = read_competition(comp_dir, check_train=False)
    assert comp.task == "multilabel" and comp.classes == tags and comp.one_hot == tags
    assert [set(v.split(comp.label_sep)) - {""} for v in comp.train["label"]] == \
        [set(v.split()) for v in src["tags"]]
    with pytest.raises(InputError, match="--task single"):
        read_competition(comp_dir, check_train=False, task="single")


def test_fractional_target_is_regression_with_folds_on_quantile_bins(rotated):
    meta = make_folds(cfg_for(rotated), log=quiet)
    assert meta["task"] == "regression" and meta["classes"] == [] and meta["label_dtype"] == "float64"
    assert "quantile bins" in meta["splitter"]
    table, _ = read_folds(rotated / "folds")
    y = table["label"].to_numpy()
    assert np.allclose(y, pd.read_csv(rotated / "in" / "train.csv")["angle"])
    assert abs(meta["target"]["mean"] - y.mean()) < 1e-9
    per_fold = pd.read_csv(rotated / "folds" / "fold_counts.csv", index_col=0)
    assert list(per_fold.columns) == ["rows", "mean", "std", "min", "max"]
    assert per_fold["rows"].tolist() == [15] * 4
    assert (per_fold["min"] < -25).all() and (per_fold["max"] > 25).all()   # every fold spans the range


def test_integer_ages_are_regression_and_split_on_bins(tmp_path):
    src = need_shared("data", "utkface", "crop_part1")
    names = sorted(p.name for p in src.iterdir())[::80][:120]
    comp_dir = tmp_path / "in"
    for n in names:
        img = cv2.imread(str(src / n))
        write_png(comp_dir / "train" / f"{n.split('.')[0]}.png", cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA))
    ages = [int(n.split("_")[0]) for n in names]
    pd.DataFrame({"id": [n.split(".")[0] for n in names], "age": ages}).to_csv(comp_dir / "train.csv", index=False)
    assert read_competition(comp_dir, check_train=False).task == "regression"   # 62 ages in 120 rows
    meta = make_folds(cfg_for(tmp_path, task="regression"), log=quiet)
    assert meta["task"] == "regression" and meta["label_dtype"] == "int64"
    table, _ = read_folds(tmp_path / "folds")
    assert table["label"].tolist() == ages
    assert abs(table.groupby("fold")["label"].mean() - np.mean(ages)).max() < 0.25 * np.std(ages)


def test_class_ids_and_old_folds_files_stay_single_label(tmp_path, digits_32):
    x, _ = digits_32
    comp_dir = tmp_path / "in"
    for i in range(60):
        write_png(comp_dir / "train" / f"d{i}.png", x[i])
    pd.DataFrame({"id": [f"d{i}" for i in range(60)], "label": [i % 30 for i in range(60)]}
                 ).to_csv(comp_dir / "train.csv", index=False)
    assert read_competition(comp_dir, check_train=False).task == "single"     # 30 classes, ids 0..29
    meta = make_folds(cfg_for(tmp_path, n_folds=2), log=quiet)
    assert meta["task"] == "single" and meta["reading"]["task"] == "single"
    # a folds file written before task kinds is read as single-label, whatever --task auto would say
    from foldkit.data.reading import reading_settings
    old = {"reading": {"input_dir": str(comp_dir)}}
    assert reading_settings(config.resolve({}), old)["task"] == "single"


def test_task_flag_on_class_folders_is_refused_not_ignored(tmp_path, digits_32):
    x, y = digits_32
    for i in range(12):
        write_png(tmp_path / "in" / "train" / str(y[i]) / f"d{i}.png", x[i])
    assert read_competition(tmp_path / "in", check_train=False).task == "single"
    with pytest.raises(InputError, match="--task regression: a folder per class"):
        read_competition(tmp_path / "in", check_train=False, task="regression")


def test_rare_classes_mode_is_refused_for_other_tasks(rotated, tmp_path):
    cfg = config.resolve({"input_dir": str(rotated / "in"), "folds_dir": str(tmp_path / "f"),
                          "models_dir": str(tmp_path / "m"), "rare_classes": "train-only"})
    with pytest.raises(FoldsError, match="--rare-classes train-only is for single-label"):
        make_folds(cfg, log=quiet)


FAST = dict(model="test_resnet", img_size=32, crop_pct=1.0, hflip=False, aug="none", lr=3e-3, epochs=2,
            pretrained=False, batch_size=16, progress=False, workers=0, warmup_epochs=0.0)


def train_cfg(root, **kw):
    return config.resolve({"folds_dir": str(root / "folds"), "models_dir": str(root / "models"), **FAST, **kw})


def test_new_loss_setting_keeps_earlier_experiment_names():
    from foldkit.config import learning_settings
    from foldkit.experiment import experiment_name
    plain = config.resolve({})
    assert "loss" not in learning_settings(plain)       # earlier experiments: same identity, same name
    assert learning_settings(config.resolve({"loss": "huber"}))["loss"] == "huber"
    assert experiment_name("resnet18", 0, learning_settings(plain)) != \
        experiment_name("resnet18", 0, learning_settings(config.resolve({"loss": "huber"})))


def test_metrics_offered_per_task_kind(rotated):
    from foldkit.errors import ConfigError
    from foldkit.metrics import for_task
    from foldkit.tasks import check_settings
    assert {"f1_samples", "f2_samples", "f1_micro", "f1_macro", "map", "auc_macro"} <= set(for_task("multilabel"))
    assert set(for_task("regression")) == {"rmse", "mae", "r2", "rmsle"} and "rmse" not in for_task("single")
    assert check_settings(config.resolve({}), "regression").metric == "rmse"       # the task's default
    assert check_settings(config.resolve({}), "multilabel").metric == "f1_samples"
    for task, kw, msg in [("regression", {"metric": "accuracy"}, "does not score a regression task"),
                          ("single", {"metric": "rmse"}, "scores regression tasks"),
                          ("regression", {"mixup": 0.2}, "--mixup/--cutmix are for classification"),
                          ("regression", {"label_smoothing": 0.1}, "--label-smoothing is for classification"),
                          ("multilabel", {"balance": "sampler"}, "--balance sampler is for single-label"),
                          ("single", {"loss": "huber"}, "--loss huber is for regression")]:
        with pytest.raises(ConfigError, match=msg):
            check_settings(config.resolve(kw), task)


def test_regression_trains_on_the_standardised_target_and_writes_numbers(rotated):
    import torch
    from foldkit.train.fit import train
    make_folds(cfg_for(rotated, n_folds=2), log=quiet)
    out = train(train_cfg(rotated, fold="all", experiment="reg", loss="huber"), log=quiet)
    assert [r["metric"] for r in out] == ["rmse", "rmse"] and all(r["value"] > 0 for r in out)
    table, _ = read_folds(rotated / "folds")
    ck = torch.load(rotated / "models" / "reg" / "fold0.pt", weights_only=True)
    part = table.loc[table["fold"] != 0, "label"]
    assert ck["task"] == "regression" and ck["num_classes"] == 1 and ck["classes"] == []
    assert ck["target"]["mean"] == pytest.approx(part.mean(), rel=1e-5)
    assert ck["target"]["std"] == pytest.approx(part.std(ddof=0), rel=1e-5)
    oof = pd.read_csv(rotated / "models" / "reg" / "oof_fold0.csv")
    assert list(oof.columns) == ["id", "fold", "label", "pred"] and len(oof) == 30
    rmse = float(np.sqrt(((oof["pred"] - oof["label"]) ** 2).mean()))
    assert rmse == pytest.approx(out[0]["value"], rel=1e-4)          # scored on de-standardised numbers
    assert abs(oof["pred"].mean() - part.mean()) < 3 * part.std()    # in the target's units


def test_multilabel_trains_sigmoid_outputs_with_mixed_multi_hot_targets(planet):
    import torch
    from foldkit.train.fit import train
    make_folds(cfg_for(planet, n_folds=2), log=quiet)
    out = train(train_cfg(planet, fold="0", experiment="ml", mixup=0.4, metric="f2_samples"), log=quiet)
    assert out[0]["metric"] == "f2_samples" and 0 < out[0]["value"] <= 1
    meta = json.loads((planet / "folds" / "folds_meta.json").read_text())
    ck = torch.load(planet / "models" / "ml" / "fold0.pt", weights_only=True)
    assert ck["task"] == "multilabel" and ck["classes"] == meta["classes"] and "target" not in ck
    oof = pd.read_csv(planet / "models" / "ml" / "oof_fold0.csv", dtype={"label": str, "pred": str},
                      keep_default_na=False)
    assert list(oof.columns) == ["id", "fold", "label", "pred"] + [f"prob_{c}" for c in meta["classes"]]
    probs = oof[[f"prob_{c}" for c in meta["classes"]]].to_numpy()
    assert ((probs > 0) & (probs < 1)).all() and not np.allclose(probs.sum(1), 1)   # sigmoid, not softmax
    first = [c for c, p in zip(meta["classes"], probs[0]) if p >= 0.5]
    assert oof["pred"][0] == " ".join(first)
    # --image gives a validation image of fold 0 the sigmoid probabilities of its OOF row (no softmax over them)
    from foldkit.predict.predicting import predict_image
    img = planet / "in" / "train" / f"{oof['id'][0]}.png"
    top = predict_image(train_cfg(planet, experiments="ml", image=str(img), thresholds="off", tta="none",
                                  topk=len(meta["classes"])), log=quiet)
    got = dict(top)
    assert np.allclose([got[c] for c in meta["classes"]], probs[0], atol=1e-5)


def test_per_label_thresholds_global_first_then_per_label(planet):
    """Real Planet tags; scores whose best cut differs per label (a rare label's positives score low):
    fitted thresholds beat 0.5 on held-out rows, keep the ranking, and the step is what auto picks."""
    from foldkit.predict.blend import held_out
    from foldkit.predict.calibrate import POSTPROCESS, steps_for
    from foldkit.tags import multi_hot, tag_names
    from foldkit.metrics import score
    tags = pd.read_csv(planet / "in" / "train.csv", dtype=str, keep_default_na=False)["tags"]
    classes = tag_names(tags, " ")
    y = multi_hot(tags, " ", classes)
    rng = np.random.default_rng(0)
    rare = y.mean(0) < 0.3                  # rare labels: negatives in [0, 0.2), positives in [0.25, 0.45)
    u = rng.uniform(0, 1, y.shape)
    probs = np.where(rare, np.where(y == 1, 0.25 + 0.2 * u, 0.2 * u), np.where(y == 1, 0.55 + 0.35 * u, 0.5 * u))
    folds = np.arange(len(y)) % 4
    step = POSTPROCESS["label_thresholds"]
    nested = held_out(lambda rows: step.fit(probs[rows], y[rows], "f2_samples"),
                      lambda t, rows: step.apply(probs[rows], t), folds)
    assert score("f2_samples", y, nested) > score("f2_samples", y, probs) + 0.02
    t = step.fit(probs, y, "f2_samples")
    assert len(set(np.round(t, 3))) > 1                          # per label, not one global value
    assert score("map", y, step.apply(probs, t)) == pytest.approx(score("map", y, probs))
    from foldkit.predict.calibrate import fast_fbeta
    for m in ("f1_samples", "f2_samples", "f1_micro", "f1_macro"):        # the search's scorer is sklearn's
        for p in (probs, nested, np.zeros_like(probs)):
            assert fast_fbeta(m)(y, p) == pytest.approx(score(m, y, p), abs=1e-12), m
    assert steps_for("f2_samples", task="multilabel") == ("label_thresholds", "top_tag")
    assert steps_for("map", task="multilabel") == () and steps_for("f1_macro") == ("thresholds",)


@pytest.mark.slow
def test_cli_records_task_and_refuses_a_metric_of_another_kind(planet, tmp_path):
    run = lambda script, *a: subprocess.run([sys.executable, str(REPO / "src" / script), *a],
                                            capture_output=True, text=True, timeout=120)
    paths = ["--folds-dir", str(tmp_path / "folds"), "--models-dir", str(tmp_path / "models")]
    r = run("make_folds.py", "--input-dir", str(planet / "in"), "--n-folds", "3", *paths)
    assert r.returncode == 0, r.stderr
    assert "multi-label" in r.stdout and "MultilabelStratifiedKFold" in r.stdout
    assert json.loads((tmp_path / "folds" / "folds_meta.json").read_text())["task"] == "multilabel"
    r = run("train.py", "--fold", "0", "--model", "test_resnet", "--metric", "rmse", *paths)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("error: --metric rmse does not score a multilabel task")


# --------------------------------------------------------------------------- the task registry

def test_every_task_kind_has_every_field_and_its_methods_run():
    """The registry is the one owner: every kind names an activation of the one table, its default metric scores
    it, and each job (targets, outputs, OOF columns, losses, predictions, submission values, post-processing,
    settings) runs on a toy fold of that kind."""
    from foldkit.tasks import ACTIVATIONS, TASKS, TargetScale
    assert set(TASKS) == {"single", "multilabel", "regression"}
    meta = {"classes": ["a", "b", "c"], "label_sep": " "}
    table = {"single": pd.DataFrame({"label": ["a", "c"]}), "multilabel": pd.DataFrame({"label": ["a b", ""]}),
             "regression": pd.DataFrame({"label": [1.5, 3.0]})}
    for name, task in TASKS.items():
        assert task.name == name and task.words and task.activation in ACTIVATIONS
        assert task.default_metric in task.metrics() and task.label in ("class", "tags", "number")
        assert "label" in task.submission_modes and set(task.submission_modes) <= {"label", "probs"}
        y = task.targets(table[name], meta)
        n = task.n_outputs(meta["classes"])
        out = ACTIVATIONS[task.activation].numpy(np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])[:, :n])
        scale = TargetScale.fit(y) if task.standardises else None
        assert len(y) == 2 and np.isfinite(task.valid_loss(out, y, scale))
        cols = task.oof_columns(meta, out, scale)
        assert "pred" in cols and all(len(v) == 2 for v in cols.values())
        pred = task.to_predictions(out, scale.to_json() if scale else None)
        assert len(task.label_values(pred, meta["classes"], " ")) == 2
        assert task.describe(meta["classes"])
        assert set(task.post_steps(task.default_metric, "auto", "auto", "auto")) <= {
            "temperature", "thresholds", "cutpoints", "label_thresholds", "top_tag", "clip"}
        assert task.check_settings(config.resolve({"metric": task.default_metric})).metric == task.default_metric
        task.check_combination("mean", "mean")


def test_one_activation_table_for_torch_and_numpy():
    """tasks.ACTIVATIONS is the only table: runtime.device (torch) and the ONNX runner (numpy) read it, and
    its two functions agree."""
    import torch

    from foldkit import ensemble
    from foldkit.tasks import ACTIVATIONS, TASKS, activate
    from foldkit.runtime import device
    assert not hasattr(ensemble, "activate") and device.ACTIVATIONS is ACTIVATIONS
    z = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    for name, act in ACTIVATIONS.items():
        assert np.allclose(act.torch(torch.from_numpy(z)).numpy(), activate(z, name), atol=1e-6), name
    assert np.allclose(activate(z, TASKS["single"].activation).sum(1), 1, atol=1e-6)


@pytest.fixture
def ordinal():
    """A toy fourth task kind registered from outside the package: classes in order, scored by qwk."""
    from foldkit.tasks import TASKS, SingleLabel, register

    class Ordinal(SingleLabel):
        name, words, default_metric = "ordinal", "ordinal", "qwk"

        def metrics(self):
            return ["qwk", "accuracy"]

    yield register(Ordinal())
    TASKS.pop("ordinal")


def test_a_fourth_task_kind_is_picked_up_without_editing_other_modules(ordinal):
    """Registered once, a new kind gets the settings check, OOF columns, activation, post-processing,
    ensemble checks and the submission from its entry."""
    from foldkit.errors import ConfigError
    from foldkit.predict import submission
    from foldkit.predict.calibrate import steps_for
    from foldkit.tasks import TASKS, activate, check_settings, oof_columns
    assert check_settings(config.resolve({"metric": "qwk"}), "ordinal").metric == "qwk"
    with pytest.raises(ConfigError, match="this one is ordinal: use one of qwk, accuracy"):
        check_settings(config.resolve({"metric": "rmse"}), "ordinal")
    probs = activate(np.array([[3.0, 0.0, 0.0], [0.0, 0.0, 3.0]]), TASKS["ordinal"].activation)
    cols = oof_columns("ordinal", {"classes": [0, 1, 2], "label_sep": ""}, probs, None)
    assert cols["pred"] == [0, 2] and set(cols) == {"pred", "prob_0", "prob_1", "prob_2"}
    assert steps_for("qwk", task="ordinal") == ("cutpoints",)
    with pytest.raises(ConfigError, match="--clip on"):
        steps_for("qwk", task="ordinal", clip="on")
    TASKS["ordinal"].check_combination("geometric", "rank")      # softmax probabilities: every mode fits
    sample = pd.DataFrame({"id": ["x", "y"], "label": [0, 0]})
    assert submission.decide_mode(sample, [0, 1, 2], "auto", "qwk", "ordinal")[0] == "label"
    sub = submission.build(["y", "x"], TASKS["ordinal"].to_predictions(probs[::-1]), [0, 1, 2], sample, "label",
                           task="ordinal")
    submission.validate(sub, sample, [0, 1, 2], "label", "ordinal")
    assert sub["label"].tolist() == [0, 2]
