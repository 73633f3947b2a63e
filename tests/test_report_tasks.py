"""The CV report of multi-label and regression experiments, on real data.

Multi-label: the Planet sample's 1,000 real tag sets (17 tags), 30 of them with a planted error ('clear'
replaced by 'cloudy'); out-of-fold sigmoid probabilities of a real model (one logistic regression per tag
on colour statistics of the 32 px images, 5 folds). Regression: 800 UTKFace faces with their real ages,
out-of-fold predictions of a ridge regression on 24 px grey pixels. The experiment folders are written
as training writes them (config.json with `reading`, oof/log/fold files), then `write_report` runs as
predict.py calls it.
"""
import json
import re

import numpy as np
import pandas as pd
import pytest

from conftest import need_shared, write_png
from foldkit.experiment import Experiment
from foldkit.train.fit import oof_frame, write_csv
from foldkit.report.html import write_report

N_FLIP = 30
RAW = ["{", "}", '"', "cv_", "_in_sample", "_nested", "label_thresholds", "prob_", "all_rows", "mean_baseline",
       "row_f1", "share_of", "tags_per_row", "valid_metric"]


def visible_text(html_text):
    """What a reader sees: tags, styles and data URIs dropped, links to the files beside the page too."""
    text = re.sub(r"<style>.*?</style>|<a [^>]*>.*?</a>", " ", html_text, flags=re.S)
    return re.sub(r"<[^>]+>", " ", text)


def write_experiment(exp, task, sep, classes, metric, frames, n_folds, metric_values):
    """models/<exp>/ as training leaves it: config.json, and per fold oof, log and the files that mark it
    finished (fold{k}.json, fold{k}.pt)."""
    exp.mkdir(parents=True)
    (exp / "config.json").write_text(json.dumps({
        "metric": metric, "classes": classes, "model": "resnet18", "experiment": exp.name, "n_folds": n_folds,
        "reading": {"task": task, "label_sep": sep}}))
    for k, frame in frames.items():
        write_csv(frame, Experiment(exp).oof(k))
        v = metric_values[k]
        pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.6, 0.4, 0.3], "valid_loss": [0.5, 0.45, 0.47],
                      "train_accuracy": np.nan, "valid_accuracy": np.nan, "valid_metric": [v * 0.8, v, v * 0.95],
                      "lr": [1e-3] * 3, "seconds": [2.0] * 3}).to_csv(Experiment(exp).log(k), index=False)
        write_png(Experiment(exp).curve(k), np.full((20, 30, 3), 255, np.uint8))     # training draws one per fold
        Experiment(exp).summary_path(k).write_text(json.dumps({"best_epoch": 2, "value": v}))
        Experiment(exp).checkpoint(k).write_bytes(b"")
    return exp


@pytest.fixture(scope="module")
def planet(tmp_path_factory):
    """The Planet sample with 30 planted tag errors, 5-fold OOF probabilities, written as an experiment."""
    import cv2
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold
    from sklearn.preprocessing import StandardScaler

    from foldkit.tags import multi_hot, tag_names
    root = need_shared("data", "planet_sample")
    labels = pd.read_csv(root / "labels.csv", dtype=str)
    images = {n: cv2.cvtColor(cv2.imread(str(root / "train" / f"{n}.jpg"), cv2.IMREAD_REDUCED_COLOR_8),
                              cv2.COLOR_BGR2RGB) for n in labels["image_name"]}
    classes = tag_names(labels["tags"], " ")
    y = multi_hot(labels["tags"], " ", classes).astype(int)
    rng = np.random.default_rng(0)
    flipped = rng.choice(np.flatnonzero(y[:, classes.index("clear")]), N_FLIP, replace=False)
    y[flipped, classes.index("clear")], y[flipped, classes.index("cloudy")] = 0, 1
    tags = [" ".join(c for c, on in zip(classes, row) if on) for row in y]

    def features(im):
        hsv = cv2.cvtColor(im, cv2.COLOR_RGB2HSV)
        stats = [f(x.reshape(-1, 3), axis=0) for x in (im, hsv) for f in (np.mean, np.std)]
        stats += [np.percentile(x.reshape(-1, 3), q, axis=0) for x in (im, hsv) for q in (10, 50, 90)]
        grey = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY).astype(float)
        return np.concatenate(stats + [[np.abs(np.diff(grey, axis=a)).mean() for a in (0, 1)]])

    x = StandardScaler().fit_transform(np.array([features(images[n]) for n in labels["image_name"]]))
    probs, fold = np.zeros(y.shape), np.zeros(len(y), int)
    for k, (tr, va) in enumerate(KFold(5, shuffle=True, random_state=0).split(x)):
        fold[va] = k
        for j in range(len(classes)):
            probs[va, j] = (y[tr, j].mean() if y[tr, j].min() == y[tr, j].max() else
                            LogisticRegression(solver="liblinear").fit(x[tr], y[tr, j]).predict_proba(x[va])[:, 1])
    ids = labels["image_name"].to_numpy()
    meta = {"classes": classes, "label_sep": " "}
    frames = {k: oof_frame(ids[fold == k], k, np.array(tags)[fold == k], probs[fold == k], classes, "multilabel", meta)
              for k in range(5)}
    exp = write_experiment(tmp_path_factory.mktemp("planet") / "models" / "planet", "multilabel", " ", classes,
                           "f2_samples", frames, 5, {k: 0.8 + 0.01 * k for k in range(5)})
    return {"exp": exp, "classes": classes, "images": images, "flipped": set(ids[flipped]), "y": y}


