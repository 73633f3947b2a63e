"""benchmarks/scenarios/: each script's data-building step on a small slice of the real raw files
(the layout the kit's reader detects, rows, labels, test ids), the idx reader, the scratch-folder
guard, and `--help` of every script. No training here (the scenarios are run by hand)."""
import gzip
import importlib.util
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, need_shared

from foldkit.data.reading import read_competition

SCEN = REPO / "benchmarks" / "scenarios"
SCRIPTS = ["mnist", "fashion_mnist", "bangla", "hymenoptera", "kannada"]


def load(name):
    """A scenario script as a module (its own folder on sys.path, as when it runs)."""
    if str(SCEN) not in sys.path:
        sys.path.insert(0, str(SCEN))
    spec = importlib.util.spec_from_file_location(f"scenario_{name}", SCEN / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", SCRIPTS)
def test_help(name):
    r = subprocess.run([sys.executable, str(SCEN / f"{name}.py"), "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    for flag in ("--mode", "--work", "--record"):
        assert flag in r.stdout


@pytest.mark.parametrize("name", SCRIPTS)
def test_default_raw_folder_holds_the_raw_files(name):
    m = load(name)
    raw = need_shared("data", *m.RAW_SUBDIR.split("/"))
    assert m.common.scenario_parser("", m.DATASET, m.RAW_SUBDIR).parse_args([]).data_dir == str(raw)
    assert m.common.check_raw(raw, *m.RAW) == raw


def write_idx(path, arr):
    arr = np.asarray(arr, dtype=np.uint8)
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + arr.tobytes())


def test_read_idx_header(tmp_path):
    common = load("mnist").common
    imgs = np.arange(3 * 4 * 5).reshape(3, 4, 5) % 256
    write_idx(tmp_path / "x-idx3-ubyte.gz", imgs)
    write_idx(tmp_path / "y-idx1-ubyte.gz", [7, 0, 9])
    x = common.read_idx(tmp_path / "x-idx3-ubyte.gz")
    assert x.shape == (3, 4, 5) and x.dtype == np.uint8 and (x == imgs).all()   # 16-byte header skipped
    assert common.read_idx(tmp_path / "y-idx1-ubyte.gz").tolist() == [7, 0, 9]  # 8-byte header skipped
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"abc"))
    with pytest.raises(ValueError, match="bytes"):
        common.read_idx(tmp_path / "bad.gz")


def test_subset_is_seeded_sorted_and_not_the_head():
    common = load("mnist").common
    a = common.subset(1000, 50)
    assert len(a) == 50 and (np.diff(a) > 0).all() and (a == common.subset(1000, 50)).all()
    assert a.max() >= 100                          # a random slice, not the first rows of the file
    assert (common.subset(10, 0) == np.arange(10)).all() and (common.subset(10, 99) == np.arange(10)).all()


def test_mnist_build_digit_recognizer_layout(tmp_path):
    raw = need_shared("data", "mnist")
    m = load("mnist")
    y_all = m.common.read_idx(raw / "train-labels-idx1-ubyte.gz")
    assert y_all[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]    # the well-known first MNIST labels
    m.build(raw, tmp_path, limit=40)
    head = pd.read_csv(tmp_path / "train.csv", nrows=0).columns.tolist()
    assert head == ["label"] + [f"pixel{i}" for i in range(784)]
    assert pd.read_csv(tmp_path / "test.csv", nrows=0).columns.tolist() == head[1:]
    comp = read_competition(tmp_path)
    assert comp.layout == "pixel_csv" and len(comp.train) == 40 and len(comp.test) == 40
    assert comp.pixels("train").shape == (40, 28, 28, 1) and comp.pixels("test").shape == (40, 28, 28, 1)
    assert set(comp.train["label"].tolist()) <= set(range(10)) and comp.train["label"].nunique() > 5
    assert comp.test["id"].astype(str).tolist() == [str(i) for i in range(1, 41)]   # ImageId 1-based
    assert comp.id_col == "ImageId"
    sol = pd.read_csv(tmp_path / "solution.csv")
    sample = pd.read_csv(tmp_path / "sample_submission.csv")
    assert sol.columns.tolist() == sample.columns.tolist() == ["ImageId", "Label"]
    assert sol["ImageId"].tolist() == list(range(1, 41))
    # images and labels stay paired: the slice's rows are the raw files' rows
    idx = m.common.subset(60000, 40)
    x_raw = m.common.read_idx(raw / "train-images-idx3-ubyte.gz")
    assert (comp.pixels("train")[..., 0] == x_raw[idx]).all()
    assert comp.train["label"].tolist() == y_all[idx].tolist()
    t_idx = m.common.subset(10000, 40)
    assert sol["Label"].tolist() == m.common.read_idx(raw / "t10k-labels-idx1-ubyte.gz")[t_idx].tolist()


def check_numpy_layout(out, n_train, n_test, shape, classes=range(10)):
    comp = read_competition(out)
    assert comp.layout == "numpy"
    assert len(comp.train) == n_train and len(comp.test) == n_test
    assert comp.pixels("train").shape[1:] == shape and comp.pixels("test").shape[1:] == shape
    assert comp.pixels("train").dtype == np.uint8
    assert set(comp.train["label"].tolist()) <= set(classes)
    assert "label" in comp.test.columns and set(comp.test["label"].tolist()) <= set(classes)   # scored
    assert comp.test["id"].tolist() == [str(i) for i in range(n_test)]
    return comp


