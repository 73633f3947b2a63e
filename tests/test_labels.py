"""The user's label and id strings go out exactly as they came in: `007` is not 7, and a class or id
named `NA` or `None` is a value, not a missing one."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd

from conftest import REPO, write_png

CLASSES = ["007", "7", "NA", "None"]
FAST = ["--model", "test_resnet", "--img-size", "16", "--crop-pct", "1.0", "--no-hflip", "--epochs", "1",
        "--no-pretrained", "--batch-size", "16", "--no-progress", "--workers", "0"]


def run(script, *args):
    r = subprocess.run([sys.executable, str(REPO / "src" / script), *args], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    return r


def raw(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_labels_and_ids_like_007_na_none_survive_make_folds_train_predict(tmp_path):
    rng = np.random.default_rng(0)
    comp = tmp_path / "input"
    ids = ["NA", "None"] + [f"{i:03d}" for i in range(14)]
    labels = [CLASSES[i % 4] for i in range(16)]
    for i in ids:
        write_png(comp / "train" / f"{i}.png", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    test_ids = ["NA", "None", "007"]
    for i in test_ids:
        write_png(comp / "test" / f"{i}.png", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    (comp / "train.csv").write_text("id,label\n" + "".join(f"{i},{c}\n" for i, c in zip(ids, labels)))
    (comp / "sample_submission.csv").write_text("id,label\n" + "".join(f"{i},007\n" for i in test_ids))
    (comp / "solution.csv").write_text("id,label\nNA,NA\nNone,None\n007,7\n")
    paths = ["--input-dir", str(comp), "--folds-dir", str(tmp_path / "folds"), "--models-dir", str(tmp_path / "m")]

    run("make_folds.py", *paths, "--n-folds", "2")
    meta = json.loads((tmp_path / "folds" / "folds_meta.json").read_text())
    assert meta["classes"] == CLASSES and meta["label_dtype"] == "str"
    folds = raw(tmp_path / "folds" / "train_folds.csv")
    assert folds["id"].tolist() == ids and folds["label"].tolist() == labels

    run("train.py", *paths, *FAST, "--fold", "0", "--experiment", "x")
    oof = raw(tmp_path / "m" / "x" / "oof_fold0.csv")
    assert set(oof["label"]) <= set(CLASSES) and set(oof["pred"]) <= set(CLASSES)
    assert dict(zip(oof["id"], oof["label"])) == {i: c for i, c in zip(ids, labels) if i in set(oof["id"])}

    r = run("predict.py", *paths, "--experiments", "x", "--submissions-dir", str(tmp_path / "subs"),
            "--reports-dir", str(tmp_path / "reports"))
    assert "on 3 labelled test images" in r.stdout   # solution.csv's NA / None labels scored
    sub = raw(next((tmp_path / "subs").glob("*.csv")))
    assert sub["id"].tolist() == ["NA", "None", "007"]
    assert set(sub["label"]) <= set(CLASSES)