def _plan_extra(exp, classes):
    """What predict.py records in `extra` for a lone multi-label experiment with per-label thresholds:
    the thresholds fitted on its OOF rows by the kit's own post-processing, described as the plan does."""
    from foldkit.predict.calibrate import POSTPROCESS
    from foldkit.oof import load_oof, oof_arrays
    oof, _ = load_oof(exp)
    y, p = oof_arrays(oof, classes, "multilabel", " ")
    step = POSTPROCESS["label_thresholds"]
    t = step.fit(p, y, "f2_samples")
    return {"plan": {"blend": "mean", "weights": {exp.name: 1.0}, "label_thresholds": step.describe(t)},
            "cv_final_nested": 0.81, "cv_final_in_sample": 0.82, "cv_rows": len(oof)}, np.asarray(t)


@pytest.fixture(scope="module")
def planet_report(planet, tmp_path_factory):
    """The Planet experiment's report as predict.py writes it: its plan with per-label thresholds (recorded,
    and the cut its `pred` and CV are read at), the images, a stand-in Grad-CAM that records what it is
    asked to explain."""
    exp = planet["exp"]
    extra, thresholds = _plan_extra(exp, planet["classes"])
    asked = []

    def heatmap(row):
        asked.append(row.pred)
        return np.zeros((8, 8, 3), np.uint8)

    rep = tmp_path_factory.mktemp("planet_report")
    from foldkit.predict.calibrate import apply_label_thresholds
    out = write_report(exp, rep, load_image=planet["images"].__getitem__, extra=extra, heatmap=heatmap,
                       folds=Experiment(exp).finished_folds(), cut=lambda p: apply_label_thresholds(p, thresholds))
    return rep, out, thresholds, asked