def test_fashion_mnist_build_numpy_layout(tmp_path):
    raw = need_shared("data", "fashion_mnist")
    m = load("fashion_mnist")
    m.build(raw, tmp_path, limit=30)
    comp = check_numpy_layout(tmp_path, 30, 30, (28, 28, 1))
    x = np.load(tmp_path / "x_train.npy")
    assert x.shape == (30, 28, 28) and x.dtype == np.uint8
    idx = m.common.subset(60000, 30)
    assert comp.train["label"].tolist() == m.common.read_idx(raw / "train-labels-idx1-ubyte.gz")[idx].tolist()


def test_bangla_build_numpy_layout(tmp_path):
    raw = need_shared("data", "cmaterdb", "bangla-numerals")
    m = load("bangla")
    m.build(raw, tmp_path, limit=25)
    comp = check_numpy_layout(tmp_path, 25, 25, (32, 32, 3))
    x = comp.pixels("train")
    assert (x[..., 0] == x[..., 1]).all() and (x[..., 1] == x[..., 2]).all()   # grey in 3 channels
    with np.load(raw / "testing-images.npz") as z:
        idx = m.common.subset(len(z["labels"]), 25)
        assert comp.test["label"].tolist() == z["labels"][idx].tolist()


def test_kannada_build_train_on_kannada_test_score_on_dig(tmp_path):
    raw = need_shared("data", "kannada_mnist")
    m = load("kannada")
    m.build(raw, tmp_path, limit=60)
    comp = check_numpy_layout(tmp_path, 60, 60, (28, 28, 1))
    assert comp.train["label"].nunique() >= 8 and comp.test["label"].nunique() >= 8   # a random slice
    # train = Kannada-MNIST test set, test = Dig-MNIST, images paired with their labels
    x_tr = m.common.read_idx(raw / "X_kannada_MNIST_test-idx3-ubyte.gz")
    x_te = m.common.read_idx(raw / "X_dig_MNIST-idx3-ubyte.gz")
    y_te = m.common.read_idx(raw / "y_dig_MNIST-idx1-ubyte.gz")
    i_tr, i_te = m.common.subset(len(x_tr), 60), m.common.subset(len(x_te), 60)
    assert (comp.pixels("train")[..., 0] == x_tr[i_tr]).all()
    assert (comp.pixels("test")[..., 0] == x_te[i_te]).all()
    assert comp.test["label"].tolist() == y_te[i_te].tolist()


def test_hymenoptera_build_class_folders_with_labelled_test(tmp_path):
    raw = need_shared("data", "hymenoptera")
    m = load("hymenoptera")
    m.build(raw, tmp_path, limit=4)
    comp = read_competition(tmp_path)
    assert comp.layout == "class_folders"
    assert len(comp.train) == 8 and comp.train["label"].value_counts().to_dict() == {"ants": 4, "bees": 4}
    assert len(comp.test) == 8 and sorted(comp.test["label"].unique()) == ["ants", "bees"]   # scored
    assert all(comp.test["id"].str.split("/").str[0] == comp.test["label"])
    assert not (tmp_path / "val").exists()       # val/ became the test folder, not extra training rows


def test_hymenoptera_build_all_files(tmp_path):
    raw = need_shared("data", "hymenoptera")
    load("hymenoptera").build(raw, tmp_path)
    comp = read_competition(tmp_path)     # every file passes the kit's checks, quirks included
    assert comp.train["label"].value_counts().to_dict() == {"ants": 124, "bees": 121}
    assert comp.test["label"].value_counts().to_dict() == {"bees": 83, "ants": 70}


def test_workspace_refuses_a_foreign_folder(tmp_path):
    common = load("mnist").common
    (tmp_path / "mine.txt").write_text("not a scenario's")
    with pytest.raises(SystemExit, match="not empty"):
        common.Workspace(str(tmp_path), keep=True, name="t")
    ws = common.Workspace(str(tmp_path / "new"), keep=True, name="t")
    (ws.models / "old").mkdir(parents=True)
    common.Workspace(str(tmp_path / "new"), keep=True, name="t")   # its own folder: kit outputs emptied
    assert not ws.models.exists() and (tmp_path / "new" / common.MARKER).is_file()


def test_result_line_has_every_field():
    common = load("mnist").common
    r = common.Result(dataset="mnist", model="test_resnet@28px", n_folds=5, folds=[0], rows=60000,
                      rows_total=60000, epochs=8, wall_s=612.4, metric="accuracy", cv=0.99123, test=0.9931,
                      reference="Keras MLP 98.40%")
    line = r.line()
    for part in ("dataset=mnist", "model=test_resnet@28px", "folds=1/5", "epochs=8", "wall=612s",
                 "cv_accuracy=0.99123", "test_accuracy=0.99310"):
        assert part in line
    assert "| 99.12% | 99.31% |" in r.row() and "10m12s" in r.row()
