"""stack.py (issue 29): trees on the table + image experiments' OOF predictions, fold-safe by construction.

The key test writes a memorising image experiment by hand: each fold model knows the labels of the rows it
trained on and nothing else, so its OOF predictions (the rows it never saw) are noise while its predictions
of the other rows are the labels. Trees fed predictions from a model that saw the rows they are scored on
would reach a near-perfect CV; the stack must stay at chance."""
import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, need_shared, write_png
from foldkit import config
from foldkit.experiment import Experiment
from foldkit.folds.file import make_folds, read_folds
from foldkit.oof import cv_summary, load_oof
from foldkit.report.html import write_report
from foldkit.stack import boost, stacking
from foldkit.stack.features import StackError, choose, rows_for_test


def tiny_competition(root, n=160, seed=0):
    """A regression competition of n tiny images whose label is noise, with a table column `noise`."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        write_png(root / "train" / f"r{i:03d}.png", np.full((8, 8, 3), i % 255, np.uint8))
    pd.DataFrame({"id": [f"r{i:03d}" for i in range(n)], "target": rng.normal(size=n).round(4),
                  "noise": rng.normal(size=n)}).to_csv(root / "train.csv", index=False)
    return root


def settings(root, **kw):
    return config.resolve({"input_dir": str(root / "in"), "folds_dir": str(root / "folds"),
                           "models_dir": str(root / "models"), "submissions_dir": str(root / "subs"),
                           "n_folds": 2, "task": "regression", "booster": "sklearn", **kw})


def memorising_experiment(root, table, meta, rng):
    """models/memo: fold k's model predicts its training rows' labels exactly and noise elsewhere; its OOF
    file holds fold k's rows (noise). Returns each row's mean over the fold models (what a fold ensemble
    predicts for a training image: the leak)."""
    exp = Experiment(root / "models" / "memo")
    exp.dir.mkdir(parents=True)
    exp.config_path.write_text(json.dumps({"metric": "rmse", "folds_sha256": meta["sha256_now"], "classes": [],
                                           "n_folds": 2, "reading": {"task": "regression"},
                                           "hflip": False}))     # no flips: one view, its OOF as its test
    y, folds = table["label"].to_numpy(float), table["fold"].to_numpy()
    seen_by = []
    for k in (0, 1):
        pred = np.where(folds == k, rng.normal(size=len(y)), y)       # memorised where trained, noise elsewhere
        rows = folds == k
        pd.DataFrame({"id": table["id"][rows], "fold": k, "label": y[rows], "pred": pred[rows]}).to_csv(
            exp.oof(k), index=False)
        exp.summary_path(k).write_text("{}")
        exp.checkpoint(k).write_bytes(b"")
        seen_by.append(pred)
    return np.mean(seen_by, axis=0)


def test_a_memorising_image_model_never_reaches_the_trees_that_score_its_training_rows(tmp_path, monkeypatch):
    tiny_competition(tmp_path / "in")
    cfg = settings(tmp_path)
    make_folds(cfg, log=lambda *a: None)
    table, meta = read_folds(cfg.folds_dir)
    leaked = memorising_experiment(tmp_path, table, meta, np.random.default_rng(1))
    fitted_on = []          # (the noise values of the rows each booster was fitted on)
    real_fit = boost.fit
    monkeypatch.setattr(boost, "fit", lambda kind, x, *a: fitted_on.append(set(x[:, 0])) or real_fit(kind, x, *a))
    out = stacking.run_stack(cfg, log=lambda *a: None)
    y, folds = table["label"].to_numpy(float), table["fold"].to_numpy()
    spread = float(y.std())
    assert out["cv"]["stacked"] > 0.8 * spread and out["cv"]["image"] > 0.8 * spread, (out["cv"], spread)
    # every booster was fitted on one fold's rows (the other fold's are the ones it scores)
    noise_fold = dict(zip(table["noise"], folds))
    with_noise = [rows for rows in fitted_on if rows <= noise_fold.keys()]   # table-only and stacked boosters
    assert len(with_noise) == 4 and all(len({noise_fold[v] for v in rows}) == 1 for rows in with_noise), \
        "a booster saw the rows of both folds"
    # the same trees fed the fold ensemble's predictions of the training rows (models that saw them): near-perfect
    x = np.stack([table["noise"].to_numpy(), leaked], axis=1)
    pred, _, _ = stacking.cross_fit("sklearn", x, y, folds, [], "regression", 0, [0])
    naive = float(np.sqrt(np.mean((pred[:, 0] - y) ** 2)))
    assert naive < 0.8 * out["cv"]["stacked"], (naive, out["cv"])     # 2 folds: half of each prediction is the label
    # the stacked OOF covers every row once; its CV is its files' score
    oof, classes = load_oof(out["dir"], Experiment(out["dir"]).finished_folds())
    assert sorted(oof["id"]) == sorted(table["id"]) and oof["id"].is_unique
    assert cv_summary(oof, classes, "rmse", "regression")["cv"] == pytest.approx(out["cv"]["stacked"], rel=1e-6)
    # the report renders without logs or checkpoints and shows the three CVs and the importance table
    write_report(out["dir"], tmp_path / "report")
    assert "permutation importance" in stack_page(tmp_path / "report")


def test_the_trees_learn_on_the_image_oof_predicted_with_the_views_the_test_images_get(tmp_path):
    """An image experiment trained with flips recorded its OOF with hflip TTA (oof_tta_fold{k}.csv), as
    predict.py's --tta auto predicts its test images: the trees are fitted on those rows, not on the one-view
    OOF, and the stacked experiment records the views; predict.py then says so when asked for other views."""
    tiny_competition(tmp_path / "in")
    cfg = settings(tmp_path)
    make_folds(cfg, log=lambda *a: None)
    table, meta = read_folds(cfg.folds_dir)
    exp = Experiment(tmp_path / "models" / "img")
    exp.dir.mkdir(parents=True)
    exp.config_path.write_text(json.dumps({"metric": "rmse", "folds_sha256": meta["sha256_now"], "classes": [],
                                           "n_folds": 2, "reading": {"task": "regression"}, "hflip": True}))
    folds = table["fold"].to_numpy()
    for k in (0, 1):
        rows = table[folds == k]
        base = pd.DataFrame({"id": rows["id"], "fold": k, "label": rows["label"]})
        base.assign(pred=1.0).to_csv(exp.oof(k), index=False)                  # one view
        base.assign(pred=2.0).to_csv(exp.oof_tta(k), index=False)              # none + hflip
        exp.summary_path(k).write_text(json.dumps({"oof_tta": ["none", "hflip"]}))
        exp.checkpoint(k).write_bytes(b"")
    x_image = stacking.prepare(cfg, log=lambda *a: None)[7]
    assert np.all(x_image == 2.0)                                              # the TTA rows
    assert np.all(stacking.prepare(settings(tmp_path, tta="none"), log=lambda *a: None)[7] == 1.0)
    out = stacking.run_stack(settings(tmp_path, experiment="st"), log=lambda *a: None)
    assert json.loads((Path(out["dir"]) / "config.json").read_text())["stacked"]["tta"] == ["none", "hflip"]
    stacking.run_stack(settings(tmp_path, experiment="st"), log=lambda *a: None)      # the same settings: fitted again
    with pytest.raises(StackError, match=r"stacked experiment st exists, stacked with other tta: name this stack"):
        stacking.run_stack(settings(tmp_path, experiment="st", tta="none"), log=lambda *a: None)   # never replaced
    with pytest.raises(StackError, match=r"experiment img exists .* is an image experiment"):
        stacking.run_stack(settings(tmp_path, experiment="img"), log=lambda *a: None)
    from foldkit.oof import oof_for_plan
    said = []
    oof_for_plan(Experiment(Path(out["dir"])), ["none", "hflip"], said.append)
    assert said == []                                                          # the views it learnt on
    oof_for_plan(Experiment(Path(out["dir"])), ["none"], said.append)
    assert len(said) == 1 and "fitted on image predictions made with the TTA views none, hflip" in said[0]
    assert "Predict with --tta hflip" in said[0] and "Train a new experiment" not in said[0]


def stack_page(report_dir) -> str:
    """A stacked experiment's report.html, checked: its stacking section with the three CVs and the
    importance table (importance.csv beside it)."""
    page = (report_dir / "report.html").read_text()
    assert "Stacking: the table and the image predictions" in page and "Feature importance" in page, page[-3000:]
    for variant in ("table only", "image predictions only", "table + image predictions"):
        assert variant in page
    assert (report_dir / "importance.csv").is_file()
    return page


def test_bad_input_is_one_line_naming_the_column_or_row(tmp_path):
    table = pd.DataFrame({"id": ["a", "b", "c"], "label": [1.0, 2.0, 3.0], "fold": [0, 1, 0],
                          "path": ["train/a.png", "train/b.png", "train/c.png"], "area": [10.5, 20, None],
                          "town": ["x", "y", "x"]})
    feats = choose(table, {}, "")
    assert [(f.name, f.kind) for f in feats] == [("area", "num"), ("town", "cat")]
    with pytest.raises(StackError, match=r"'town' was asked for as numeric .* data row 1 holds 'x'"):
        choose(table, {}, "town:num")
    with pytest.raises(StackError, match=r"no feature column 'aera'.*did you mean area"):
        choose(table, {}, "aera")
    test = pd.DataFrame({"id": ["t1", "t2"], "area": ["5", "7"], "town": ["x", "z"]})
    where = tmp_path / "test.csv"
    with pytest.raises(StackError, match=r"feature column 'town' is missing"):
        rows_for_test(test.drop(columns="town"), "id", ["t1", "t2"], feats, where)
    with pytest.raises(StackError, match=r"test id 't3' has no row"):
        rows_for_test(test, "id", ["t1", "t3"], feats, where)
    with pytest.raises(StackError, match=r"numeric feature column 'area' holds 'big' for test id 't2'"):
        rows_for_test(test.assign(area=["5", "big"]), "id", ["t1", "t2"], feats, where)
    said = []
    rows = rows_for_test(test, "id", ["t2", "t1"], feats, where, log=said.append)
    assert rows["id"].tolist() == ["t2", "t1"]
    assert len(said) == 1 and "'town'" in said[0] and "never seen in training (z): treated as missing" in said[0]


def test_a_zip_code_is_a_category_and_a_count_a_number():
    table = pd.DataFrame({"id": list("abcdef"), "bedrooms": [1, 2, 3, 4, 2, 3],
                          "zipcode": [85255, 36372, 85266, 85262, 85255, 92880]})
    assert {f.name: f.kind for f in choose(table, {}, "")} == {"bedrooms": "num", "zipcode": "cat"}


def kit(script, *args, ok=True):
    r = subprocess.run([sys.executable, str(REPO / "src" / script), *args], capture_output=True, text=True,
                       timeout=900)
    assert (r.returncode == 0) == ok, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return r


def houses_competition(tmp_path, n_train=60, n_test=20):
    """n_train real houses (frontal photo at 32 px, the table beside it) + n_test test houses with test.csv;
    the sample lists the test ids in another order than test.csv. Returns (table, the CLI's path flags)."""
    import cv2
    houses = need_shared("data", "houses")
    table = pd.read_csv(houses / "houses.csv").rename(columns={"house": "id"}).head(n_train + n_test)
    comp = tmp_path / "in"
    for split, part in (("train", table[:n_train]), ("test", table[n_train:])):
        for i in part["id"]:
            write_png(comp / split / f"{i}.png", cv2.resize(cv2.imread(str(houses / "frontal" / f"{i}.jpg")), (32, 32)))
    table[:n_train].to_csv(comp / "train.csv", index=False)
    table[n_train:].drop(columns="price").to_csv(comp / "test.csv", index=False)
    table[n_train:][["id"]][::-1].assign(price=0).to_csv(comp / "sample_submission.csv", index=False)
    paths = ["--input-dir", str(comp), "--folds-dir", str(tmp_path / "folds"), "--models-dir", str(tmp_path / "m"),
             "--submissions-dir", str(tmp_path / "subs"), "--reports-dir", str(tmp_path / "reports")]
    return table, paths


def check_submission(path, table, n_train):
    """Every test id once, in the sample's order, prices on the original scale (not standardised, not logs)."""
    sub = pd.read_csv(path)
    assert sub["id"].tolist() == table["id"][n_train:][::-1].tolist()
    price = table["price"][:n_train]
    assert sub["price"].notna().all() and sub["price"].between(price.min() / 2, price.max() * 2).all(), sub
    assert price.min() <= sub["price"].median() <= price.max()
    return sub


def test_houses_photo_and_table_stack_then_predict_py_submits_and_blends_it(tmp_path):
    """60 real houses + 20 test houses, a tiny image model on 2 folds (1 epoch, 32 px), stacked with the table:
    the stacked OOF covers every row once and its CV is its files'; stack.py's submission is predict.py's
    (`predict.py --experiments st` writes the same file), which also blends it with the image experiment; the
    report shows the stack's section; a feature missing from test.csv is one line."""
    n = 60
    table, paths = houses_competition(tmp_path, n)
    kit("make_folds.py", *paths, "--label-col", "price", "--n-folds", "2")
    kit("train.py", *paths, "--model", "test_resnet", "--no-pretrained", "--img-size", "32", "--epochs", "1",
        "--batch-size", "16", "--workers", "0", "--fold", "all", "--experiment", "img", "--no-progress",
        "--metric", "rmsle")                             # Kaggle's price metric: the trees fit log1p(price) too
    out = kit("stack.py", *paths, "--experiment", "st", "--booster", "sklearn", "--no-progress").stdout
    assert "table" in out and "image" in out and "stacked" in out and "submission:" in out, out
    oof, classes = load_oof(tmp_path / "m" / "st", [0, 1])
    assert sorted(oof["id"].astype(int)) == sorted(table["id"][:n]) and oof["id"].is_unique
    cfg = json.loads((tmp_path / "m" / "st" / "config.json").read_text())
    cv = cv_summary(oof, classes, "rmsle", "regression")["cv"]
    assert cfg["metric"] == "rmsle" and cv == pytest.approx(cfg["stacked"]["cv"]["stacked"], rel=1e-6)
    assert oof["pred"].between(table["price"].min() / 2, table["price"].max() * 2).all()     # prices, not logs
    first = check_submission(next((tmp_path / "subs").glob("st_cv*.csv")), table, n)
    assert (tmp_path / "m" / "st" / "importance.csv").is_file()
    # predict.py submits the stacked experiment alone (the same file) and blends it with an image experiment
    kit("predict.py", *paths, "--experiments", "st", "--no-progress")
    again = sorted((tmp_path / "subs").glob("st_cv*.csv"))
    assert len(again) == 2 and check_submission(again[1], table, n).equals(first)
    kit("predict.py", *paths, "--experiments", "st,img", "--no-progress")
    check_submission(next((tmp_path / "subs").glob("st+img*.csv")), table, n)
    board = kit("leaderboard.py", "--models-dir", str(tmp_path / "m"), "--submissions-dir", str(tmp_path / "subs"))
    assert "st" in board.stdout
    assert "permutation importance" in stack_page(tmp_path / "reports" / "st")      # as predict.py wrote it
    table[n:].drop(columns=["price", "area"]).to_csv(tmp_path / "in" / "test.csv", index=False)
    err = kit("predict.py", *paths, "--experiments", "st", ok=False).stderr
    assert err.startswith("error: ") and "feature column 'area' is missing" in err and err.count("\n") == 1, err


def test_rmsle_trees_fit_the_log_of_the_target_and_answer_on_its_scale():
    """A price-like target (log-normal, heavy right tail): trees fitted on log1p (what --metric rmsle asks, as
    image experiments train) score a better RMSLE out of fold than trees fitted on the raw prices, and answer
    in prices."""
    from foldkit.metrics import score
    from foldkit.stack.stacking import cross_fit, target_transform
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = np.exp(11 + 0.8 * x[:, 0] + 0.6 * rng.normal(size=400))
    folds = np.arange(400) % 2
    assert target_transform("regression", "rmsle") == "log1p" and target_transform("regression", "rmse") == "none"
    oof = {t: cross_fit("sklearn", x, y, folds, [], "regression", 0, [0], transform=t)[0][:, 0]
           for t in ("none", "log1p")}
    logged, raw = (score("rmsle", y, oof[t]) for t in ("log1p", "none"))
    assert logged < raw * 0.97, (logged, raw)
    assert np.median(oof["log1p"]) == pytest.approx(np.median(y), rel=0.3)


def test_norm_by_z_scores_within_groups_and_the_test_side_builds_the_same_rows(tmp_path):
    """--norm-by patient: each numeric feature also as its z-score within the patient's rows, from the values
    alone; a patient of one row or of one value gets 0. The test rows are built by predict's test_rows through
    the same function, their z-scores within the test table; a --norm-by column missing is one line."""
    from dataclasses import asdict
    from types import SimpleNamespace

    from foldkit.predict.stacked import table_path, test_rows
    from foldkit.stack.features import check_columns, table_matrix, table_names
    table = pd.DataFrame({"id": list("abcdef"), "label": [0, 1, 0, 1, 0, 1], "fold": [0, 1, 0, 1, 0, 1],
                          "patient": ["p1", "p1", "p1", "p2", "p3", "p3"], "size": [1.0, 2, 3, 5, 4, 4]})
    feats = choose(table, {}, "size")
    spec = {"features": [asdict(f) for f in feats], "norm_by": "patient", "target_encode": []}
    x = table_matrix(table, spec)
    assert table_names(spec, ["y"]) == ["size", "size:z_by_patient"]
    assert x[:, 1] == pytest.approx([-1.224745, 0, 1.224745, 0, 0, 0], abs=1e-6)
    with pytest.raises(StackError, match=r"--norm-by patiant: no column 'patiant'.*did you mean patient"):
        check_columns(table, {**spec, "norm_by": "patiant"}, "the folds file")
    test = pd.DataFrame({"id": ["t1", "t2", "t3"], "patient": ["p9", "p9", "p1"], "size": ["10", "30", "7"]})
    test.to_csv(tmp_path / "test.csv", index=False)
    comp = SimpleNamespace(root=tmp_path, test=pd.DataFrame({"id": ["t3", "t1", "t2"]}), id_col="id")
    path = table_path({"test_table": str(tmp_path / "test.csv")}, comp.root)
    assert test_rows(spec, path, comp).tolist() == [[7.0, 0.0], [10.0, -1.0], [30.0, 1.0]]
    test.drop(columns="patient").to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(StackError, match=r"test.csv: feature column 'patient' is missing"):
        test_rows(spec, path, comp)


def test_target_encoding_a_row_id_leaks_nothing_while_a_naive_encoding_would(tmp_path, few_trees):
    """--target-encode id (a unique id per row: pure noise) fitted inside the training folds: the stack's CV
    stays where it is without it; the same column encoded by statistics of all rows (their own labels
    included) makes trees look far better. Each fold's encoders are stored with its trees."""
    import pickle

    from sklearn.preprocessing import TargetEncoder
    tiny_competition(tmp_path / "in")
    cfg = settings(tmp_path, features="noise", booster="auto")     # LightGBM when installed: fast
    make_folds(cfg, log=lambda *a: None)
    table, meta = read_folds(cfg.folds_dir)
    memorising_experiment(tmp_path, table, meta, np.random.default_rng(1))
    plain = stacking.run_stack(config.with_settings(cfg, experiment="plain"), log=lambda *a: None)
    said = []
    encoded = stacking.run_stack(config.with_settings(cfg, experiment="te", target_encode="id"), log=said.append)
    assert "target-encoded id" in said[0]
    assert encoded["cv"]["table"] == pytest.approx(plain["cv"]["table"], rel=0.1), (encoded["cv"], plain["cv"])
    assert encoded["cv"]["stacked"] == pytest.approx(plain["cv"]["stacked"], rel=0.1), (encoded["cv"], plain["cv"])
    spec = pickle.loads(Experiment(tmp_path / "models" / "te").trees(0).read_bytes())
    assert spec["target_encode"] == ["id"] and len(spec["encoders"]) == 1
    y, folds = table["label"].to_numpy(float), table["fold"].to_numpy()
    naive = TargetEncoder(target_type="continuous").fit(table[["id"]], y).transform(table[["id"]])
    x = np.concatenate([table[["noise"]].to_numpy(float), naive], axis=1)
    pred = stacking.cross_fit(boost.available(), x, y, folds, [], "regression", 0, [0])[0]
    assert float(np.sqrt(np.mean((pred[:, 0] - y) ** 2))) < 0.8 * encoded["cv"]["table"]


def synthetic_classes(n, n_classes, seed=0):
    """A table of n rows: `town` (400 values, each leaning to one class), `x` (a weak signal) and the class."""
    rng = np.random.default_rng(seed)
    lean = rng.integers(0, n_classes, size=400)
    town = rng.integers(0, 400, size=n)
    y = np.where(rng.random(n) < 0.7, lean[town], rng.integers(0, n_classes, size=n))
    return pd.DataFrame({"town": [f"t{t}" for t in town], "x": y + rng.normal(scale=2, size=n)}), y


@pytest.fixture
def few_trees(monkeypatch):
    """At most 200 trees, 20 of patience: the synthetic tests' boosters stop in seconds on a loaded CPU."""
    monkeypatch.setattr(boost, "MAX_TREES", 200)
    monkeypatch.setattr(boost, "PATIENCE", 20)


def test_a_category_of_many_values_is_refused_toward_target_encoding_which_learns_it(few_trees):
    """A 400-valued town (more than a category may hold) is refused with the way out (--target-encode town);
    target-encoded per class inside the training folds, it makes the trees better than x alone."""
    from foldkit.metrics import score
    frame, y = synthetic_classes(900, 3)
    with pytest.raises(StackError, match=r"'town' has \d+ distinct values .*\(--target-encode town\)"):
        choose(frame, {}, "town:cat")
    folds, x = np.arange(len(y)) % 3, frame[["x"]].to_numpy()
    values = frame[["town"]].to_numpy(dtype=object)
    te = stacking.TargetEncoding(values, stacking.encoding_targets("single", y, 3, "none"), 1, 0)
    with_te = stacking.cross_fit(boost.available(), x, y, folds, [], "single", 3, [0], te=te)[0]
    without = stacking.cross_fit(boost.available(), x, y, folds, [], "single", 3, [0])[0]
    assert sorted(te.encoders) == [0, 1, 2] and len(te.encoders[0]) == 3          # per fold, per class
    assert score("accuracy", y, with_te) > score("accuracy", y, without) + 0.1


@pytest.mark.parametrize("kind", ["xgboost", "catboost"])
def test_xgboost_and_catboost_fit_every_task_kind(kind, few_trees):
    """--booster xgboost / catboost: early stopping on the inner split, predictions in each task's shape
    (regression, two classes, three, multi-label), a categorical column, the importance per feature."""
    pytest.importorskip(kind)
    rng = np.random.default_rng(0)
    n = 240
    x = np.stack([rng.normal(size=n), rng.integers(0, 4, size=n).astype(float)], axis=1)
    x[::17, 1] = np.nan
    folds = np.arange(n) % 2
    signal = x[:, 0] + np.nan_to_num(x[:, 1]) / 2 + rng.normal(size=n)      # noisy: early stopping stops early
    cases = {"regression": (signal, 0, (n, 1)), "single": ((signal > 0.7).astype(int), 2, (n, 2)),
             "multilabel": (np.stack([signal > 0.7, x[:, 0] < 0], axis=1).astype(float), 2, (n, 2))}
    cases["three"] = (np.digitize(signal, [0, 1]), 3, (n, 3))
    for task, (y, n_classes, shape) in cases.items():
        oof, gain, fitted = stacking.cross_fit(kind, x, y, folds, [1], "single" if task == "three" else task,
                                               n_classes, [0])
        assert oof.shape == shape and np.isfinite(oof).all() and gain.shape == (2,) and gain[0] > 0, task
        assert all(m.kind == kind and m.trees >= 1 for per_label in fitted[0] for m in per_label)
    assert np.corrcoef(oof.argmax(1), cases["three"][0])[0, 1] > 0.3


def test_a_booster_not_installed_is_one_line(monkeypatch):
    monkeypatch.setattr(boost.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(StackError, match=r"--booster xgboost: xgboost is not installed: pip install xgboost"):
        boost.resolve("xgboost")
    assert boost.resolve("hgb") == "sklearn" and boost.resolve("auto") == "sklearn"


def test_a_binary_f1_stack_prints_the_cv_the_report_and_leaderboard_read(tmp_path, monkeypatch, capsys, few_trees):
    """F1 of two classes is read at the threshold fitted on the rows scored (the report, the leaderboard):
    stack.py prints that CV, not the one at 0.5."""
    from foldkit import cli
    from foldkit.predict import predicting
    from foldkit.oof import score_text
    from foldkit.predict.calibrate import cv_scorer
    rng = np.random.default_rng(0)
    n = 200
    root = tmp_path / "in"
    for i in range(n):
        write_png(root / "train" / f"r{i:03d}.png", np.zeros((8, 8, 3), np.uint8))
    y = (rng.random(n) < 0.2).astype(int)
    pd.DataFrame({"id": [f"r{i:03d}" for i in range(n)], "target": y,
                  "x": y * 0.8 + rng.normal(size=n)}).to_csv(root / "train.csv", index=False)
    cfg = settings(tmp_path, task="single")
    make_folds(cfg, log=lambda *a: None)
    table, meta = read_folds(cfg.folds_dir)
    exp = Experiment(tmp_path / "models" / "img")
    exp.dir.mkdir(parents=True)
    exp.config_path.write_text(json.dumps({"metric": "f1", "folds_sha256": meta["sha256_now"], "n_folds": 2,
                                           "classes": meta["classes"], "reading": {"task": "single"}}))
    label = table["label"].astype(int).to_numpy()
    p1 = np.clip(0.15 + 0.2 * label + rng.normal(scale=0.15, size=n), 0.01, 0.99)
    for k in (0, 1):
        rows = (table["fold"] == k).to_numpy()
        pd.DataFrame({"id": table["id"][rows], "fold": k, "label": table["label"][rows], "pred": 0,
                      "prob_0": 1 - p1[rows], "prob_1": p1[rows]}).to_csv(exp.oof(k), index=False)
        exp.summary_path(k).write_text("{}")
        exp.checkpoint(k).write_bytes(b"")
    monkeypatch.setattr(predicting, "run_predict", lambda *a, **kw: {})
    flags = ["--input-dir", str(root), "--folds-dir", cfg.folds_dir, "--models-dir", cfg.models_dir,
             "--booster", "auto", "--experiment", "st"]
    out = cli.run_command("stack", flags, prog="stack.py")
    printed = capsys.readouterr().out
    oof, classes = load_oof(tmp_path / "models" / "st", [0, 1])
    fitted = cv_summary(oof, classes, "f1", "single", "", cv_scorer("f1", "single", 2))["cv"]
    at_half = cv_summary(oof, classes, "f1", "single")["cv"]
    assert out["cv"]["stacked"] == pytest.approx(fitted) and out["cv_file"] == pytest.approx(fitted)
    assert fitted > at_half, (fitted, at_half)          # the plain reading at 0.5 is another, lower figure
    assert f"stacked trees: CV f1 {score_text(fitted)}" in printed and f"stacked  {score_text(fitted)}" in printed
