"""export.py: the offline bundle for Kaggle code competitions runs anywhere with no network and
predicts exactly what predict.py predicts; its notebook runs; ONNX matches PyTorch."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from test_predict import BLOCK_NET
from test_push import DATASET, KERNEL
from test_push import _calls as pushed_calls, _export as export_with, _kaggle as stand_in_kaggle

NO_TORCH = "import sys\nsys.modules['torch'] = None   # `import torch` raises ImportError\n"
FAST = ["--no-pretrained", "--model", "test_resnet", "--img-size", "32", "--crop-pct", "1.0", "--no-hflip", "--epochs", "1",
        "--warmup-epochs", "0", "--lr", "0.01", "--batch-size", "32", "--no-progress", "--workers", "0"]


def _main(script, argv):
    """Run one of the kit's CLIs in this process (its real main(); saves an interpreter start)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(script, REPO / "src" / f"{script}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main(argv)


def _keep_test_images(comp, n):
    """The demo competition with its first n test images only (each offline run predicts them all)."""
    import pandas as pd
    sample = pd.read_csv(comp / "sample_submission.csv", dtype=str).head(n)
    sample.to_csv(comp / "sample_submission.csv", index=False)
    sol = pd.read_csv(comp / "solution.csv", dtype=str)
    sol[sol["id"].isin(sample["id"])].to_csv(comp / "solution.csv", index=False)
    for f in (comp / "test").iterdir():
        if f.stem not in set(sample["id"]):
            f.unlink()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The demo competition (2 folds over 300 rows, one epoch each) trained for macro F1, so the plan
    holds per-class thresholds fitted on OOF (--thresholds auto); exported with ONNX and hflip TTA,
    and predict.py's submission for the same members, TTA and plan."""
    from foldkit import config
    from foldkit.data.demo import build_demo
    from foldkit.folds.file import make_folds
    root = tmp_path_factory.mktemp("export")
    build_demo(root / "input")
    _keep_test_images(root / "input", 48)
    paths = ["--input-dir", str(root / "input"), "--folds-dir", str(root / "folds"),
             "--models-dir", str(root / "models")]
    make_folds(config.resolve(input_dir=str(root / "input"), folds_dir=str(root / "folds"),
                              models_dir=str(root / "models"), limit=300, n_folds=2), log=lambda *a: None)
    _main("train", [*paths, *FAST, "--fold", "all", "--metric", "f1_macro", "--experiment", "tiny"])
    _main("predict", [*paths, "--experiments", "tiny", "--tta", "hflip", "--no-report", "--no-progress",
                      "--submissions-dir", str(root / "subs")])
    (ref,) = (root / "subs").glob("tiny_cv*.csv")
    assert ref.read_text().count("\n") == 49 and len(set(ref.read_text().split()[1:])) > 3   # varied labels
    return root, paths, ref


@pytest.fixture(scope="module")
def bundle_dir(exported, tmp_path_factory):
    root, paths, _ = exported
    out = tmp_path_factory.mktemp("b") / "bundle"
    r = subprocess.run([sys.executable, str(REPO / "src" / "export.py"), *paths, "--experiments", "tiny",
                        "--tta", "hflip", "--onnx", "--out", str(out), "--time-budget", "0.0001",
                        "--kaggle-dataset", "someone/tiny-bundle"], capture_output=True, text=True, timeout=600,
                       env=_offline_env(out.parent))   # the wheel is built with no network too
    assert r.returncode == 0, r.stdout + r.stderr
    return out, r.stdout


def _offline_env(tmp_path, extra=""):
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCK_NET + extra)
    return dict(os.environ, PYTHONPATH=str(site))


def _fresh_copy(bundle, tmp_path):
    """The bundle alone in a fresh folder, as a Kaggle dataset is: nothing of the repository around it."""
    dst = tmp_path / "kaggle" / "input" / "my-bundle"
    shutil.copytree(bundle, dst)
    return dst


