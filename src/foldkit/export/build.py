"""export.py's job: the offline inference bundle of an ensemble, for Kaggle code competitions.

    export_bundle(cfg)  experiments -> bundle/ (layout and manifest: foldkit.export.bundle)
                        the plan fitted on the OOF as predict.py fits it (predicting.make_plan,
                        same flags), written into the manifest for every runner to apply,
                        weights (copied, or fp16 / safetensors), the foldkit wheel (pip wheel,
                        no network), predict_offline.py + .ipynb, dataset-metadata.json for
                        `kaggle datasets create`, README.md, a measured runtime estimate,
                        and with --onnx each member as ONNX checked against PyTorch (onnxruntime),
                        with --int8 also quantized and scored against fp32 on the OOF (export.int8)

The bundle is written into a temporary folder beside --out and renamed onto it at the end, so
a failed export leaves nothing half-written; an existing non-empty --out is never replaced.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from foldkit import config
import foldkit
from foldkit.data.augment import eval_transform
from foldkit.data.images import eval_size
from foldkit.data.reading import open_competition
from foldkit.errors import FoldkitError
from foldkit.experiment import find_experiments
from foldkit.export import bundle, estimate, int8, stacks
from foldkit.export.bundle import MANIFEST
from foldkit.export.push import dataset_title
from foldkit.folds.file import read_folds
from foldkit.io import atomic_write_text, sha256_file
from foldkit.predict.stacked import image_members
from foldkit.report.words import plan_in_words
from foldkit.runtime.device import amp_dtype, pick_device, use_channels_last
from foldkit.tasks import TASKS, activate, task_of

ONNX_OPSET = 17
# Largest accepted |p_onnx - p_torch| over the softmax probabilities of a check batch (float32 on
# CPU differs by about 1e-7: summation order only).
ONNX_ATOL = 1e-4


class ExportError(FoldkitError, ValueError):
    """A bundle that cannot be written as asked; the message says why and what to do."""


def folds_competition(cfg):
    """The competition the folds were made from, opened as every step does (data.reading.open_competition);
    its sample and test set shape the bundle."""
    _, meta = read_folds(cfg.folds_dir)
    comp, reading = open_competition(cfg, meta, check_test=True)
    return comp, meta, reading


def slug(text: str, max_len: int = 50) -> str:
    """A Kaggle dataset slug (letters, digits, hyphens)."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")[:max_len].strip("-")


# --------------------------------------------------------------------------- weights

def _state_dict(ckpt: dict, half: bool) -> dict:
    sd = ckpt["state_dict"]
    return {k: v.half() if half and v.is_floating_point() else v for k, v in sd.items()}


def write_weights(members, folder: Path, half: bool, safetensors: bool) -> list[dict]:
    """One weight file per member under checkpoints/; manifest entries (everything but the tensors)."""
    import torch

    from foldkit.runtime.model import load_checkpoint  # lazy: imports torch
    entries = []
    for m in members:
        ckpt = load_checkpoint(m.path)
        stem = f"{slug(m.path.parent.name, 80)}__fold{m.fold}"
        fmt = ("safetensors" if safetensors else "pt") + ("-fp16" if half else "")
        rel = Path("checkpoints") / (stem + (".safetensors" if safetensors else ".pt"))
        dst = folder / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if safetensors:
            from safetensors.torch import save_file
            save_file(_state_dict(ckpt, half), str(dst))
        elif half:
            torch.save(dict(ckpt, state_dict=_state_dict(ckpt, True)), dst)
        else:
            shutil.copyfile(m.path, dst)
        meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
        entries.append({"experiment": m.path.parent.name, "fold": m.fold, "weights": rel.as_posix(),
                        "format": fmt, "sha256": sha256_file(dst), "checkpoint": meta})
    return entries


# --------------------------------------------------------------------------- the wheel