def test_multilabel_report_per_label_numbers_equal_sklearn(planet, planet_report):
    from sklearn.metrics import average_precision_score, f1_score, fbeta_score, precision_recall_fscore_support

    from foldkit.tags import multi_hot
    classes = planet["classes"]
    rep, out, thresholds, asked = planet_report
    for name in ("oof.csv", "cv_scores.json", "per_label.csv", "cooccurrence.csv", "cooccurrence.png",
                 "worst_errors.csv", "worst_errors.png", "label_errors.csv", "label_errors.png", "fold_scores.png",
                 "curves.png", "report.html"):
        assert (rep / name).is_file() and name in out["paths"], name
    assert not (rep / "confusion.csv").exists() and not (rep / "per_class.csv").exists()

    oof = pd.read_csv(rep / "oof.csv", dtype={"label": str, "pred": str}, keep_default_na=False)
    y = multi_hot(oof["label"], " ", classes).astype(int)
    yhat = multi_hot(oof["pred"], " ", classes).astype(int)
    p = oof[[f"prob_{c}" for c in classes]].to_numpy()
    assert (y.sum(0) == planet["y"].sum(0)).all()                       # the real tags, planted errors included
    assert (yhat == (p >= thresholds)).all() and (yhat != (p >= 0.5)).any()   # cut where the submission is
    s = json.loads((rep / "cv_scores.json").read_text())
    assert s["cv"] == pytest.approx(fbeta_score(y, yhat, beta=2, average="samples", zero_division=0))
    assert s["all_rows"]["f1_samples"] == pytest.approx(f1_score(y, yhat, average="samples", zero_division=0))
    assert s["tags_per_row"] == pytest.approx(y.sum(1).mean())

    t = pd.read_csv(rep / "per_label.csv", index_col="label")
    labels = t.drop(index=["micro avg", "macro avg"])
    assert labels["positives"].is_monotonic_decreasing and len(labels) == 17
    order = [classes.index(c) for c in labels.index]
    prec, rec, f1, pos = precision_recall_fscore_support(y, yhat, average=None, zero_division=0)
    assert labels["positives"].tolist() == pos[order].tolist()
    assert labels["precision"].to_numpy() == pytest.approx(prec[order])
    assert labels["recall"].to_numpy() == pytest.approx(rec[order])
    assert labels["f1"].to_numpy() == pytest.approx(f1[order])
    assert labels["average_precision"].to_numpy() == pytest.approx(
        [average_precision_score(y[:, j], p[:, j]) for j in order])
    assert labels["missed"].tolist() == ((y == 1) & (yhat == 0)).sum(0)[order].tolist()
    assert t.loc["micro avg", "f1"] == pytest.approx(f1_score(y, yhat, average="micro"))
    for avg in ("micro avg", "macro avg"):           # the averages count every label's tags once
        assert t.loc[avg, ["positives", "missed"]].tolist() == [y.sum(), ((y == 1) & (yhat == 0)).sum()]
    assert t.loc["macro avg", "f1"] == pytest.approx(f1_score(y, yhat, average="macro", zero_division=0))
    assert labels["threshold"].to_numpy() == pytest.approx(np.round(thresholds[order], 4))
    assert labels["f1_at_threshold"].to_numpy() == pytest.approx(
        f1_score(y, p >= np.round(thresholds, 4), average=None, zero_division=0)[order])

    co = pd.read_csv(rep / "cooccurrence.csv", index_col="label")
    assert (np.diag(co.to_numpy()) == pos).all() and (co.to_numpy() == co.to_numpy().T).all()
    both = ((y[:, classes.index("clear")] == 1) & (y[:, classes.index("primary")] == 1)).sum()
    assert co.loc["clear", "primary"] == both > 500

    worst = pd.read_csv(rep / "worst_errors.csv", dtype=str, keep_default_na=False)
    assert pd.to_numeric(worst["row_f1"]).is_monotonic_increasing and len(worst) == 16
    for r in worst.itertuples():           # missed / extra are exactly the set differences
        given, pred = set(r.label.split()), set(r.pred.split())
        assert set(r.missed.split()) == given - pred and set(r.extra.split()) == pred - given
    assert asked[:16] == worst["focus"].tolist() and set(asked) <= set(classes)   # one tag per Grad-CAM

    html_text = (rep / "report.html").read_text()
    text = visible_text(html_text)
    assert [raw for raw in RAW if raw in text] == []
    first = html_text[:html_text.index("<h2>")]
    assert f"CV f2_samples {s['cv_mean']:.4f} ± {s['cv_std']:.4f}" in first and f"{s['cv']:.4f}" in first
    assert "17 labels (multi-label" in first and "On all rows: f1_macro" in first
    assert "post-processed by label thresholds (17 per-label thresholds from" in first
    assert "Per label" in text and "Tags given together" in text and "Suspected label errors" in text
    assert "Grad-CAM heatmap of the wrong tag" in html_text


