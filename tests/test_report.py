"""The CV report on a tiny hand-checkable experiment: 2 folds, 3 classes, 8 OOF rows.

Row (fold, true class index, probabilities) -> argmax prediction:

  fold 0: r3 (0, .70 .20 .10) -> 0 ok     fold 1: r6 (2, .05 .90 .05) -> 1 WRONG (0.90)
          r1 (1, .10 .80 .10) -> 1 ok             r2 (1, .20 .70 .10) -> 1 ok
          r7 (2, .10 .60 .30) -> 1 WRONG (0.60)   r5 (0, .25 .05 .70) -> 2 WRONG (0.70)
          r0 (0, .60 .30 .10) -> 0 ok             r4 (2, .10 .10 .80) -> 2 ok

accuracy: fold 0 3/4, fold 1 2/4, all 5/8.  Confusion (rows true, cols pred):
  c0: 2 0 1 | 3      most confused: c2->c1 twice (2/3 of c2), c0->c2 once (1/3 of c0)
  c1: 0 2 0 | 2      worst errors: r6 (0.90), r5 (0.70), r7 (0.60)
  c2: 0 2 1 | 3
  All 2 4 2 | 8
"""
import base64
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, write_png
from foldkit.report.page import image_grid
from foldkit.oof import cv_summary, load_oof
from foldkit.report.html import write_report
from foldkit.report.tables import confusion_table, most_confused, per_class_table, worst_errors

ROWS = {  # fold -> [(id, true class index, probabilities)] in file order
    0: [("r3", 0, (0.70, 0.20, 0.10)), ("r1", 1, (0.10, 0.80, 0.10)),
        ("r7", 2, (0.10, 0.60, 0.30)), ("r0", 0, (0.60, 0.30, 0.10))],
    1: [("r6", 2, (0.05, 0.90, 0.05)), ("r2", 1, (0.20, 0.70, 0.10)),
        ("r5", 0, (0.25, 0.05, 0.70)), ("r4", 2, (0.10, 0.10, 0.80))],
}
LABELS = {"int": [0, 1, 2], "str": ["ants", "bees", "wasps"], "numeric_str": ["01", "02", "10"]}
P_TRUE = {0: [0.70, 0.80, 0.30, 0.60], 1: [0.05, 0.70, 0.25, 0.80]}  # probability of the true class


def _logloss(ps):
    return -sum(math.log(p) for p in ps) / len(ps)


def write_oof(exp, classes, folds=(0, 1), prob_names=None):
    exp.mkdir(parents=True, exist_ok=True)
    names = prob_names or [f"prob_{c}" for c in classes]
    for k in folds:
        rows = []
        for iid, y, probs in ROWS[k]:
            rows.append({"id": iid, "fold": k, "label": classes[y], "pred": classes[int(np.argmax(probs))],
                         **dict(zip(names, probs))})
        pd.DataFrame(rows).to_csv(exp / f"oof_fold{k}.csv", index=False)


def make_experiment(tmp_path, classes, metric="logloss", **cfg):
    exp = tmp_path / "models" / "exp1"
    write_oof(exp, classes)
    config = {"metric": metric, "classes": classes, "model": "resnet18", "experiment": "exp1", **cfg}
    (exp / "config.json").write_text(json.dumps(config))
    return exp


