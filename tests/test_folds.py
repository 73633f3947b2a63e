"""Stratified / grouped folds, their checks, and the folds file contract."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from foldkit import config
from foldkit.folds import (FoldsError, assign_folds, check_table, make_folds, read_folds,
                           stratified_subsample, write_folds)


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
        check_table(t, 5)
    assert "'rare' has 3" in str(e.value) and "--n-folds 3" in str(e.value)


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
    from foldkit.demo import build_demo
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
    from foldkit.demo import build_demo
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
    from foldkit.folds import input_dir_for
    cfg = _demo_cfg(tmp_path)
    meta = make_folds(cfg, log=lambda *_: None)
    assert input_dir_for(config.resolve({}), meta) == str((tmp_path / "in").resolve())   # no --input-dir
    other = str(tmp_path / "elsewhere")
    assert input_dir_for(config.resolve({"input_dir": other}), meta) == other           # the flag wins