def test_planted_tag_errors_are_found_and_named(planet, tmp_path):
    """cleanlab's multi-label confident learning finds most of the 30 'clear' -> 'cloudy' errors and names
    the tags in doubt; the rows and their order are those of cleanlab's own find_label_issues."""
    from cleanlab.multilabel_classification.filter import find_label_issues

    from foldkit.report.label_noise import suspected_tag_errors
    from foldkit.oof import load_oof
    oof, classes = load_oof(planet["exp"])
    table = suspected_tag_errors(oof, classes, " ")
    labels = [[classes.index(t) for t in tags.split()] for tags in oof["label"]]
    ranked = find_label_issues(labels, oof[[f"prob_{c}" for c in classes]].to_numpy(),
                               return_indices_ranked_by="self_confidence")
    assert table["id"].tolist() == oof["id"].to_numpy()[ranked].tolist()
    found = table[table["id"].isin(planet["flipped"])]
    assert len(found) >= 0.8 * N_FLIP, len(found)
    named = found["doubtful"].str.contains("cloudy") | found["missing"].str.contains("clear")
    assert named.mean() >= 0.8, found[["label", "doubtful", "missing"]]
    assert found["rank"].median() < len(table) / 2          # planted errors rank high among the suspects
    assert table["quality"].is_monotonic_increasing and table["rank"].tolist() == list(range(1, len(table) + 1))


@pytest.fixture(scope="module")
def ages(tmp_path_factory):
    """800 UTKFace faces with their real ages; 5-fold OOF predictions of a ridge regression on 24 px grey
    pixels, written as a regression experiment (metric rmse)."""
    import cv2
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold

    from foldkit.tasks import TargetScale
    files = sorted(need_shared("data", "utkface", "crop_part1").iterdir())
    files = [files[i] for i in np.random.default_rng(0).choice(len(files), 800, replace=False)]
    age = np.array([int(f.name.split("_")[0]) for f in files], float)
    faces = {f.name: cv2.resize(cv2.imread(str(f), cv2.IMREAD_REDUCED_GRAYSCALE_4), (24, 24),
                                interpolation=cv2.INTER_AREA) for f in files}
    x = np.array([faces[f.name].ravel() / 255 for f in files])
    ids, frames, values = np.array([f.name for f in files]), {}, {}
    for k, (tr, va) in enumerate(KFold(5, shuffle=True, random_state=0).split(x)):
        scale = TargetScale.fit(age[tr])       # trained on the standardised target, as the kit trains
        out = Ridge(alpha=30.0).fit(x[tr], (age[tr] - scale.mean) / scale.std).predict(x[va])[:, None]
        frames[k] = oof_frame(ids[va], k, age[va], out, [], "regression", scale=scale)
        values[k] = float(np.sqrt(np.mean((frames[k]["pred"] - age[va]) ** 2)))
    exp = write_experiment(tmp_path_factory.mktemp("utk") / "models" / "ages", "regression", "", [], "rmse",
                           frames, 5, values)
    return {"exp": exp, "faces": faces, "age": dict(zip(ids, age))}


@pytest.fixture(scope="module")
def ages_report(ages, tmp_path_factory):
    """The UTKFace experiment's report with a test score and a stand-in Grad-CAM (regression has none)."""
    rep = tmp_path_factory.mktemp("ages_report")
    out = write_report(ages["exp"], rep, load_image=ages["faces"].__getitem__, test_score=11.5,
                       heatmap=lambda row: np.zeros((8, 8, 3), np.uint8))
    return rep, out


