"""Suspected label errors: cleanlab on out-of-fold probabilities finds labels flipped on purpose."""
import json
import sys

import numpy as np
import pandas as pd
import pytest

from foldkit.report.label_noise import INSTALL_HINT, suspected_label_errors
from foldkit.report.html import write_report

N_FLIP = 30


@pytest.fixture(scope="module")
def noisy_oof():
    """scikit-learn's real digits (1,797 images) with 30 labels flipped; OOF probabilities of a
    5-fold logistic regression, in the kit's OOF format (id, fold, label, pred, prob_<class>)."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(y), N_FLIP, replace=False)
    y = y.copy()
    y[flipped] = (y[flipped] + rng.integers(1, 10, N_FLIP)) % 10
    probs, fold = np.zeros((len(y), 10)), np.zeros(len(y), int)
    for k, (tr, va) in enumerate(StratifiedKFold(5, shuffle=True, random_state=0).split(x, y)):
        probs[va] = LogisticRegression(max_iter=2000).fit(x[tr] / 16, y[tr]).predict_proba(x[va] / 16)
        fold[va] = k
    oof = pd.DataFrame({"id": [f"img{i}" for i in range(len(y))], "fold": fold, "label": y,
                        "pred": probs.argmax(1)})
    for c in range(10):
        oof[f"prob_{c}"] = probs[:, c]
    return oof.sort_values(["fold"], kind="stable").reset_index(drop=True), {f"img{i}" for i in flipped}


def test_flipped_labels_are_at_the_top(noisy_oof):
    oof, flipped = noisy_oof
    table = suspected_label_errors(oof, list(range(10)))
    top = set(table["id"].head(N_FLIP))
    assert len(top & flipped) >= 0.8 * N_FLIP, len(top & flipped)
    assert table["rank"].tolist() == list(range(1, len(table) + 1))
    assert table["prob_given"].is_monotonic_increasing            # ranked by self-confidence
    assert (table["pred"] != table["label"]).mean() > 0.9


def _experiment(tmp_path, oof):
    exp = tmp_path / "models" / "exp"
    exp.mkdir(parents=True)
    for k, part in oof.groupby("fold"):
        part.to_csv(exp / f"oof_fold{k}.csv", index=False)
    (exp / "config.json").write_text(json.dumps({"metric": "accuracy", "classes": list(range(10)),
                                                 "model": "logreg", "experiment": "exp", "n_folds": 5}))
    return exp


def test_report_lists_suspected_label_errors(noisy_oof, tmp_path):
    oof, flipped = noisy_oof
    exp = _experiment(tmp_path, oof)
    r = write_report(exp, tmp_path / "rep", load_image=lambda i: np.full((8, 8), int(i[3:]) % 255, np.uint8))
    table = pd.read_csv(tmp_path / "rep" / "label_errors.csv")
    assert len(set(table["id"].head(N_FLIP)) & flipped) >= 0.8 * N_FLIP
    assert (tmp_path / "rep" / "label_errors.png").is_file() and "label_errors.csv" in r["paths"]
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "Suspected label errors" in page and "alt='suspected label errors'" in page


def test_report_without_cleanlab_says_how_to_install(noisy_oof, tmp_path, monkeypatch):
    oof, _ = noisy_oof
    exp = _experiment(tmp_path, oof)
    monkeypatch.setitem(sys.modules, "cleanlab", None)             # import cleanlab -> ImportError
    monkeypatch.setitem(sys.modules, "cleanlab.filter", None)
    write_report(exp, tmp_path / "rep")
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "cleanlab is not installed" in page and "pip install" in page
    assert not (tmp_path / "rep" / "label_errors.csv").exists()
    assert INSTALL_HINT.split()[0] == "pip"


def test_rare_classes_do_not_flood_the_output_with_library_warnings(tmp_path):
    """190 classes, most with one or two rows (UTKFace age x gender): cleanlab warns once per rare class;
    none of it reaches the user's output."""
    import warnings

    import numpy as np
    import pandas as pd

    from foldkit.report.label_noise import suspected_label_errors
    rng = np.random.default_rng(0)
    classes = list(range(190))
    y = np.concatenate([np.arange(190), rng.integers(0, 10, 200)])
    probs = rng.dirichlet(np.ones(190), len(y))
    oof = pd.DataFrame({"id": [str(i) for i in range(len(y))], "fold": 0, "label": y,
                        "pred": probs.argmax(1), **{f"prob_{c}": probs[:, c] for c in classes}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        suspected_label_errors(oof, classes)
