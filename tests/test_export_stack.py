"""export.py with a stacked experiment (issue 29): stack -> predict -> export -> the bundle's torch and onnx
runners, in a fresh folder with the network blocked, write predict.py's submission byte for byte; on the
houses competition (photo + table, RMSLE) and a multi-label one (Planet), LightGBM's text trees; scikit-learn's
trees (joblib) round-trip and their version check on their own (its stack is minutes on a loaded 2-core CPU)."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import need_shared, write_png
from test_export import _fresh_copy, _main, _offline_env
from test_stack import houses_competition

# torch not installed for the onnx runner: test_export's NO_TORCH (sys.modules['torch'] = None) also breaks
# scikit-learn's import (scipy's array API probe reads sys.modules['torch'].Tensor), which the trees need
NO_TORCH = """import sys


class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, NoTorch())
"""
TRAIN = ["--model", "test_resnet", "--no-pretrained", "--img-size", "32", "--epochs", "1", "--batch-size", "16",
         "--workers", "0", "--fold", "all", "--no-progress", "--warmup-epochs", "0"]


def _stack_predict_export(tmp, paths, train, booster, plan):
    """One image experiment `img` trained on 2 folds, stacked into `st` (stack.py's job, its report left out),
    predict.py's submission of `plan` (the reference) and export.py's bundle of the same plan with ONNX files.
    Returns (the reference submission, the bundle)."""
    from foldkit import config
    from foldkit.stack.stacking import run_stack
    _main("train", [*paths, *TRAIN, "--experiment", "img", *train])
    flags = dict(zip((p[2:].replace("-", "_") for p in paths[::2]), paths[1::2]))
    run_stack(config.resolve(flags, experiment="st", booster=booster, progress=False), log=lambda *a: None)
    _main("predict", [*paths, "--experiments", plan, "--no-report", "--no-progress",
                      "--submissions-dir", str(tmp / "ref")])
    (ref,) = (tmp / "ref").glob(plan.replace(",", "+") + "_cv*.csv")
    out = tmp / "bundle"
    _main("export", [*paths, "--experiments", plan, "--onnx", "--out", str(out), "--workers", "0"])
    return ref, out


def _offline(bundle, comp, tmp, runner):
    """predict_offline.py of a fresh copy of the bundle, network blocked (torch absent for the onnx runner)."""
    b = _fresh_copy(bundle, tmp / runner)
    out = tmp / f"{runner}.csv"
    r = subprocess.run([sys.executable, str(b / "predict_offline.py"), "--input-dir", str(comp), "--out", str(out),
                        "--runner", runner, "--workers", "0", "--no-progress"], cwd=tmp,
                       env=_offline_env(tmp / runner, NO_TORCH if runner == "onnx" else ""),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{runner} runner" in r.stdout and f"from {b / 'wheels'}" in r.stdout     # the bundle's own foldkit
    return out


def test_houses_stack_bundle_runners_write_predict_py_submission(tmp_path):
    """60 real houses + 20 test houses (photo at 32 px + table), an image model for RMSLE stacked with the table
    in LightGBM trees: the bundle carries the image models once, each fold's text trees and feature spec and
    the LightGBM version; both runners write predict.py's file byte for byte."""
    table, paths = houses_competition(tmp_path, 60)
    _main("make_folds", [*paths, "--label-col", "price", "--n-folds", "2"])
    ref, out = _stack_predict_export(tmp_path, paths, ["--metric", "rmsle"], "lightgbm", "st")
    man = json.loads((out / "foldkit_bundle.json").read_text())
    import lightgbm
    assert man["boosters"] == {"lightgbm": lightgbm.__version__}
    assert [(e["experiment"], e["fold"]) for e in man["members"]] == [("st", 0), ("st", 1)]
    assert [(e["experiment"], e["fold"]) for e in man["images"]] == [("img", 0), ("img", 1)]
    assert all(e["booster"] == "lightgbm" and e["test_table"] == "test.csv" for e in man["members"])
    spec = json.loads((out / man["members"][0]["trees"]).read_text())
    assert spec["transform"] == "log1p" and {"bedrooms", "area", "zipcode"} <= {f["name"] for f in spec["features"]}
    assert (out / "trees" / spec["models"][0][0]["file"]).read_text().startswith("tree\n")   # LightGBM's text model
    for runner in ("torch", "onnx"):
        assert _offline(out, tmp_path / "in", tmp_path, runner).read_bytes() == ref.read_bytes(), runner
    _onnx_is_torch_to_float32_rounding(out, tmp_path / "in")


def test_scikit_learn_trees_round_trip_through_joblib_and_their_version_is_checked(tmp_path):
    """A stacked fold of scikit-learn trees written as the bundle writes it and read back predicts the same
    values bit for bit; the manifest pins scikit-learn's version and another one is refused in one line."""
    import sklearn
    from foldkit.export import stacks
    from foldkit.export.build import slug
    from foldkit.predict.stacked import StackedFold, trees_predict
    from foldkit.stack.stacking import fit_fold
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3))
    y = np.exp(2 + x[:, 0] + 0.3 * rng.normal(size=120))
    fold = object.__new__(StackedFold)       # a stacked fold as load_stacked makes it, without an experiment
    fold.experiment, fold.fold, fold.inputs, fold.stacked = "st", 0, [], {"booster": "sklearn", "test_table": None}
    fold.spec = {"features": [], "members": [], "task": "regression", "n_classes": 0, "transform": "log1p",
                 "models": fit_fold("sklearn", x, y, [], "regression", 0, [0], np.arange(120), "log1p")}
    entries = stacks.write_stacks([fold], tmp_path, slug)
    spec = stacks.load_spec(tmp_path, entries[("st", 0)])
    assert [rec["file"] for rec in json.loads((tmp_path / "trees" / "st__fold0.json").read_text())["models"][0]] == \
        ["st__fold0__seed0_label0.joblib"]
    assert np.array_equal(trees_predict(spec, x), trees_predict(fold.spec, x))
    man = {"boosters": stacks.boosters(entries.values())}
    assert man["boosters"] == {"scikit-learn": sklearn.__version__}
    stacks.check_boosters(man)
    man["boosters"]["scikit-learn"] = "0.0.1"
    with pytest.raises(stacks.StackBundleError, match=r"written by scikit-learn 0\.0\.1, this Python has .*pip install"):
        stacks.check_boosters(man)