def test_regression_report_scatter_residuals_and_worst_errors(ages, ages_report):
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    rep, out = ages_report
    for name in ("oof.csv", "cv_scores.json", "residuals.csv", "residuals.png", "scatter.png", "worst_errors.csv",
                 "worst_errors.png", "fold_scores.png", "curves.png", "report.html"):
        assert (rep / name).is_file() and name in out["paths"], name
        assert not name.endswith(".png") or (rep / name).read_bytes()[:4] == b"\x89PNG", name
    assert not (rep / "label_errors.csv").exists()

    oof = pd.read_csv(rep / "oof.csv", dtype={"id": str})
    assert oof["label"].tolist() == [ages["age"][i] for i in oof["id"]]          # the real ages
    err = oof["pred"] - oof["label"]
    s = json.loads((rep / "cv_scores.json").read_text())
    assert s["cv"] == pytest.approx(np.sqrt(mean_squared_error(oof["label"], oof["pred"])))
    assert s["all_rows"]["mae"] == pytest.approx(mean_absolute_error(oof["label"], oof["pred"]))
    assert s["cv"] < s["mean_baseline"]["rmse"]          # the model beats predicting the mean age

    bins = pd.read_csv(rep / "residuals.csv")
    assert bins["rows"].sum() == len(oof) and 5 <= len(bins) <= 10
    for b in bins.itertuples():            # each bin's figures from the rows whose age is in its range
        lo, hi = (float(v) for v in (b.range.split(" to ") * 2)[:2])     # "7" is a bin of one value
        m = oof["label"].between(lo, hi)
        assert m.sum() == b.rows and b.mean_error == pytest.approx(err[m].mean())
        assert b.mae == pytest.approx(mean_absolute_error(oof["label"][m], oof["pred"][m]))
    assert bins["mean_error"].iloc[0] > 0 > bins["mean_error"].iloc[-1]    # ridge pulls ages toward the mean

    worst = pd.read_csv(rep / "worst_errors.csv", dtype={"id": str})
    assert worst["error"].abs().tolist() == sorted(err.abs(), reverse=True)[:16]
    assert worst["error"].to_numpy() == pytest.approx((worst["pred"] - worst["label"]).to_numpy())

    html_text = (rep / "report.html").read_text()
    text = visible_text(html_text)
    assert [raw for raw in RAW if raw in text] == []
    first = html_text[:html_text.index("<h2>")]
    assert f"CV rmse {s['cv_mean']:.4f} ± {s['cv_std']:.4f}" in first and "a numeric target from" in first
    assert "Predicting the mean target of the other folds scores rmse" in first and "11.50000" in first
    assert "Predictions are pulled toward the mean" in text and "Not searched for a numeric target" in text
    assert "no Grad-CAM heatmaps: they explain a class" in text


def test_a_120_label_page_stays_compact(tmp_path):
    """120 labels: no co-occurrence figure but the most frequent pairs, and the per-label table shows the
    20 labels losing the most tags; every label stays in the CSVs."""
    rng = np.random.default_rng(0)
    classes = [f"tag{i:03d}" for i in range(120)]
    freq = np.linspace(0.3, 0.01, 120)
    frames = {}
    for k in (0, 1):
        y = rng.random((150, 120)) < freq
        p = np.clip(y * 0.4 + rng.random((150, 120)) * 0.6, 0, 1)     # some wrong tags both ways
        tags = [" ".join(c for c, on in zip(classes, row) if on) for row in y]
        frames[k] = oof_frame([f"{k}_{i}" for i in range(150)], k, tags, p, classes, "multilabel",
                              {"classes": classes, "label_sep": " "})
    exp = write_experiment(tmp_path / "models" / "many", "multilabel", " ", classes, "f1_micro", frames, 2,
                           {0: 0.5, 1: 0.5})
    write_report(exp, tmp_path / "rep")
    html_text = (tmp_path / "rep" / "report.html").read_text()
    rows = [len(re.findall(r"<tr", t)) for t in re.findall(r"<table.*?</table>", html_text, flags=re.S)]
    assert max(rows) <= 2 + 20 + 2, rows        # two header rows, 20 labels, micro and macro averages
    assert "The 20 labels with the most wrong tags, of 120" in html_text
    assert "pairs given together most often, of 120 labels" in html_text
    assert not (tmp_path / "rep" / "cooccurrence.png").exists()
    assert pd.read_csv(tmp_path / "rep" / "per_label.csv").shape[0] == 122
    assert pd.read_csv(tmp_path / "rep" / "cooccurrence.csv").shape == (120, 121)


def test_both_pages_read_in_a_browser(planet_report, ages_report, tmp_path):
    """As a person sees them (headless Chromium): every image loads, the CV headline is on the first
    screen, and no JSON or internal key is visible."""
    from browser import RAW as BROWSER_RAW
    from browser import render

    # multi-label: fold chart, curves, co-occurrence, worst errors, suspected label errors;
    # regression: fold chart, curves, scatter, residuals, worst errors
    for name, rep, images in (("ml", planet_report[0], 5), ("reg", ages_report[0], 5)):
        (tmp_path / name).mkdir()
        seen = render(rep / "report.html", tmp_path / name)
        assert seen["images"] == images and seen["broken"] == [], (name, seen["images"], seen["broken"])
        assert seen["headline"].startswith("CV f2_samples" if name == "ml" else "CV rmse")
        assert seen["headline_bottom"] < seen["height"]
        assert [raw for raw in BROWSER_RAW + RAW if raw in seen["text_without_files"]] == [], name
