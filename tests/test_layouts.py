"""Competitions as they ship (issue 28): what a label is, decided from evidence single labels cannot give
(multi-word class names stay classes, real tags stay tags; integer prices and ages are quantities by
AutoGluon's rule and the order of their counts), the Planet competition's own layout (train_v2.csv,
train-jpg/, test-jpg/ + test-jpg-additional/, sample_submission_v2.csv) and --train-dir/--test-dir for any
other folder names, and a folder-per-class competition whose sample ids carry the extension (Plant
Seedlings), run through the real CLIs on small real data (digits, the Planet sample, houses, UTKFace)."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import REPO, need_shared, write_png
from foldkit import config
from foldkit.data.reading import InputError, open_competition, read_competition

TRAIN = ["--model", "test_resnet", "--no-pretrained", "--img-size", "32", "--epochs", "1", "--batch-size", "8", "--no-hflip",
         "--workers", "0"]


def kit(script, *args, ok=True):
    r = subprocess.run([sys.executable, str(REPO / "src" / script), *args], capture_output=True, text=True,
                       timeout=600)
    if ok:
        assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return r


def folds_args(root):
    return ["--folds-dir", str(root / "folds"), "--models-dir", str(root / "models"), "--n-folds", "2"]


def digit_files(folder, names, digits_32):
    x, _ = digits_32
    for k, name in enumerate(names):
        write_png(folder / name, x[k % len(x)])


# --------------------------------------------------------------------------- what a label is

SIX = ["male adult", "female adult", "male child", "female child", "male senior", "female senior"]


def test_multi_word_class_names_stay_single_label(tmp_path, digits_32):
    comp = tmp_path / "in"
    ids = [f"p{i}" for i in range(36)]
    digit_files(comp / "train", [f"{i}.png" for i in ids], digits_32)
    pd.DataFrame({"id": ids, "label": [SIX[i % 6] for i in range(36)]}).to_csv(comp / "train.csv", index=False)
    out = kit("make_folds.py", "--input-dir", str(comp), *folds_args(tmp_path)).stdout
    meta = json.loads((tmp_path / "folds" / "folds_meta.json").read_text())
    assert meta["task"] == "single" and meta["classes"] == sorted(SIX)
    assert "read as class names" in out and "--task multilabel" in out


def test_thin_tag_evidence_asks_for_the_task_in_one_line(tmp_path, digits_32):
    comp = tmp_path / "in"
    ids = [f"p{i}" for i in range(30)]
    digit_files(comp / "train", [f"{i}.png" for i in ids], digits_32)
    labels = ["cat", "dog", "cat dog", "bird", "white cat"]          # one set ('cat dog') is a union
    pd.DataFrame({"id": ids, "label": [labels[i % 5] for i in range(30)]}).to_csv(comp / "train.csv", index=False)
    r = kit("make_folds.py", "--input-dir", str(comp), *folds_args(tmp_path), ok=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: ") and "Pass --task multilabel or --task single" in r.stderr
    assert read_competition(comp, check_train=False, task="single").classes == sorted(labels)


# --------------------------------------------------------------------------- a quantity or class ids

def test_house_prices_and_ages_are_regression_with_the_flag_that_overrides_it(tmp_path):
    houses, faces = need_shared("data", "houses"), need_shared("data", "utkface", "crop_part1")
    table = pd.read_csv(houses / "houses.csv").head(200)
    names = sorted(p.name for p in faces.iterdir())[::40][:200]
    for kind, ids, values, read in (
            ("houses", [str(h) for h in table["house"]], table["price"].tolist(),
             lambda i: houses / "frontal" / f"{i}.jpg"),
            ("ages", [n.split(".")[0] for n in names], [int(n.split("_")[0]) for n in names],
             lambda i: faces / f"{i}.jpg.chip.jpg")):
        comp = tmp_path / kind / "in"
        for i in ids:
            write_png(comp / "train" / f"{i}.png", cv2.resize(cv2.imread(str(read(i))), (16, 16)))
        pd.DataFrame({"id": ids, "target": values}).to_csv(comp / "train.csv", index=False)
        out = kit("make_folds.py", "--input-dir", str(comp), *folds_args(tmp_path / kind)).stdout
        meta = json.loads((tmp_path / kind / "folds" / "folds_meta.json").read_text())
        assert meta["task"] == "regression" and meta["label_dtype"] == "int64", kind
        assert "AutoGluon's rule" in out and "pass --task single if they are class ids" in out, out


def labels_only(root, values):
    """A CSV competition whose image files exist but are empty: enough to read the labels (no check)."""
    (root / "train").mkdir(parents=True)
    ids = [f"r{i}" for i in range(len(values))]
    for i in ids:
        (root / "train" / f"{i}.png").touch()
    pd.DataFrame({"id": ids, "target": values}).to_csv(root / "train.csv", index=False)
    return root


def test_ordered_counts_decide_integers_autogluon_would_call_classes(tmp_path):
    faces = need_shared("data", "utkface", "crop_part1")
    names = sorted(p.name for p in faces.iterdir())
    pick = np.random.default_rng(0).choice(len(names), 2000, replace=False)
    ages = [int(names[i].split("_")[0]) for i in pick]      # 93 ages in 2,000 rows: under AutoGluon's 5%
    comp = read_competition(labels_only(tmp_path / "ages", ages), check_train=False)
    assert comp.task == "regression" and "neighbouring values have similar counts" in comp.task_note
    rng = np.random.default_rng(1)
    codes = rng.choice(np.arange(100, 400), 30, replace=False)          # class codes, counts in no order
    comp = read_competition(labels_only(tmp_path / "codes", rng.choice(codes, 1500).tolist()), check_train=False)
    assert comp.task == "single" and "read as class ids" in comp.task_note
    # counts half in order: a question, not a guess
    counts = np.round(50 + 25 * np.sin(np.arange(40) / 2.0) + rng.normal(0, 22, 40)).clip(5).astype(int)
    mixed = np.repeat(np.arange(1, 41), counts).tolist()
    from foldkit.data.kinds import neighbour_r
    assert 0.25 <= neighbour_r(np.array(mixed)) < 0.5
    with pytest.raises(InputError, match="a quantity .* or class ids\\? Pass --task regression or --task single"):
        read_competition(labels_only(tmp_path / "mixed", mixed), check_train=False)


# --------------------------------------------------------------------------- Planet's own layout

@pytest.fixture(scope="module")
def planet(tmp_path_factory):
    """60 Planet sample images in the competition's own layout (32 px JPEG): train_v2.csv, train-jpg/,
    test-jpg/ (test_0..), test-jpg-additional/ (file_0..), sample_submission_v2.csv."""
    src = need_shared("data", "planet_sample")
    root = tmp_path_factory.mktemp("planet") / "in"
    labels = pd.read_csv(src / "labels.csv", dtype=str).head(70)
    small = {n: cv2.resize(cv2.imread(str(src / "train" / f"{n}.jpg")), (32, 32)) for n in labels["image_name"]}
    train, test = labels.head(60), labels.tail(10)
    for n in train["image_name"]:
        write_png(root / "train-jpg" / f"{n}.jpg", small[n])
    test_ids = [f"test_{k}" for k in range(6)] + [f"file_{k}" for k in range(4)]
    for tid, n in zip(test_ids, test["image_name"]):
        write_png(root / ("test-jpg" if tid.startswith("test") else "test-jpg-additional") / f"{tid}.jpg", small[n])
    train.to_csv(root / "train_v2.csv", index=False)
    pd.DataFrame({"image_name": test_ids, "tags": "primary clear"}).to_csv(root / "sample_submission_v2.csv",
                                                                           index=False)
    return root


def test_planet_layout_is_read_by_what_its_files_hold(planet, tmp_path):
    out = kit("make_folds.py", "--input-dir", str(planet), *folds_args(tmp_path)).stdout
    assert ("read training CSV train_v2.csv; training images in train-jpg/; test images in test-jpg/, "
            "test-jpg-additional/ (--train-csv, --train-dir, --test-dir choose others)") in out
    meta = json.loads((tmp_path / "folds" / "folds_meta.json").read_text())
    assert meta["layout"] == "csv_images" and meta["train_csv"] == "train_v2.csv" and meta["task"] == "multilabel"
    assert meta["train_dir"] == "train-jpg" and meta["test_dirs"] == ["test-jpg", "test-jpg-additional"]
    comp = read_competition(planet, check_train=False)
    assert comp.sample_submission.name == "sample_submission_v2.csv" and comp.test_problems == []
    assert comp.test["path"].tolist()[5:7] == ["test-jpg/test_5.jpg", "test-jpg-additional/file_0.jpg"]


def test_other_folder_names_take_flags_recorded_for_later_steps(planet, tmp_path):
    comp = tmp_path / "in"
    comp.mkdir()
    (comp / "labels_2024.csv").write_bytes((planet / "train_v2.csv").read_bytes())
    (comp / "sample_submission.csv").write_bytes((planet / "sample_submission_v2.csv").read_bytes())
    (comp / "chips").symlink_to(planet / "train-jpg")
    (comp / "holdout").symlink_to(planet / "test-jpg")
    (comp / "holdout2").symlink_to(planet / "test-jpg-additional")
    r = kit("make_folds.py", "--input-dir", str(comp), *folds_args(tmp_path), ok=False)
    assert r.returncode == 2 and "--train-dir NAME" in r.stderr and "cannot tell the input layout" in r.stderr
    kit("make_folds.py", "--input-dir", str(comp), *folds_args(tmp_path), "--train-dir", "chips",
        "--test-dir", "holdout,holdout2")
    meta = json.loads((tmp_path / "folds" / "folds_meta.json").read_text())
    assert meta["reading"]["train_dir"] == "chips" and meta["reading"]["test_dir"] == "holdout,holdout2"
    assert meta["train_csv"] == "labels_2024.csv" and meta["rows"] == 60
    later, _ = open_competition(config.resolve({}), meta, check_test=True)     # train/predict: no flags
    assert later.test_dirs == ["holdout", "holdout2"] and later.test_problems == [] and len(later.test) == 10
    with pytest.raises(InputError, match="--test-dir: no folder \\['nope'\\]"):
        read_competition(comp, train_dir="chips", test_dir="nope", check_train=False)


# --------------------------------------------------------------------------- sample ids with the extension

def test_class_folders_with_sample_ids_carrying_the_extension_predict(tmp_path, digits_32):
    x, y = digits_32
    comp = tmp_path / "in"
    keep = [i for i in range(len(y)) if y[i] in (0, 1, 2)][:30]
    for i in keep[:24]:
        write_png(comp / "train" / f"class {y[i]}" / f"t{i}.png", x[i])
    test_ids = [f"{i:09x}.png" for i in keep[24:]]                       # Plant Seedlings: 0021e90e4.png
    for i, name in zip(keep[24:], test_ids):
        write_png(comp / "test" / name, x[i])
    pd.DataFrame({"file": test_ids, "species": "class 0"}).to_csv(comp / "sample_submission.csv", index=False)
    dirs = ["--folds-dir", str(tmp_path / "folds"), "--models-dir", str(tmp_path / "models"),
            "--submissions-dir", str(tmp_path / "subs"), "--reports-dir", str(tmp_path / "reports")]
    kit("make_folds.py", "--input-dir", str(comp), "--n-folds", "2", *dirs)
    kit("train.py", "--fold", "0", *TRAIN, *dirs)
    kit("predict.py", "--no-report", *dirs)
    [sub] = sorted((tmp_path / "subs").glob("*.csv"))
    sub = pd.read_csv(sub, dtype=str)
    assert list(sub.columns) == ["file", "species"] and sub["file"].tolist() == test_ids
    assert set(sub["species"]) <= {"class 0", "class 1", "class 2"}