@pytest.mark.parametrize("kind", list(LABELS))
def test_report_numbers_match_hand_computation(tmp_path, kind):
    classes = LABELS[kind]
    names = [str(c) for c in classes]
    exp = make_experiment(tmp_path, classes)
    rep = tmp_path / "reports" / "exp1"
    out = write_report(exp, rep, test_score=0.5)

    s = json.loads((rep / "cv_scores.json").read_text())
    f0, f1 = _logloss(P_TRUE[0]), _logloss(P_TRUE[1])
    assert s["metric"] == "logloss"
    assert s["cv"] == pytest.approx(_logloss(P_TRUE[0] + P_TRUE[1]))
    assert s["fold_scores"] == pytest.approx([f0, f1])
    assert s["cv_mean"] == pytest.approx((f0 + f1) / 2)
    assert s["cv_std"] == pytest.approx(abs(f0 - f1) / 2)
    assert s["accuracy"] == pytest.approx(5 / 8)
    assert [r["accuracy"] for r in s["per_fold"]] == pytest.approx([3 / 4, 2 / 4])
    assert s["logloss"] == pytest.approx(s["cv"])
    assert s["n"] == 8 and s["folds"] == [0, 1]
    assert s["test_score"] == 0.5
    assert s["classes"] == classes
    assert out["cv"] == s["cv"] and set(out["paths"]) >= {"oof.csv", "report.html", "confusion.png"}

    # all folds, fold then file order, labels keep their type ("01" stays "01")
    oof = pd.read_csv(rep / "oof.csv", dtype=str)
    assert oof["id"].tolist() == ["r3", "r1", "r7", "r0", "r6", "r2", "r5", "r4"]
    assert oof["label"].tolist()[:3] == [names[0], names[1], names[2]]

    conf = pd.read_csv(rep / "confusion.csv", dtype=str)
    assert conf.columns.tolist() == ["true", *names, "All"]
    assert conf.values.tolist() == [[names[0], "2", "0", "1", "3"], [names[1], "0", "2", "0", "2"],
                                    [names[2], "0", "2", "1", "3"], ["All", "2", "4", "2", "8"]]

    pc = pd.read_csv(rep / "per_class.csv", dtype={"class": str}).set_index("class")
    assert pc.index.tolist() == [*names, "macro avg"]
    assert pc["precision"].tolist() == pytest.approx([1.0, 0.5, 0.5, 2 / 3])
    assert pc["recall"].tolist() == pytest.approx([2 / 3, 1.0, 1 / 3, 2 / 3])
    assert pc["f1"].tolist() == pytest.approx([0.8, 2 / 3, 0.4, (0.8 + 2 / 3 + 0.4) / 3])
    assert pc["support"].tolist() == [3, 2, 3, 8]

    mc = pd.read_csv(rep / "most_confused.csv", dtype={"true": str, "pred": str})
    assert mc[["true", "pred", "count"]].values.tolist() == [[names[2], names[1], 2], [names[0], names[2], 1]]
    assert mc["share_of_true"].tolist() == pytest.approx([2 / 3, 1 / 3])

    we = pd.read_csv(rep / "worst_errors.csv", dtype={"id": str, "label": str, "pred": str})
    assert we["id"].tolist() == ["r6", "r5", "r7"]
    assert we[["label", "pred"]].values.tolist() == [[names[2], names[1]], [names[0], names[2]],
                                                     [names[2], names[1]]]
    assert we["confidence"].tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert we["prob_true"].tolist() == pytest.approx([0.05, 0.25, 0.3])

    assert (rep / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (rep / "worst_errors.png").exists()  # no load_image given
    page = (rep / "report.html").read_text()
    assert f"{s['cv']:.4f}" in page and f"{s['cv_mean']:.4f} ± {s['cv_std']:.4f}" in page
    assert "resnet18" in page and "exp1" in page and "0.6250" in page
    assert "data:image/png;base64," in page


def test_load_oof_keeps_label_types(tmp_path):
    exp = make_experiment(tmp_path, [0, 1, 2])
    oof, classes = load_oof(exp)
    assert classes == [0, 1, 2] and oof["label"].tolist() == [0, 1, 2, 0, 2, 1, 0, 2]
    assert oof["id"].tolist()[0] == "r3" and oof["fold"].tolist() == [0] * 4 + [1] * 4

    # no `classes` in config: integer-looking class columns become ints, others stay strings
    (exp / "config.json").unlink()
    assert load_oof(exp)[1] == [0, 1, 2]
    exp2 = tmp_path / "codes"
    write_oof(exp2, ["007", "010", "100"])
    oof2, classes2 = load_oof(exp2)
    assert classes2 == ["007", "010", "100"] and oof2["pred"].tolist()[:2] == ["007", "010"]


def test_in_memory_tables_match_files(tmp_path):
    oof, classes = load_oof(make_experiment(tmp_path, ["a", "b", "c"], metric="accuracy"))
    s = cv_summary(oof, classes, "accuracy")
    assert s["cv"] == pytest.approx(0.625) and s["fold_scores"] == pytest.approx([0.75, 0.5])
    assert s["cv_std"] == pytest.approx(0.125)
    assert confusion_table(oof, classes).loc["All", "All"] == 8
    assert most_confused(oof, classes, k=1)[["true", "pred"]].values.tolist() == [["c", "b"]]
    assert worst_errors(oof, classes, k=2)["id"].tolist() == ["r6", "r5"]
    assert per_class_table(oof, classes).loc["a", "support"] == 3


def test_class_never_predicted_is_a_column(tmp_path):
    exp = tmp_path / "exp"
    write_oof(exp, [0, 1, 2])
    oof, classes = load_oof(exp)
    oof, classes = oof.assign(**{"prob_3": 0.0}), [0, 1, 2, 3]
    t = confusion_table(oof, classes)
    assert t.columns.tolist() == ["0", "1", "2", "3", "All"] and t["3"].tolist() == [0, 0, 0, 0, 0]
    assert per_class_table(oof, classes).loc["3"].tolist() == [0, 0, 0, 0]


def test_mismatched_class_columns_name_both_files(tmp_path):
    exp = tmp_path / "exp"
    write_oof(exp, [0, 1, 2], folds=(0,))
    write_oof(exp, [0, 1, 2], folds=(1,), prob_names=["prob_0", "prob_1", "prob_3"])
    with pytest.raises(ValueError, match=r"oof_fold0\.csv.*oof_fold1\.csv") as err:
        load_oof(exp)
    assert "prob_2" in str(err.value) and "prob_3" in str(err.value)


def test_no_oof_files_is_a_clear_error(tmp_path):
    (tmp_path / "exp").mkdir()
    with pytest.raises(ValueError, match="no out-of-fold predictions.*oof_fold"):
        load_oof(tmp_path / "exp")


def test_bad_oof_contents_are_refused(tmp_path):
    exp = tmp_path / "exp"
    write_oof(exp, [0, 1, 2])
    df = pd.read_csv(exp / "oof_fold1.csv")
    df.loc[0, "label"] = 7
    df.to_csv(exp / "oof_fold1.csv", index=False)
    with pytest.raises(ValueError, match=r"label value\(s\) \['7'\] in \['oof_fold1.csv'\]"):
        load_oof(exp)
    write_oof(exp, [0, 1, 2])
    df = pd.read_csv(exp / "oof_fold1.csv")
    df.loc[0, "id"] = "r3"  # also in fold 0
    df.to_csv(exp / "oof_fold1.csv", index=False)
    with pytest.raises(ValueError, match=r"\['r3'\] appear more than once"):
        load_oof(exp)


def test_config_classes_must_match_oof(tmp_path):
    exp = make_experiment(tmp_path, [0, 1, 2])
    (exp / "config.json").write_text(json.dumps({"metric": "accuracy", "classes": [0, 1, 5]}))
    with pytest.raises(ValueError, match="config.json"):
        load_oof(exp)


def test_html_is_self_contained_with_curves_and_error_grid(tmp_path):
    exp = make_experiment(tmp_path, ["ants", "bees", "wasps"], metric="accuracy", n_folds=3)
    curve = write_png(exp / "curve_fold0.png", np.full((12, 20, 3), 200, np.uint8))
    log = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, 0.8, 0.7], "valid_loss": [0.9, 0.85, 0.95],
                        "valid_accuracy": [0.5, 0.8125, 0.6], "valid_metric": [0.5, 0.8125, 0.6],
                        "lr": [1e-3] * 3, "seconds": [60.0] * 3})
    log.to_csv(exp / "log_fold1.csv", index=False)  # fold 1: no PNG, the curve is drawn from the log
    asked = []

    def load_image(iid):
        asked.append(iid)
        return np.zeros((8, 8, 1), np.uint8)

    rep = tmp_path / "moved_later"
    out = write_report(exp, rep, load_image=load_image, extra={"seed": 42})
    assert asked == ["r6", "r5", "r7"]  # most confident mistake first
    for name in ("worst_errors.png", "curve_fold0.png", "curve_fold1.png"):
        assert (rep / name).read_bytes()[:4] == b"\x89PNG", name
    assert (rep / "curve_fold0.png").read_bytes() == curve.read_bytes()

    page = (rep / "report.html").read_text()
    srcs = re.findall(r"src='([^']*)'", page) + re.findall(r'src="([^"]*)"', page)
    # fold chart, the curves of every logged fold in one figure, fold 0's own PNG (it has no log),
    # confusion, worst errors, suspected label errors
    assert len(srcs) == 6 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert base64.b64encode(curve.read_bytes()).decode() in page
    assert "<link" not in page and "<script" not in page  # CSS inline, nothing fetched
    assert "2 of 3 folds" in page and out["complete"] is False  # partial CV is flagged
    assert "0.8125" in page  # best valid_metric of the fold-1 log (epoch 2)
    assert json.loads((rep / "cv_scores.json").read_text())["extra"] == {"seed": 42}