def test_bundle_contents_and_export_messages(bundle_dir, exported):
    out, stdout = bundle_dir
    man = json.loads((out / "foldkit_bundle.json").read_text())
    plan = man["plan"]
    assert man["format"] == 2 and plan["tta"] == ["none", "hflip"] and plan["ensemble"] == "mean"
    assert plan["classes"] == man["classes"] == list(range(10)) and plan["members"] == [["tiny", 0], ["tiny", 1]]
    assert [n for n, _ in plan["steps"]] == ["thresholds"] and len(plan["steps"][0][1]) == 10   # fitted for F1
    assert plan["submission_mode"] == "label" and man["sample_submission"] == {"columns": ["id", "label"], "rows": 48}
    assert [(e["experiment"], e["fold"]) for e in man["members"]] == [("tiny", 0), ("tiny", 1)]
    for e in man["members"]:
        assert (out / e["weights"]).is_file() and (out / e["onnx"]).is_file()
        assert e["onnx_max_abs_diff"] <= 1e-4            # the stated ONNX tolerance
    assert json.loads((out / "dataset-metadata.json").read_text())["id"] == "someone/tiny-bundle"
    assert "bundle: " in stdout and " MB" in stdout and "kaggle datasets create -p" in stdout
    assert "runtime estimate: 48 test images at" in stdout and "-> 48 test images in" in stdout
    assert "WARNING: on cpu the ensemble needs" in stdout and "over the 0.0001 h budget" in stdout
    # a bundle is never written over an existing folder
    r = subprocess.run([sys.executable, str(REPO / "src" / "export.py"), *exported[1], "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "exists and is not empty" in r.stderr and "Traceback" not in r.stderr


def test_offline_script_in_a_fresh_folder_matches_predict_byte_for_byte(bundle_dir, exported, tmp_path):
    root, _, ref = exported
    b = _fresh_copy(bundle_dir[0], tmp_path)
    work = tmp_path / "working"
    work.mkdir()
    r = subprocess.run([sys.executable, str(b / "predict_offline.py"), "--input-dir", str(root / "input"),
                        "--out", "submission.csv", "--workers", "0", "--no-progress"], cwd=work,
                       env=_offline_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"from {b / 'wheels'}" in r.stdout                   # foldkit imported from the bundle's wheel
    assert (work / "submission.csv").read_bytes() == ref.read_bytes()
    # a second run never replaces the submission silently
    r = subprocess.run([sys.executable, str(b / "predict_offline.py"), "--input-dir", str(root / "input"),
                        "--out", "submission.csv"], cwd=work, env=_offline_env(tmp_path), capture_output=True, text=True)
    assert r.returncode == 2 and "pass --overwrite" in r.stderr


def test_wheel_installs_with_no_index_and_runs_installed(bundle_dir, exported, tmp_path):
    root, _, ref = exported
    b = _fresh_copy(bundle_dir[0], tmp_path)
    target = tmp_path / "site-packages"
    env = _offline_env(tmp_path)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(b / "wheels"),
                        "foldkit", "--no-deps", "--target", str(target), "--quiet"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    env = _offline_env(tmp_path, NO_TORCH)   # quick: the torch runner has its own test
    env["PYTHONPATH"] = os.pathsep.join([str(target), env["PYTHONPATH"]])
    r = subprocess.run([sys.executable, "-m", "foldkit.export.bundle", "--bundle", str(b), "--input-dir",
                        str(root / "input"), "--out", str(tmp_path / "s.csv"), "--runner", "onnx"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"from {target / 'foldkit'}" in r.stdout
    assert (tmp_path / "s.csv").read_bytes() == ref.read_bytes()


def test_notebook_is_valid_and_runs_top_to_bottom(bundle_dir, exported, tmp_path):
    import nbformat
    root, _, ref = exported
    b = _fresh_copy(bundle_dir[0], tmp_path)
    nb = nbformat.read(b / "predict_offline.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata["tags"]
    # the onnx runner with torch absent keeps this test quick; the torch runner has its own test
    code[0].source = f"INPUT_DIR = {str(root / 'input')!r}\nOUT = {str(tmp_path / 'nb.csv')!r}\nRUNNER = 'onnx'"
    script = "\n\n".join(c.source for c in code[:-1])   # the last cell only displays the head
    r = subprocess.run([sys.executable, "-c", script], cwd=b, env=_offline_env(tmp_path, NO_TORCH),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "nb.csv").read_bytes() == ref.read_bytes()


def test_onnx_runner_without_torch_gives_the_same_submission(bundle_dir, exported, tmp_path):
    root, _, ref = exported
    b = _fresh_copy(bundle_dir[0], tmp_path)
    r = subprocess.run([sys.executable, str(b / "predict_offline.py"), "--input-dir", str(root / "input"),
                        "--out", str(tmp_path / "onnx.csv")], cwd=tmp_path,
                       env=_offline_env(tmp_path, NO_TORCH), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "onnx runner" in r.stdout                          # auto picked it: torch is not importable
    assert (tmp_path / "onnx.csv").read_bytes() == ref.read_bytes()


def test_runners_and_fp16_safetensors_weights_match_the_kit_probabilities(bundle_dir, exported, tmp_path):
    from foldkit import config
    from foldkit.export import bundle
    from foldkit.data.reading import read_competition
    from foldkit.runtime.device import pick_device
    from foldkit.experiment import find_experiments
    from foldkit.export.build import write_weights
    from foldkit.predict.inference import load_members, predict_ensemble
    from foldkit.predict.predicting import make_sources
    root = exported[0]
    out = bundle_dir[0]
    man = bundle.read_manifest(out)
    plan = man["plan"]
    comp = read_competition(root / "input")
    members = load_members(find_experiments(root / "models", ["tiny"]))
    _, kit = predict_ensemble(members, make_sources(comp, comp.test, "test", members), tta=plan.tta,
                              device=pick_device("cpu"), progress=False, return_members=True)
    cfg = config.resolve(device="cpu", workers=0, progress=False)
    torch_members = bundle.predict_torch(out, man, comp, cfg)
    assert all(np.array_equal(a, b) for a, b in zip(torch_members, kit))
    onnx_members = bundle.predict_onnx(out, man, comp, cfg)
    assert max(np.abs(a - b).max() for a, b in zip(onnx_members, kit)) < 1e-5
    # the thresholds the plan applies change labels: the flat mean predict.py never submitted would differ
    assert (plan.apply(kit).argmax(1) != plan.apply(kit, raw=True).argmax(1)).any()
    entries = write_weights(members, tmp_path, half=True, safetensors=True)
    assert all(e["format"] == "safetensors-fp16" for e in entries)
    small = sum((tmp_path / e["weights"]).stat().st_size for e in entries)
    assert small < 0.55 * sum((out / e["weights"]).stat().st_size for e in man["members"])
    half = plan.apply(bundle.predict_torch(tmp_path, dict(man, members=entries), comp, cfg))
    ref = plan.apply(kit)
    assert np.abs(half - ref).max() < 1e-2 and (half.argmax(1) == ref.argmax(1)).mean() > 0.95


def test_a_corrupt_or_old_manifest_is_one_error(bundle_dir, tmp_path):
    from foldkit.export.bundle import MANIFEST, BundleError, read_manifest
    man = json.loads((bundle_dir[0] / MANIFEST).read_text())
    cases = {"garbage": '{"format": 2, "members": [', "old": json.dumps(dict(man, format=1)),
             "plan": json.dumps(dict(man, plan={"blend": "mean"})),
             "members": json.dumps(dict(man, members=man["members"][:1]))}
    msgs = {"garbage": "is not valid JSON .*the bundle is damaged", "old": "bundle format 1 but this foldkit reads "
            "format 2 \\(format 1 bundles record no blend or post-processing plan\\).*re-export",
            "plan": "`plan` cannot be read", "members": "members do not match the plan's"}
    for case, text in cases.items():
        (tmp_path / case).mkdir()
        (tmp_path / case / MANIFEST).write_text(text)
        with pytest.raises(BundleError, match=msgs[case]):
            read_manifest(tmp_path / case)
    r = subprocess.run([sys.executable, "-m", "foldkit.export.bundle", "--bundle", str(tmp_path / "garbage"), "--input-dir",
                        str(tmp_path)], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO / "src")))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "error: " in r.stderr and "Traceback" not in r.stderr


def test_kaggle_input_discovery_and_output_place(exported, tmp_path, monkeypatch):
    from foldkit.export import bundle
    root = exported[0]
    kaggle = tmp_path / "input"
    (kaggle / "my-bundle").mkdir(parents=True)
    monkeypatch.setenv("FOLDKIT_KAGGLE_INPUT", str(kaggle))
    man = {"competition": "", "sample_submission": {"columns": ["id", "label"]}}
    with pytest.raises(bundle.BundleError, match="no competition found.*pass --input-dir"):
        bundle.find_input_dir(man)
    (kaggle / "digits").symlink_to(root / "input")
    assert bundle.find_input_dir(man) == kaggle / "digits"           # found by its sample's columns
    (kaggle / "other").symlink_to(root / "input")
    with pytest.raises(bundle.BundleError, match="several folders"):
        bundle.find_input_dir(man)
    assert bundle.find_input_dir(dict(man, competition="other")) == kaggle / "other"
    monkeypatch.chdir(tmp_path)
    assert bundle.submission_path("", overwrite=False) == tmp_path / "submission.csv"


def test_runtime_estimate_scales_gpus_and_counts_what_fits():
    from foldkit.export.estimate import estimate
    measured = {"img_per_s": 100.0, "fixed_seconds": 0.0, "images": 256, "what": "test images", "device": "cuda",
                "gpu_class": "T4", "members": 5, "views": 2}
    est, lines = estimate(measured, 36_000, ["T4", "A100"], budget_h=0.05)
    assert est["seconds_here"] == pytest.approx(360) and est["per_gpu"]["A100"] == pytest.approx(90)
    assert not est["fits"]
    # 180 s budget, 10 member-views take 360 s: 5 fit
    assert any("WARNING: on cuda" in l and "about 5 member-view(s) fit" in l and "2 model(s) x 2 view(s)" in l
               for l in lines)
    cpu, lines = estimate(dict(measured, gpu_class=None, device="cpu"), 1000, ["T4"], budget_h=1)
    assert cpu["fits"] and cpu["per_gpu"] == {} and "T4: not estimated" in lines[1]


def test_export_help_is_fast():
    r = subprocess.run([sys.executable, "-X", "importtime", str(REPO / "src" / "export.py"), "--help"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "--onnx" in r.stdout and "--time-budget" in r.stdout
    assert "torch" not in r.stderr.split()


# export.py --push in one command on the trained `exported` competition (tests/test_push.py: the stand-in kaggle
# CLI and the push's errors); here, so the fixture's training is shared
def test_export_push_creates_the_dataset_and_pushes_the_notebook(exported, tmp_path):
    _, paths, _ = exported
    stand_in_kaggle(tmp_path)
    out = tmp_path / "bundle"
    r = export_with(tmp_path, [*paths, "--experiments", "tiny", "--out", str(out), "--push", DATASET, "--kernel", KERNEL,
                               "--competition", "digits-demo", "--kernel-gpu"], timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    calls = pushed_calls(tmp_path)
    argv = [c["argv"] for c in calls if "files" not in c]
    assert argv == [["datasets", "status", DATASET], ["datasets", "create", "-p", str(out), "--dir-mode", "zip"],
                    ["datasets", "status", DATASET], ["kernels", "push", "-p", str(out) + "-kernel"]]
    create, push = [c for c in calls if "files" in c]
    bundle_files = sorted(str(f.relative_to(out)) for f in out.rglob("*") if f.is_file())
    assert create["files"] == bundle_files and "foldkit_bundle.json" in bundle_files
    assert {f.split("/")[0] for f in bundle_files} >= {"checkpoints", "wheels", "predict_offline.ipynb"}
    assert create["metadata"] == {"title": "foldkit tiny", "id": DATASET, "licenses": [{"name": "CC0-1.0"}]}
    assert push["files"] == ["kernel-metadata.json", "predict_offline.ipynb"]
    assert push["metadata"] == {"id": KERNEL, "title": "Tiny Notebook", "code_file": "predict_offline.ipynb",
                                "language": "python", "kernel_type": "notebook", "is_private": "true",
                                "enable_gpu": "true", "enable_internet": "false", "dataset_sources": [DATASET],
                                "competition_sources": ["digits-demo"], "kernel_sources": [], "model_sources": []}
    assert (out.parent / "bundle-kernel" / "predict_offline.ipynb").read_bytes() == \
        (out / "predict_offline.ipynb").read_bytes()
    assert f"dataset {DATASET}: created, private" in r.stdout and "pushed and running on GPU" in r.stdout
    assert f"kaggle kernels status {KERNEL}" in r.stdout
    assert f"kaggle competitions submit digits-demo -k {KERNEL} -f submission.csv -v 3 -m" in r.stdout
    assert "upload with: kaggle datasets create" not in r.stdout


# --------------------------------------------------------------------------- export.py --int8

@pytest.fixture(scope="module")
def int8_bundle(exported, tmp_path_factory):
    root, paths, _ = exported
    out = tmp_path_factory.mktemp("b8") / "bundle"
    r = subprocess.run([sys.executable, str(REPO / "src" / "export.py"), *paths, "--experiments", "tiny", "--tta",
                        "hflip", "--int8", "--int8-calibration", "64", "--max-cv-drop", "0.5", "--out", str(out),
                        "--time-budget", "0"], capture_output=True, text=True, timeout=600, env=_offline_env(out.parent))
    assert r.returncode == 0, r.stdout + r.stderr
    return out, r.stdout


def _int8_oof_score(out, root):
    """The kit's score of the int8 models' OOF predictions, made here with the bundle's own ONNX runner pieces:
    each fold's int8 model on its validation rows (the folds file), the plan, metrics.score."""
    import onnxruntime as ort
    from foldkit.data.reading import read_competition
    from foldkit.export import bundle
    from foldkit.folds.file import read_folds
    from foldkit.metrics import score
    from foldkit.tasks import targets
    man = bundle.read_manifest(out)
    plan = man["plan"]
    table, meta = read_folds(root / "folds")
    comp = read_competition(root / "input")
    oof = np.zeros((len(table), len(plan.classes)))
    for e in man["members"]:
        rows = np.flatnonzero(table["fold"].to_numpy() == e["fold"])
        s = ort.InferenceSession(str(out / e["onnx_int8"]), providers=["CPUExecutionProvider"])
        images = bundle.table_images(comp, table.iloc[rows], "train", [bundle.member_preparation(e)])
        oof[rows] = np.concatenate([bundle.run_views(s, bundle.member_batch(b, e), plan.tta, plan.task)
                                    for b in bundle.batches(images, 64)])
    return score(plan.metric, targets(plan.task, table, meta), plan.finish(oof[None]))


def test_int8_bundle_is_scored_on_the_oof_and_predicts_offline_with_the_int8_models(int8_bundle, exported, tmp_path):
    from foldkit.oof import score_text
    root, _, ref = exported
    out, stdout = int8_bundle
    man = json.loads((out / "foldkit_bundle.json").read_text())
    q = man["int8"]
    assert q["used"] and q["methods"] == "static" and q["calibration_images"] == 64
    assert q["settings"]["format"] == "QDQ" and q["settings"]["per_channel"]
    assert q["cv"]["metric"] == "f1_macro" and q["cv"]["rows"] == 300 and q["cv"]["drop"] <= 0.5
    assert 0.5 < q["agreement"]["same_label"] <= 1 and 0 <= q["agreement"]["max_abs_diff"] <= 1
    assert q["img_per_s"]["onnx_fp32"] > 0 and q["img_per_s"]["onnx_int8"] > 0 and q["img_per_s"]["images"] == 300
    assert set(man["estimate"]["per_runner"]) == {"torch", "onnx_fp32", "onnx_int8"}
    for e in man["members"]:       # the fp32 files and keys are kept; the int8 files beside them
        assert (out / e["onnx"]).is_file() and (out / e["onnx_int8"]).is_file() and e["onnx_max_abs_diff"] <= 1e-4
    line = f"OOF CV f1_macro fp32 {score_text(q['cv']['fp32'])} | int8 {score_text(q['cv']['int8'])}"
    assert line in stdout and "runtime estimate by runner" in stdout
    # the CV export printed is the kit's score of the int8 models' OOF predictions
    assert _int8_oof_score(out, root) == pytest.approx(q["cv"]["int8"], abs=1e-12)
    # offline, torch importable: auto picks the onnx runner with the int8 models; a valid submission
    b = _fresh_copy(out, tmp_path)
    r = subprocess.run([sys.executable, str(b / "predict_offline.py"), "--input-dir", str(root / "input"),
                        "--out", str(tmp_path / "int8.csv")], cwd=tmp_path, env=_offline_env(tmp_path),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "onnx runner (int8 models)" in r.stdout and "validated" in r.stdout
    sub, fp32 = (p.read_text().splitlines() for p in (tmp_path / "int8.csv", ref))
    assert sub[0] == fp32[0] and [s.split(",")[0] for s in sub] == [s.split(",")[0] for s in fp32]
    assert {s.split(",")[1] for s in sub[1:]} <= {str(c) for c in range(10)}


def _broken_quantizer(src, dst, calibration, where, log=print):
    """A quantization gone wrong: the fp32 model with its classifier's bias pushed towards class 0."""
    import onnx
    from onnx import numpy_helper
    model = onnx.load(str(src))
    gemm = [n for n in model.graph.node if n.op_type == "Gemm"][-1]
    init = {i.name: i for i in model.graph.initializer}
    bias = numpy_helper.to_array(init[gemm.input[2]]).copy()
    bias[0] += 100.0
    init[gemm.input[2]].CopyFrom(numpy_helper.from_array(bias, gemm.input[2]))
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return "static"


def test_max_cv_drop_refuses_an_int8_bundle_that_loses_the_cv_in_one_line(exported, tmp_path, monkeypatch, capsys):
    from foldkit.export import int8
    _, paths, _ = exported
    monkeypatch.setattr(int8, "quantize_member", _broken_quantizer)
    out = tmp_path / "bundle"
    with pytest.raises(SystemExit) as e:
        _main("export", [*paths, "--experiments", "tiny", "--int8", "--int8-calibration", "8", "--max-cv-drop", "0.01",
                         "--out", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: --max-cv-drop 0.01: the int8 models lose")
    assert "no bundle written" in err and not out.exists() and not list(tmp_path.glob(".bundle*"))


def test_cv_drop_is_direction_aware():
    from foldkit import config
    from foldkit.export.build import ExportError, export_bundle
    from foldkit.export.int8 import Int8Error, check_drop, cv_drop
    with pytest.raises(ExportError, match="--int8-calibration and --max-cv-drop only apply to the int8 models"):
        export_bundle(config.resolve(max_cv_drop=0.1, int8_calibration=10))
    assert cv_drop("accuracy", 0.9, 0.8) == pytest.approx(0.1) and cv_drop("logloss", 0.3, 0.4) == pytest.approx(0.1)
    assert cv_drop("rmse", 1.0, 0.9) == pytest.approx(-0.1)            # int8 better: no drop
    res = {"cv": {"metric": "logloss", "fp32": 0.3, "int8": 0.4, "drop": cv_drop("logloss", 0.3, 0.4)}}
    check_drop(-1, res)                                               # negative: no limit
    check_drop(0.2, res)
    with pytest.raises(Int8Error, match="lose 0.10000 logloss"):
        check_drop(0.05, res)


def test_dynamic_quantization_where_static_fails(int8_bundle, tmp_path, monkeypatch):
    import onnxruntime as ort
    import onnxruntime.quantization as quantization
    from foldkit.data.images import eval_size
    from foldkit.export import int8
    out = int8_bundle[0]
    e = json.loads((out / "foldkit_bundle.json").read_text())["members"][0]

    def fails(*args, **kwargs):
        raise RuntimeError("no kernel for this op")
    monkeypatch.setattr(quantization, "quantize_static", fails)
    said = []
    method = int8.quantize_member(out / e["onnx"], tmp_path / "m.onnx", iter([]), e["onnx"], said.append)
    assert method == "dynamic" and len(said) == 1
    assert "static quantization of" in said[0] and "no kernel for this op" in said[0] and "dynamic quantization" in said[0]
    c, s = e["checkpoint"]["in_chans"], eval_size(e["checkpoint"]["data_config"])
    x = np.random.default_rng(0).normal(size=(4, c, s, s)).astype(np.float32)
    fp32, dyn = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
                 for p in (out / e["onnx"], tmp_path / "m.onnx"))
    assert fp32.shape == dyn.shape and np.abs(fp32 - dyn).max() < 0.25 * np.ptp(fp32)


# --------------------------------------------------------------------------- per runner, per CPU cores; the probe

def test_int8_bundle_estimates_each_runner_per_core_and_probes_the_runner(int8_bundle):
    out, stdout = int8_bundle
    cpu = json.loads((out / "foldkit_bundle.json").read_text())["runtime_cpu"]
    n = len(os.sched_getaffinity(0))
    assert cpu["cores_here"] == n and cpu["measured_threads"] == sorted({1, n}) and cpu["test_images"] == 48
    assert set(cpu["runners"]) == {"torch", "onnx_fp32", "onnx_int8"}
    # each runner's own fixed cost: torch loads checkpoints (the estimate's), an onnx runner creates sessions
    assert cpu["runners"]["torch"]["fixed_seconds"] == cpu["fixed_seconds"]
    assert 0 < cpu["runners"]["onnx_int8"]["fixed_seconds"] and 0 < cpu["runners"]["onnx_fp32"]["fixed_seconds"]
    for name, r in cpu["runners"].items():
        cores = r["cores"]
        assert {str(k) for k in cpu["measured_threads"]} <= set(cores) and 0 <= r["parallel_fraction"] <= 1
        for k, c in cores.items():      # seconds = its fixed cost + test images / img/s, the preparation included
            assert c["seconds"] == pytest.approx(r["fixed_seconds"] + 48 / c["img_per_s"])
            assert c["img_per_s"] < c["models_img_per_s"] and c["measured"] == (int(k) in cpu["measured_threads"])
        if n > 1:                       # Kaggle's 4 cores, extrapolated: never past linear, never below 1 core
            one, four = cores["1"]["models_img_per_s"], cores["4"]["models_img_per_s"]
            assert one <= four <= 4 * one * (1 + 1e-9) and not cores["4"]["measured"]
    if n > 1:
        assert "48 test images, 2 model(s) x 2 view(s): torch " in stdout
        assert f"on 4 cores (extrapolated from 1 and {n} measured, Amdahl's law" in stdout
    for runner in ("torch", "onnx"):
        p = cpu["probe"][runner]
        assert p["batch_size"] in {int(b) for b in p["tried"]} and p["threads"] in (1, "all")
        assert p["img_per_s"] == max(p["tried"].values()) and p["default"]["img_per_s"] > 0
        assert f"probe, {runner} runner:" in stdout


def test_offline_runner_applies_the_probe_or_the_flags_and_refuses_a_bad_thread_count(int8_bundle, exported,
                                                                                    monkeypatch, tmp_path, capsys):
    from foldkit.export import bundle
    root, _, _ = exported
    out = int8_bundle[0]
    probe = json.loads((out / "foldkit_bundle.json").read_text())["runtime_cpu"]["probe"]["onnx"]
    made, sizes = [], []
    session, batches = bundle.onnx_session, bundle.batches
    monkeypatch.setattr(bundle, "onnx_session", lambda path, threads=0: made.append(threads) or session(path, threads))
    monkeypatch.setattr(bundle, "batches", lambda items, size: sizes.append(size) or batches(items, size))
    argv = ["--input-dir", str(root / "input"), "--out", str(tmp_path / "s.csv"), "--overwrite"]
    bundle.main(argv, bundle_dir=out)
    want = 1 if probe["threads"] == 1 else len(os.sched_getaffinity(0))
    assert made == [want, want] and sizes == [probe["batch_size"]]
    assert (f"{want} thread(s) (probed at export), batch {probe['batch_size']} (probed at export)"
            in capsys.readouterr().out)
    made.clear(), sizes.clear()
    bundle.main([*argv, "--threads", "1", "--batch-size", "5"], bundle_dir=out)
    assert made == [1, 1] and sizes == [5] and "1 thread(s) (--threads), batch 5 (--batch-size)" in capsys.readouterr().out
    for bad in ("-1", "two"):
        with pytest.raises(SystemExit) as e:
            bundle.main([*argv, "--threads", bad], bundle_dir=out)
        err = capsys.readouterr().err
        assert e.value.code == 2 and "--threads" in err and "Traceback" not in err
    # a 1-thread choice probed on a machine of another size (a busy laptop) is not carried to Kaggle's 4 cores
    from foldkit import config
    here = len(os.sched_getaffinity(0))
    man = {"runtime_cpu": {"cores_here": here + 2, "probe": {"onnx": {"threads": 1, "batch_size": 8}}}}
    cfg, said = bundle.runner_settings(config.resolve(), man, "onnx")
    assert cfg.threads == here and "another number of cores" in said and cfg.batch_size == 8
    man["runtime_cpu"]["cores_here"] = here
    assert bundle.runner_settings(config.resolve(), man, "onnx")[0].threads == 1


def test_amdahl_extrapolation_and_the_estimate_lines():
    from foldkit.export import estimate as est
    p = est.amdahl(10.0, 18.0, 2)                         # 1.8x on 2 cores: 8/9 of the work parallel
    assert p == pytest.approx(8 / 9) and est.scaled(10.0, p, 4) == pytest.approx(30.0)
    assert est.amdahl(10.0, 25.0, 2) == 1.0 and est.scaled(10.0, 1.0, 4) == pytest.approx(40.0)   # capped: linear
    assert est.amdahl(10.0, 9.0, 2) == 0.0 and est.scaled(10.0, 0.0, 4) == pytest.approx(10.0)    # slower: flat
    assert est.amdahl(10.0, 10.0, 1) == 0.0
    runners = {name: {"parallel_fraction": 0.5, "cores": {str(k): {"seconds": s} for k, s in zip((1, 2, 4), secs)}}
               for name, secs in (("torch", (9000, 8400, 7800)), ("onnx_fp32", (5000, 4000, 2880)),
                                  ("onnx_int8", (100, 50, 21)))}
    lines = est.core_lines({"cores_here": 2, "measured_threads": [1, 2], "test_images": 10_000, "models": 5,
                            "views": 2, "runners": runners})
    assert lines[2] == ("10,000 test images, 5 model(s) x 2 view(s): torch 2h10 · ONNX fp32 48 min · ONNX int8 21 s "
                        "on 4 cores (extrapolated from 1 and 2 measured, Amdahl's law: parallel fraction torch 0.50, "
                        "ONNX fp32 0.50, ONNX int8 0.50)")
    assert lines[0].endswith("on 1 core (measured)") and lines[1].endswith("on 2 cores (measured)")