def build_wheel(dest: Path) -> Path:
    """foldkit as a wheel, built by pip from a copy of the source tree (no network, no build
    isolation: setuptools from this environment)."""
    root = config.ROOT
    if not (root / "setup.cfg").is_file():
        raise ExportError(f"{root} is not foldkit's source tree (no setup.cfg): export builds the bundle's "
                          "wheel from the source; install foldkit with `pip install -e .` from a checkout")
    with tempfile.TemporaryDirectory() as tmp:
        for f in ("setup.cfg", "pyproject.toml", "README.md"):
            shutil.copy2(root / f, Path(tmp) / f)
        shutil.copytree(root / "src" / "foldkit", Path(tmp) / "src" / "foldkit",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "--quiet", "-w", str(dest), tmp], capture_output=True, text=True,
                           env=dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1"))
    wheels = sorted(dest.glob("foldkit-*.whl"))
    if r.returncode != 0 or not wheels:
        raise ExportError(f"building the foldkit wheel failed (no setuptools? `pip install setuptools`): "
                          f"{(r.stderr or r.stdout).strip()[-500:]}")
    return wheels[0]


# --------------------------------------------------------------------------- ONNX

def _check_batch(m, comp, n: int = 3):
    """n real test images through the member's eval transform (random ones when there are none)."""
    import torch

    from foldkit.predict.predicting import make_sources  # lazy: imports torch
    c, s = m.in_chans, eval_size(m.data_config)
    if comp is None or comp.test is None or len(comp.test) == 0:
        return torch.randn(n, c, s, s, generator=torch.Generator().manual_seed(0))
    src = next(iter(make_sources(comp, comp.test.head(n), "test", [m]).values()))
    tf = eval_transform(m.data_config)
    return torch.stack([tf(torch.from_numpy(np.ascontiguousarray(src[i])).permute(2, 0, 1)) for i in range(len(src))])


def export_onnx(members, entries: list[dict], folder: Path, comp, log=print) -> float:
    """Each member as onnx/<stem>.onnx (dynamic batch axis), checked with onnxruntime on a batch of
    another size than the export's; returns the largest probability difference."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("--onnx needs onnx and onnxruntime: pip install 'foldkit[onnx]'") from None
    import torch
    worst = 0.0
    for m, e in zip(members, entries):
        rel = Path("onnx") / Path(e["weights"]).with_suffix(".onnx").name
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        model = m.model.cpu().float().eval()
        c, s = m.in_chans, eval_size(m.data_config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # the TorchScript exporter's deprecation notice
            torch.onnx.export(model, (torch.zeros(2, c, s, s),), str(folder / rel), input_names=["image"],
                              output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=ONNX_OPSET, dynamo=False)
        x = _check_batch(m, comp)
        with torch.no_grad():
            p_t = activate(model(x).float().numpy(), TASKS[m.task].activation)
        sess = ort.InferenceSession(str(folder / rel), providers=["CPUExecutionProvider"])
        p_o = activate(sess.run(None, {"image": x.numpy()})[0], TASKS[m.task].activation)
        diff = float(np.abs(p_t - p_o).max())
        if diff > ONNX_ATOL:
            raise ExportError(f"{rel}: ONNX probabilities differ from PyTorch's by {diff:.2e} (> {ONNX_ATOL:g}): "
                              f"model {m.data_config} of {m.path} does not export faithfully; drop --onnx")
        e.update(onnx=rel.as_posix(), onnx_max_abs_diff=diff)
        worst = max(worst, diff)
    log(f"onnx: {len(members)} model(s), dynamic batch, opset {ONNX_OPSET}; max |p_onnx - p_torch| = {worst:.1e} "
        f"(tolerance {ONNX_ATOL:g}, onnxruntime {ort.__version__})")
    return worst


# --------------------------------------------------------------------------- scripts and metadata

PREDICT_OFFLINE = '''"""Offline prediction with a foldkit bundle: no network, writes a validated submission.csv.

On Kaggle: add this bundle (a Dataset) and the competition to a notebook, then
    !python /kaggle/input/<this-dataset>/predict_offline.py
finds the competition under /kaggle/input/<competition> and writes /kaggle/working/submission.csv.
Anywhere else:
    python predict_offline.py --input-dir DIR --out FILE.csv
--runner onnx uses onnxruntime and no torch (bundles exported with --onnx); --help lists every option.
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# foldkit comes from the bundle's own wheel (Python imports from the zip): the code that exported it
sys.path.insert(0, str(next(HERE.glob("wheels/foldkit-*.whl"))))

from foldkit.export.bundle import main  # noqa: E402

if __name__ == "__main__":
    main(bundle_dir=HERE)