def test_worst_errors_grid_survives_unloadable_image(tmp_path):
    oof, classes = load_oof(make_experiment(tmp_path, [0, 1, 2]))
    worst = worst_errors(oof, classes)

    def load_image(iid):
        if iid == "r5":
            raise FileNotFoundError(f"train/{iid}.png")
        return np.full((6, 9, 3), 128, np.uint8)

    out = image_grid(worst, load_image, tmp_path / "grid.png", ncols=2)
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_the_report_page_and_the_oof_arithmetic_import_neither_matplotlib_nor_torch():
    code = ("import sys; import foldkit.report.html, foldkit.oof, foldkit.figures; "
            "print(sorted(m for m in ('matplotlib', 'torch') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO / "src")}, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_a_120_class_run_writes_its_oof_and_summaries_without_a_library_warning(tmp_path):
    """A 120-class competition: training's OOF frame, reading it back and the fold summaries print no
    pandas PerformanceWarning (or any other library warning) into the user's output."""
    import warnings

    from foldkit.train.fit import oof_frame, write_csv
    from foldkit.report.label_noise import suspected_label_errors

    classes = [f"c{i:03d}" for i in range(120)]
    rng = np.random.default_rng(0)
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "config.json").write_text(json.dumps({"metric": "accuracy", "classes": classes}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for k in (0, 1):
            ids = [f"{k}_{i}" for i in range(240)]
            labels = [classes[i % 120] for i in range(240)]
            write_csv(oof_frame(ids, k, labels, rng.dirichlet(np.ones(120), 240), classes), exp / f"oof_fold{k}.csv")
        oof, got = load_oof(exp)
        summary = cv_summary(oof, got, "accuracy")
        per_class_table(oof, got), confusion_table(oof, got), most_confused(oof, got), worst_errors(oof, got)
        suspected_label_errors(oof, got)
    assert got == classes and summary["n"] == 480 and summary["folds"] == [0, 1]


def visible_text(html_text):
    """The page's text as a reader sees it (tags, styles and data URIs dropped), without the links to
    the files beside it (their names are file names, not keys)."""
    text = re.sub(r"<style>.*?</style>|<a [^>]*>.*?</a>", " ", html_text, flags=re.S)
    return re.sub(r"<[^>]+>", " ", text)


# what predict.py records for a lone experiment with temperature scaling (blend.report_extra + record)
PREDICT_EXTRA = {"plan": {"blend": "mean", "weights": {"exp1": 1.0}, "temperature": {"T": 1.23}},
                 "cv_singles": {"exp1": 0.61}, "cv_blend_in_sample": 0.61, "cv_blend_nested": 0.61,
                 "cv_final_in_sample": 0.58, "cv_final_nested": 0.59, "cv_rows": 8,
                 "verdicts": ["post-processing (temperature) does not improve nested CV (logloss 0.59 vs 0.61 "
                              "without): it overfits the OOF; turn it off (--calibrate off / --thresholds off)"],
                 "submission": "submissions/exp1_cv0.59000.csv", "test_accuracy": 0.75,
                 "test_score_before_postprocessing": 0.66, "rare classes": "2 class(es) have fewer samples"}


def test_first_screen_tells_the_plan_and_verdicts_in_words(tmp_path):
    exp = make_experiment(tmp_path, ["ants", "bees", "wasps"])
    write_report(exp, tmp_path / "rep", test_score=0.64, extra=PREDICT_EXTRA)
    page = (tmp_path / "rep" / "report.html").read_text()
    text = visible_text(page)
    for raw in ("{", "}", '"', "cv_", "in_sample", "verdicts", "test_accuracy", "prob_true", "share_of_true"):
        assert raw not in text, raw
    first = page[:page.index("<h2>")]     # the first screen: everything before the first section
    s = json.loads((tmp_path / "rep" / "cv_scores.json").read_text())
    assert f"CV logloss {s['cv_mean']:.4f} ± {s['cv_std']:.4f}" in first and f"{s['cv']:.4f}" in first
    assert "Submission file submissions/exp1_cv0.59000.csv, made from the fold models of exp1, " \
           "post-processed by temperature (T 1.2300)." in first
    assert "0.59000 in nested CV" in first and "0.64000" in first and "accuracy 0.7500" in first
    assert "<li>Post-processing (temperature) does not improve nested CV" in first
    assert "Rare classes: 2 class(es) have fewer samples." in first
    assert (tmp_path / "rep" / "fold_scores.png").is_file()


def make_many_class_experiment(tmp_path, n_classes=120, per_class=3):
    """A 120-class experiment over 2 folds: mostly right, class 2k often taken for 2k+1."""
    classes = [f"breed_{i:03d}" for i in range(n_classes)]
    rng = np.random.default_rng(0)
    exp = tmp_path / "models" / "dogs"
    exp.mkdir(parents=True)
    for k in (0, 1):
        rows = []
        for i, c in enumerate(classes):
            for r in range(per_class):
                p = rng.dirichlet(np.ones(n_classes) * 0.1)
                guess = i + 1 if (i % 2 == 0 and i < 30 and r < 2) else i
                p = 0.3 * p
                p[guess] += 0.7
                rows.append({"id": f"{k}_{c}_{r}", "fold": k, "label": c, "pred": classes[int(p.argmax())],
                             **{f"prob_{cc}": v for cc, v in zip(classes, p)}})
        pd.DataFrame(rows).to_csv(exp / f"oof_fold{k}.csv", index=False)
    (exp / "config.json").write_text(json.dumps({"metric": "accuracy", "classes": classes, "model": "resnet18",
                                                 "experiment": "dogs", "n_folds": 2}))
    return exp, classes


def test_a_120_class_page_shows_the_most_confused_classes_and_no_big_table(tmp_path):
    from foldkit.report.tables import MAX_CLASSES_SHOWN, confused_classes

    exp, classes = make_many_class_experiment(tmp_path)
    oof, _ = load_oof(exp)
    shown = confused_classes(oof, classes)
    assert len(shown) == MAX_CLASSES_SHOWN == 20
    assert shown == classes[:20]      # breed 2k -> 2k+1 for k < 10 are the largest cells, ties in class order
    write_report(exp, tmp_path / "rep")
    page = (tmp_path / "rep" / "report.html").read_text()
    rows = [len(re.findall(r"<tr", t)) for t in re.findall(r"<table.*?</table>", page, flags=re.S)]
    assert max(rows) <= MAX_CLASSES_SHOWN + 2, rows     # header + 20 rows at most
    assert "<a href='confusion.csv'>confusion.csv</a>" in page and "120 x 120" in page
    assert "worst 20 of 120 classes" in page
    per_class = pd.read_csv(tmp_path / "rep" / "confusion.csv")
    assert per_class.shape == (121, 122)    # the full matrix stays in the CSV
    recall = page[page.index("worst 20 of 120"):]
    assert "breed_000" in recall and "breed_119" not in recall    # confused classes first, good ones left out


def test_training_curves_are_one_figure_with_every_fold(tmp_path):
    exp = make_experiment(tmp_path, ["a", "b", "c"], metric="accuracy")
    for k in (0, 1):
        pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, 0.8, 0.7], "valid_loss": [0.9, 0.85, 0.95],
                      "valid_accuracy": [0.5, 0.8, 0.6], "valid_metric": [0.5, 0.8, 0.6], "lr": [1e-3] * 3,
                      "seconds": [1.0] * 3}).to_csv(exp / f"log_fold{k}.csv", index=False)
    out = write_report(exp, tmp_path / "rep")
    page = (tmp_path / "rep" / "report.html").read_text()
    section = page[page.index("<h2>Training curves"):page.index("<h2>Confusion")]
    assert section.count("<img") == 1 and "every fold" in section
    assert "curves.png" in out["paths"] and (tmp_path / "rep" / "curve_fold1.png").is_file()


