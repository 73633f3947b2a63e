"""Stratified / grouped folds, their checks, and the folds file contract."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from foldkit import config
from foldkit.folds.file import make_folds, read_folds, write_folds
from foldkit.folds.split import FoldsError, assign_folds, check_table, stratified_subsample


def table(labels, **extra):
    t = pd.DataFrame({"id": [f"i{k}" for k in range(len(labels))], "label": labels})
    for k, v in extra.items():
        t[k] = v
    return t


def test_each_fold_within_one_of_ideal_per_class():
    rng = np.random.default_rng(1)
    labels = rng.choice(["a", "b", "c", "d"], size=1003, p=[0.55, 0.3, 0.1, 0.05])
    t = table(labels)
    folds = assign_folds(t, 5, seed=3)
    assert sorted(set(folds)) == [0, 1, 2, 3, 4]
    for c in "abcd":
        n = (labels == c).sum()
        per_fold = np.bincount(folds[labels == c], minlength=5)
        assert np.all(np.abs(per_fold - n / 5) < 1), (c, per_fold)


def test_groups_never_span_two_folds():
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 60, size=600)
    labels = np.where(rng.random(600) < 0.3, "pos", "neg")
    t = table(labels, patient=groups)
    folds = assign_folds(t, 5, seed=0, group_col="patient")
    per_group = pd.Series(folds).groupby(groups).nunique()
    assert (per_group == 1).all()
    assert len(set(folds)) == 5


def test_same_seed_same_folds_other_seed_other_folds():
    labels = np.array(["x", "y"] * 100)
    a = assign_folds(table(labels), 5, seed=7)
    b = assign_folds(table(labels), 5, seed=7)
    c = assign_folds(table(labels), 5, seed=8)
    assert (a == b).all() and not (a == c).all()


def test_rare_class_error_names_class_and_count():
    t = table(["a"] * 20 + ["rare"] * 3)
    with pytest.raises(FoldsError) as e:
        check_table(t, 5, rare_classes="error")
    assert "'rare' has 3" in str(e.value) and "--n-folds 3" in str(e.value)


def numpy_competition(root, labels, side=4):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.save(root / "x_train.npy", rng.integers(0, 255, (len(labels), side, side), dtype=np.uint8))
    np.save(root / "y_train.npy", np.array(labels))
    return root


@pytest.mark.parametrize("mode", ["warn", "train-only"])
def test_rare_classes_with_one_sample_make_folds_and_are_recorded(tmp_path, mode):
    labels = ["a"] * 30 + ["b"] * 30 + ["one"] + ["two"] * 2
    root = numpy_competition(tmp_path / "in", labels)
    logs = []
    cfg = config.resolve({"input_dir": str(root), "folds_dir": str(tmp_path / "f"),
                          "models_dir": str(tmp_path / "m"), "rare_classes": mode})
    meta = make_folds(cfg, log=logs.append)
    assert any("'one' (1)" in m and "'two' (2)" in m for m in logs), logs
    t, m = read_folds(tmp_path / "f")
    assert m["rare_classes"]["classes"] == {"one": 1, "two": 2}
    rare = t["label"].isin(["one", "two"]).to_numpy()
    if mode == "warn":       # every sample is validated exactly once, as StratifiedKFold does
        assert set(t["fold"]) == set(range(5)) and (t["fold"] >= 0).all()
    else:                    # train-only: in the training part of every fold, validated in none
        assert (t.loc[rare, "fold"] == -1).all() and (t.loc[~rare, "fold"] >= 0).all()
        assert m["rare_classes"]["train_only_rows"] == 3
    assert meta["rows"] == len(labels)


def test_many_classes_print_a_compact_table_and_write_the_full_one(tmp_path):
    labels = [f"breed_{k:03d}" for k in range(120) for _ in range(5 + k % 7)]
    root = numpy_competition(tmp_path / "in", labels)
    cfg = config.resolve({"input_dir": str(root), "folds_dir": str(tmp_path / "f"), "models_dir": str(tmp_path / "m")})
    meta = make_folds(cfg, log=lambda m: None)
    text = meta["counts_text"]
    assert len(text.splitlines()) <= 10 and max(len(line) for line in text.splitlines()) < 200
    assert "120 classes; rarest: breed_000 (5)" in text and "fold_counts.csv" in text
    full = pd.read_csv(tmp_path / "f" / "fold_counts.csv", index_col=0)
    assert full.shape == (5, 121) and full["total"].sum() == len(labels)


def test_nan_labels_and_duplicate_ids():
    t = table(["a", None, "b", "a", "b", ""] * 3)
    with pytest.raises(FoldsError, match=r"data rows \[2, 6, 8"):
        check_table(t, 2)
    t = table(["a", "b"] * 5)
    t.loc[3, "id"] = "i0"
    with pytest.raises(FoldsError, match=r"appear more than once, e.g. \['i0'\]"):
        check_table(t, 2)


def test_missing_group_column():
    with pytest.raises(FoldsError, match="--group-col 'site'"):
        check_table(table(["a", "b"] * 5), 2, group_col="site")


def test_limit_keeps_class_proportions_and_order():
    labels = np.array(["a"] * 800 + ["b"] * 200)
    t = table(labels)
    s = stratified_subsample(t, 100, seed=0)
    assert len(s) == 100 and (s["label"] == "b").sum() == 20
    idx = s["id"].str[1:].astype(int).to_numpy()
    assert (np.diff(idx) > 0).all()


def _demo_cfg(tmp_path, **kw):
    from foldkit.data.demo import build_demo
    build_demo(tmp_path / "in")
    return config.resolve({"input_dir": str(tmp_path / "in"), "folds_dir": str(tmp_path / "folds"),
                           "models_dir": str(tmp_path / "models"), **kw})


def test_folds_file_is_byte_identical_and_round_trips(tmp_path):
    cfg = _demo_cfg(tmp_path)
    m1 = make_folds(cfg, log=lambda *_: None)
    first = (tmp_path / "folds" / "train_folds.csv").read_bytes()
    m2 = make_folds(cfg, log=lambda *_: None)
    assert m1["status"] == "written" and m2["status"] == "unchanged"
    assert (tmp_path / "folds" / "train_folds.csv").read_bytes() == first
    t, meta = read_folds(tmp_path / "folds")
    assert meta["sha256"] == meta["sha256_now"] == m1["sha256"]
    assert list(t.columns) == ["id", "label", "path", "fold"]
    assert t["id"].str.len().eq(4).all()          # leading zeros survive
    assert meta["classes"] == list(range(10)) and meta["layout"] == "csv_images"


def test_changed_settings_refused_when_models_depend_on_folds(tmp_path):
    cfg = _demo_cfg(tmp_path)
    sha = make_folds(cfg, log=lambda *_: None)["sha256"]
    (tmp_path / "models" / "exp1").mkdir(parents=True)
    (tmp_path / "models" / "exp1" / "config.json").write_text(json.dumps({"folds_sha256": sha}))
    with pytest.raises(FoldsError, match=r"exp1"):
        make_folds(config.resolve(cfg.to_dict() | {"seed": 1}), log=lambda *_: None)
    assert read_folds(tmp_path / "folds")[1]["sha256_now"] == sha
    m = make_folds(config.resolve(cfg.to_dict() | {"seed": 1, "force": True}), log=lambda *_: None)
    assert m["status"] == "replaced"
    assert (tmp_path / "folds" / f"train_folds.{sha[:8]}.csv").is_file()


def test_write_is_atomic_no_temp_files_left(tmp_path):
    t = table(["a", "b"] * 10)
    t["fold"] = assign_folds(t, 2)
    write_folds(t, {}, tmp_path, tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folds_meta.json", "train_folds.csv"]


def test_cli_limit_and_clear_error(tmp_path):
    from foldkit.data.demo import build_demo
    build_demo(tmp_path / "in")
    run = lambda *a: subprocess.run([sys.executable, str(REPO / "src" / "make_folds.py"), "--input-dir",
                                     str(tmp_path / "in"), "--folds-dir", str(tmp_path / "f"), *a],
                                    capture_output=True, text=True)
    r = run("--limit", "500", "--n-folds", "4")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "f" / "folds_meta.json").read_text())
    assert meta["rows"] == 500 and meta["rows_read"] == 1437 and meta["limit"] == 500
    r = run("--n-folds", "1", "--folds-dir", str(tmp_path / "g"))
    assert r.returncode != 0 and "error: --n-folds must be at least 2" in r.stderr
    assert "Traceback" not in r.stderr


def test_later_steps_find_the_competition_the_folds_were_made_from(tmp_path):
    from foldkit.data.reading import reading_settings
    cfg = _demo_cfg(tmp_path)
    meta = make_folds(cfg, log=lambda *_: None)
    got = reading_settings(config.resolve({}), meta)                                  # no --input-dir
    assert got["input_dir"] == str((tmp_path / "in").resolve())
    other = str(tmp_path / "elsewhere")
    assert reading_settings(config.resolve({"input_dir": other}), meta)["input_dir"] == other   # the flag wins