'''

NOTEBOOK_CELLS = [
    ("markdown", "# Offline prediction with a foldkit bundle\n\nAdd this bundle (a Kaggle Dataset) and the "
                 "competition's data to the notebook, turn the internet off and run all cells: the cells below "
                 "do what `predict_offline.py` does and write `/kaggle/working/submission.csv`."),
    ("code", "# Settings. None: find the competition under /kaggle/input; write /kaggle/working/submission.csv\n"
             "INPUT_DIR = None\nOUT = None\nRUNNER = \"auto\"   # torch, onnx (onnxruntime, no torch) or auto"),
    ("code", "import sys\nfrom pathlib import Path\n\n"
             "# the bundle: this notebook's folder, else the dataset under /kaggle/input holding foldkit_bundle.json\n"
             "found = [p.parent for pat in (\"*\", \"*/*\", \"*/*/*\") for p in sorted(Path(\"/kaggle/input\").glob(pat + \"/"
             + MANIFEST + "\"))]\n"
             "BUNDLE = next(p for p in [Path.cwd(), *found] if (p / \"" + MANIFEST + "\").is_file())\n"
             "sys.path.insert(0, str(next(BUNDLE.glob(\"wheels/foldkit-*.whl\"))))\n"
             "from foldkit.export import bundle\n\nprint(\"bundle:\", BUNDLE)"),
    ("code", "args = ([\"--input-dir\", str(INPUT_DIR)] if INPUT_DIR else []) + ([\"--out\", str(OUT)] if OUT else [])\n"
             "result = bundle.main(args + [\"--runner\", RUNNER, \"--overwrite\"], bundle_dir=BUNDLE)"),
    ("code", "import pandas as pd\n\npd.read_csv(result[\"submission\"]).head()"),
]


def notebook_json() -> str:
    """predict_offline.ipynb (nbformat 4, written as plain JSON: no notebook library needed to export)."""
    cells = []
    for i, (kind, src) in enumerate(NOTEBOOK_CELLS):
        cell = {"cell_type": kind, "id": f"cell-{i}", "metadata": {"tags": ["parameters"]} if i == 1 else {},
                "source": src.splitlines(keepends=True)}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        cells.append(cell)
    nb = {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
          "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                       "language_info": {"name": "python"}}}
    return json.dumps(nb, indent=1) + "\n"


def dataset_metadata(cfg, names: list[str]) -> dict:
    user = os.environ.get("KAGGLE_USERNAME", "INSERT_USERNAME")
    ident = cfg.push or cfg.kaggle_dataset or f"{user}/{slug('foldkit-' + '-'.join(names))}"
    return {"title": dataset_title(names), "id": ident, "licenses": [{"name": "CC0-1.0"}]}


def _what(plan: dict) -> str:
    return TASKS[task_of(plan)].describe(plan["classes"])


def readme(man: dict, est_lines: list[str]) -> str:
    plan, described = man["plan"], bundle.Plan.from_json(man["plan"]).describe()
    steps = ", ".join(f"{n} {p}" for n, p in described.items() if n not in ("blend", "weights"))
    members = "\n".join(f"- `{e['weights']}`" + "".join(f", `{e[k]}`" for k in ("onnx", "onnx_int8") if e.get(k))
                        for e in stacks.image_entries(man))
    members += "".join(f"\n- `{e['trees']}` ({e['booster']} trees of a stacked experiment, {e['test_table']} beside "
                       "the test images)" for e in man["members"] if "trees" in e)
    return f"""# foldkit offline bundle: {' + '.join(man['experiments'])}

Inference with no network for Kaggle code competitions: {len(stacks.image_entries(man))} model(s) x
{len(plan['tta'])} TTA view(s) ({', '.join(plan['tta'])}), each experiment's folds by {plan['ensemble']},
{plan['blend']} blend (weights {described['weights']}){', then ' + steps if steps else ''},
{_what(plan)}, submission in `{plan['submission_mode']}` mode with columns
{man['sample_submission']['columns']}: the plan predict.py submitted with.

    python predict_offline.py                                  # on Kaggle: /kaggle/input/<competition>
    python predict_offline.py --input-dir DIR --out FILE.csv   # anywhere else
    pip install --no-index --find-links wheels foldkit         # optional: foldkit importable in your own cells

`predict_offline.ipynb` does the same in notebook cells. Upload this folder as a Kaggle dataset
(edit the `id` in `dataset-metadata.json` first when it says INSERT_USERNAME):

    kaggle datasets create -p . --dir-mode zip

Measured at export ({man['created']}):

{chr(10).join('    ' + line for line in est_lines)}

Files: `{MANIFEST}` (everything the script needs), `wheels/` (foldkit {man['foldkit']}), and
{members}
"""


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


# --------------------------------------------------------------------------- the whole job

def _prepare_out(cfg) -> Path:
    out = Path(cfg.out or config.ROOT / "bundle")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not empty: remove it or pass another --out (a bundle is never "
                          "written over other files)")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _members(cfg, classes):
    from foldkit.predict.predicting import members_for  # lazy: imports torch
    t = time.perf_counter()
    exps, members = members_for(cfg, classes, stacks=True)   # a stacked experiment's folds: its trees
    return exps, members, time.perf_counter() - t


def _runtime(cfg, members, comp, views, load_s, log, exps=()) -> tuple[dict, list[str]]:
    from foldkit.data.dataset import auto_workers  # lazy: imports torch
    device = pick_device(cfg.device)
    kw = dict(device=device, dtype=amp_dtype(device, cfg.amp), batch_size=cfg.batch_size, how=cfg.ensemble,
              channels_last=use_channels_last(cfg.channels_last, device),
              workers=auto_workers(cfg.workers, cached=comp.source_col == "index"))
    measured = estimate.measure(members, comp, views, **kw)
    n = cfg.test_images or (len(comp.test) if comp.test is not None else 0) or measured["images"]
    gpus = [g.strip() for g in cfg.gpu.split(",") if g.strip()]
    est, lines = estimate.estimate(measured, n, gpus, cfg.time_budget, load_s)
    teachers = _teacher_speed(cfg, exps, members, comp, views, measured, kw)
    lines += [teachers["line"]] if teachers else []
    for line in lines:
        log(line)
    return dict(measured, load_seconds=load_s, **est, **({"teachers": teachers} if teachers else {})), lines


def _teacher_speed(cfg, exps, members, comp, views, measured: dict, kw: dict) -> dict | None:
    """A distilled student (--teacher) beside its teacher ensemble: the teachers' finished folds measured
    here the same way (same views, device, batch), so the bundle says what the distillation bought."""
    from foldkit.predict.inference import load_members  # lazy: imports torch
    names = list(dict.fromkeys(n.strip() for e in exps for n in str(e.config().get("teacher") or "").split(",")
                               if n.strip()))
    if not names:
        return None
    teachers = load_members(find_experiments(cfg.models_dir, names))
    rate = estimate.measure(teachers, comp, views, **kw)["img_per_s"]
    return {"experiments": names, "members": len(teachers), "img_per_s": rate,
            "line": f"teacher ensemble {'+'.join(names)} ({len(teachers)} models x {len(views)} view(s)): {rate:.1f} img/s "
                    f"here; this bundle ({len(members)} models): {measured['img_per_s']:.1f} img/s, "
                    f"{measured['img_per_s'] / max(rate, 1e-9):.1f}x the teachers' speed"}


def _manifest(cfg, comp, reading, sample, plan, entries, wheel: Path) -> dict:
    test_rows = len(comp.test) if comp.test is not None else 0
    return {"format": bundle.FORMAT, "foldkit": foldkit.__version__, "wheel": f"wheels/{wheel.name}",
            "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "experiments": plan.experiments, "classes": plan.classes, "plan": plan.to_json(),
            "competition": cfg.competition, "layout": comp.layout,
            "id_col": comp.id_col, "label_col": comp.label_col,
            # how to read the competition on Kaggle: the settings the folds were made with
            "reading": {k: reading[k] for k in ("train_csv", "id_col", "label_col", "image_ext", "task", "label_sep",
                                                   "train_dir", "test_dir")},
            "sample_submission": {"columns": list(sample.columns) if sample is not None else [comp.id_col,
                                                                                             comp.label_col],
                                  "rows": len(sample) if sample is not None else test_rows},
            "members": entries}


def plan_entries(members, images, entries: list[dict], trees: dict) -> dict:
    """The manifest's members in the plan's order. A plan holding a stacked experiment adds `images` (the image
    models the runners predict with, each once: its own and every stack's inputs) and `boosters` (the tree
    library's version, pinned); `members` then holds the stacked folds' tree entries in their places."""
    if not trees:
        return {"members": entries}
    by_path = {str(m.path): e for m, e in zip(images, entries)}
    return {"members": [trees[(m.experiment, m.fold)] if (m.experiment, m.fold) in trees else by_path[str(m.path)]
                        for m in members], "images": entries, "boosters": stacks.boosters(trees.values())}


def _check_int8_flags(cfg) -> None:
    alone = [f"--{n.replace('_', '-')}" for n in ("int8_calibration", "max_cv_drop") if n in cfg.given]
    if alone and not cfg.int8:
        raise ExportError(f"{' and '.join(alone)} only apply to the int8 models: add --int8")


def export_bundle(cfg, log=print) -> dict:
    _check_int8_flags(cfg)
    out = _prepare_out(cfg)
    comp, meta, reading = folds_competition(cfg)
    from foldkit.predict.predicting import make_plan, read_sample   # lazy: imports torch, after the checks that need none
    exps, members, load_s = _members(cfg, meta["classes"])
    images = image_members(members)     # a stacked experiment's image models too, each once
    if cfg.int8 and images != members:
        raise ExportError("--int8 scores the quantized models through the plan on the OOF rows, which a stacked "
                          "experiment's trees do not take part in yet: export the stacked plan without --int8")
    sample = read_sample(comp)
    plan, _ = make_plan(cfg, exps, members, sample, log)   # the plan predict.py fits with the same flags
    views = plan.tta
    log(f"bundle of {len(images)} model(s) from {', '.join(e.name for e in exps)}, TTA {views}, "
        f"{cfg.ensemble} ensemble; {plan_in_words(plan.describe())}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        entries = write_weights(images, tmp, cfg.half, cfg.safetensors)
        trees = stacks.write_stacks(members, tmp, slug)
        wheel = build_wheel(tmp / "wheels")
        if cfg.onnx or cfg.int8:
            export_onnx(images, entries, tmp, comp, log)
        quantized = int8.export_int8(cfg, entries, tmp, comp, plan, log) if cfg.int8 else None
        man = _manifest(cfg, comp, reading, sample, plan, entries, wheel)
        man.update(plan_entries(members, images, entries, trees))
        man["estimate"], lines = _runtime(cfg, images, comp, views, load_s, log, exps)
        if quantized:
            man["int8"] = quantized
            lines += int8.lines(quantized) + estimate.per_runner(man["estimate"], quantized["img_per_s"], log)
        if cfg.onnx or cfg.int8:                  # a bundle for a CPU notebook: its runners per core
            man["runtime_cpu"], cpu_lines = estimate.runtime_cpu(images, entries, tmp, comp, views, plan.task,
                                                                 man["estimate"], cfg.batch_size, log)
            lines += cpu_lines
        atomic_write_text(tmp / MANIFEST, json.dumps(man, indent=1) + "\n")
        (tmp / "predict_offline.py").write_text(PREDICT_OFFLINE)
        (tmp / "predict_offline.ipynb").write_text(notebook_json())
        meta_json = json.dumps(dataset_metadata(cfg, man["experiments"]), indent=2)
        (tmp / "dataset-metadata.json").write_text(meta_json + "\n")
        (tmp / "README.md").write_text(readme(man, lines))
        os.chmod(tmp, 0o755)
        if out.exists():
            out.rmdir()   # empty (checked above)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    sizes = {k: folder_size(out / k) for k in ("checkpoints", "onnx", "wheels") if (out / k).is_dir()}
    total = folder_size(out)
    log(f"bundle: {out} ({_mb(total)}: " + ", ".join(f"{k} {_mb(v)}" for k, v in sizes.items()) + ")")
    meta_id = json.loads((out / "dataset-metadata.json").read_text())["id"]
    if not cfg.push:                # with --push, cli's export pushes it now (export.push)
        if "INSERT_USERNAME" in meta_id:
            log(f"edit the dataset id in {out / 'dataset-metadata.json'} ({meta_id}), "
                "or set KAGGLE_USERNAME / --kaggle-dataset")
        log(f"upload with: kaggle datasets create -p {out} --dir-mode zip   (or export.py --push <owner>/<slug>)")
    return {"out": str(out), "bytes": total, "sizes": sizes, "manifest": man}