def _onnx_is_torch_to_float32_rounding(out, comp_dir):
    """The onnx runner's image inputs are the torch runner's bit for bit; its regression values differ only
    by onnxruntime's float32 kernels (summation order): relative 1e-6 at most (about 2e-8 measured). A
    submission of the image models' values themselves can differ in its last digits (docs/export.md); the
    trees above, piecewise constant, give the same value."""
    import torch
    from foldkit import config
    from foldkit.data.augment import eval_transform
    from foldkit.export import bundle
    from foldkit.export.stacks import image_entries
    man = bundle.read_manifest(out)
    comp, _ = bundle.open_test_set(man, comp_dir)
    e = image_entries(man)[0]
    prep, dc = bundle.member_preparation(e), e["checkpoint"]["data_config"]
    images = [im[prep] for im in bundle.table_images(comp, comp.test, "test", [prep])]
    tf = eval_transform(dc)
    torch_x = np.stack([tf(torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)).numpy() for im in images])
    assert dc["crop_pct"] != 1 and np.array_equal(torch_x, np.stack([bundle.eval_preprocess(im, dc) for im in images]))
    cfg = config.resolve(device="cpu", workers=0, progress=False)
    for t, o in zip(bundle.predict_torch(out, man, comp, cfg), bundle.predict_onnx(out, man, comp, cfg)):
        assert np.abs(o / t - 1).max() < 1e-6


def planet_competition(tmp, n_train=48, n_test=12):
    """n_train + n_test Planet sample images at 32 px with three of their tags (clear, primary, agriculture:
    three boosters per fold, not 17; an image with none of them is `clear`), and one table column, `green`: the
    image's mean green level (a per-image number any competition's table could hold)."""
    import cv2
    src = need_shared("data", "planet_sample")
    labels = pd.read_csv(src / "labels.csv", dtype=str).head(n_train + n_test).rename(columns={"image_name": "id"})
    comp = tmp / "in"
    green = []
    for k, name in enumerate(labels["id"]):
        img = cv2.resize(cv2.imread(str(src / "train" / f"{name}.jpg")), (32, 32))
        write_png(comp / ("train" if k < n_train else "test") / f"{name}.png", img)
        green.append(round(float(img[..., 1].mean()), 3))
    labels["green"] = green
    keep = ("clear", "primary", "agriculture")
    labels["tags"] = [" ".join(t for t in tags.split() if t in keep) or "clear" for tags in labels["tags"]]
    labels[:n_train].to_csv(comp / "train.csv", index=False)
    labels[n_train:][["id", "green"]].to_csv(comp / "test.csv", index=False)
    labels[n_train:][["id"]].assign(tags="clear primary").to_csv(comp / "sample_submission.csv", index=False)
    return ["--input-dir", str(comp), "--folds-dir", str(tmp / "folds"), "--models-dir", str(tmp / "m")]


def test_multilabel_stack_blended_with_its_image_model_bundle_writes_predict_py_submission(tmp_path, capsys):
    """48 + 12 Planet images (3 tags), one table column: the stack (LightGBM's text trees, the version pinned)
    blended with its own image experiment; both runners write predict.py's file byte for byte. A missing test
    table and --int8 are one line each."""
    from foldkit.export import bundle
    paths = planet_competition(tmp_path)
    _main("make_folds", [*paths, "--label-col", "tags", "--task", "multilabel", "--n-folds", "2"])
    ref, out = _stack_predict_export(tmp_path, paths, [], "lightgbm", "st,img")
    man = json.loads((out / "foldkit_bundle.json").read_text())
    import lightgbm
    assert man["boosters"] == {"lightgbm": lightgbm.__version__} and len(man["images"]) == 2   # img's folds once
    assert [e.get("booster") for e in man["members"]] == ["lightgbm", "lightgbm", None, None]
    spec = json.loads((out / man["members"][0]["trees"]).read_text())
    assert len(spec["models"][0]) == 3                                           # one booster per tag
    assert (out / "trees" / spec["models"][0][0]["file"]).read_text().startswith("tree\n")   # LightGBM's text model
    assert len(pd.read_csv(ref)) == 12 and pd.read_csv(ref)["tags"].str.contains(" ").any()
    for runner in ("torch", "onnx"):
        assert _offline(out, tmp_path / "in", tmp_path, runner).read_bytes() == ref.read_bytes(), runner
    capsys.readouterr()
    offline = ["--bundle", str(out), "--runner", "onnx", "--out", str(tmp_path / "x.csv")]
    shutil.copytree(tmp_path / "in", tmp_path / "no_table")
    (tmp_path / "no_table" / "test.csv").unlink()
    with pytest.raises(SystemExit):
        bundle.main([*offline, "--input-dir", str(tmp_path / "no_table")])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "test.csv: no test table" in err, err
    with pytest.raises(SystemExit):
        _main("export", [*paths, "--experiments", "st", "--int8", "--out", str(tmp_path / "b8")])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "export the stacked plan without --int8" in err, err