def test_a_120_class_report_reads_in_a_browser(tmp_path):
    """The page as a person sees it (headless Chromium): every image loads, no JSON or internal key is
    visible, the CV headline is on the first screen, and no table runs past 20 classes."""
    from sklearn.datasets import load_digits

    from browser import RAW, render

    digits = load_digits().images.astype(np.uint8) * 16          # real 8x8 handwritten digits
    exp, classes = make_many_class_experiment(tmp_path)
    pd.DataFrame({"epoch": [1, 2], "train_loss": [2.0, 1.0], "valid_loss": [1.8, 1.2], "valid_accuracy": [0.5, 0.9],
                  "valid_metric": [0.5, 0.9], "lr": [1e-3] * 2, "seconds": [1.0] * 2}).to_csv(exp / "log_fold0.csv",
                                                                                             index=False)
    write_report(exp, tmp_path / "rep", load_image=lambda i: digits[hash(i) % len(digits)], test_score=0.9,
                 extra=PREDICT_EXTRA)
    seen = render(tmp_path / "rep" / "report.html", tmp_path)
    assert seen["images"] == 5 and seen["broken"] == []   # fold chart, curves, confusion, 2 galleries
    assert seen["headline"].startswith("CV accuracy 0.9167 ± 0.0000")
    assert seen["headline_bottom"] < seen["height"]
    assert [raw for raw in RAW if raw in seen["text_without_files"]] == []
    assert "breed_119" not in seen["text"]      # a well-predicted class of 120 is in the CSVs, not the page


def test_without_a_submission_the_plan_is_not_called_one():
    from foldkit.report.words import facts_in_words
    extra = {k: v for k, v in PREDICT_EXTRA.items() if k != "submission"}
    facts, verdicts = facts_in_words(extra, "logloss")
    assert facts[0] == "Predictions are made from the fold models of exp1, post-processed by temperature (T 1.2300)."
    assert not any("submi" in f for f in facts) and len(verdicts) == 1
