"""The offline inference bundle at prediction time (Kaggle code competitions, no network).

`python src/export.py` writes the bundle (foldkit.export.build); this module, shipped inside it as
part of the foldkit wheel, reads it back and writes the validated submission:

    bundle/
      foldkit_bundle.json          the manifest: members, the plan (blend.Plan: folds combined,
                                   blend weights, post-processing, TTA views, submission mode,
                                   classes), sample_submission columns and rows, reading
                                   options, the runtime estimate
      checkpoints/<exp>__fold<k>.pt   (or .safetensors; fp16 with export --half)
      onnx/<exp>__fold<k>.onnx        (export --onnx)
      onnx_int8/<exp>__fold<k>.onnx   (export --int8: quantized by onnxruntime, what the onnx runner runs)
      wheels/foldkit-<version>-py3-none-any.whl
      predict_offline.py, predict_offline.ipynb, dataset-metadata.json, README.md

Only the manifest names files; nothing from the training machine (folds/, models/,
config.json) is needed. Both runners return per-member probabilities and the manifest's plan turns
them into the submission (`Plan.apply`, as predict.py does). `torch` reuses the kit's own path
(predicting.predict_members on predicting.make_sources), so its submission is byte-identical to
predict.py's; `onnx` runs onnxruntime sessions with numpy/Pillow preprocessing and never imports
torch (this module imports torch only inside the torch runner): its inputs are the torch runner's bit for
bit where Pillow's resize matches torchvision's (within one grey level elsewhere), its outputs within
float32 rounding of PyTorch's. A stacked experiment's folds are trees (foldkit.export.stacks): trees/,
the manifest's `images` (the image models, each once) and `boosters` (the tree library's version).
"""
from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

import foldkit
from foldkit import config
from foldkit.data.images import eval_size, preparation, prepare_image, to_channels
from foldkit.data.reading import read_competition, read_text_csv
from foldkit.ensemble import TTA_VIEWS
from foldkit.errors import FoldkitError, cli_run
from foldkit.export.stacks import check_boosters, image_entries, plan_inputs
from foldkit.predict import submission
from foldkit.predict.blend import Plan, PlanError
from foldkit.report.words import plan_in_words
from foldkit.tasks import TASKS, activate

MANIFEST = "foldkit_bundle.json"
FORMAT = 2   # the manifest layout this foldkit writes and reads (read_manifest refuses any other)
# Kaggle mounts the competition and the datasets a notebook uses here (read-only), and keeps
# /kaggle/working as the notebook's output folder; FOLDKIT_KAGGLE_INPUT moves the former.
KAGGLE_INPUT = "/kaggle/input"
KAGGLE_WORKING = Path("/kaggle/working")


class BundleError(FoldkitError, ValueError):
    """A bundle or competition folder that does not fit together; the message says what to do."""


def kaggle_input() -> Path:
    return Path(os.environ.get("FOLDKIT_KAGGLE_INPUT", KAGGLE_INPUT))


def read_manifest(bundle_dir: str | Path) -> dict:
    path = Path(bundle_dir) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{path} does not exist: {bundle_dir} is not a foldkit bundle "
                          "(write one with `python src/export.py --out DIR`)")
    try:
        man = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path} is not valid JSON ({e}): the bundle is damaged; copy it again or re-export it "
                          "with `python src/export.py`") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        fmt = man.get("format") if isinstance(man, dict) else None
        raise BundleError(f"{path}: bundle format {fmt} but this foldkit reads format {FORMAT}"
                          + (" (format 1 bundles record no blend or post-processing plan)" if fmt == 1 else "")
                          + "; run the bundle's own predict_offline.py (it uses the foldkit wheel inside the "
                          "bundle), or re-export the bundle with this foldkit's export.py")
    missing = [k for k in ("plan", "members", "reading") if k not in man]
    if missing:
        raise BundleError(f"{path} has no {', '.join(missing)}: the manifest is damaged; re-export the bundle")
    try:
        man["plan"] = Plan.from_json(man["plan"], where=f"{path} `plan`")
    except PlanError as e:
        raise BundleError(str(e)) from None
    entries = man["members"] if isinstance(man["members"], list) else []
    if [(e.get("experiment"), e.get("fold")) if isinstance(e, dict) else e for e in entries] != \
            [tuple(m) for m in man["plan"].members]:
        raise BundleError(f"{path}: the members do not match the plan's; the manifest is damaged, re-export it")
    return man


# --------------------------------------------------------------------------- finding the inputs

def _sample_columns(folder: Path) -> list[str] | None:
    sample = folder / "sample_submission.csv"
    if not sample.is_file():
        return None
    return list(pd.read_csv(sample, nrows=0).columns)


def find_input_dir(man: dict, competition: str = "") -> Path:
    """The competition folder on Kaggle: /kaggle/input/<slug> (also .../competitions/<slug>), else
    the one folder under /kaggle/input whose sample_submission.csv has the bundle's columns."""
    root = kaggle_input()
    slug = competition or man.get("competition") or ""
    if slug:
        for cand in (root / slug, root / "competitions" / slug):
            if cand.is_dir():
                return cand
    want = (man.get("sample_submission") or {}).get("columns")
    found = []
    if want and root.is_dir():
        dirs = sorted(p for p in [*root.glob("*"), *root.glob("*/*")] if p.is_dir())
        found = [d for d in dirs if _sample_columns(d) == want]
    if len(found) == 1:
        return found[0]
    where = f"{root}/{slug}" if slug else f"{root}/<competition>"
    what = (f"several folders under {root} have a sample_submission.csv with columns {want}: "
            f"{[str(d) for d in found]}" if found else f"no competition found at {where}")
    raise BundleError(f"{what}. Add the competition to the notebook, or pass --input-dir DIR "
                      "(or --competition SLUG).")


def submission_path(out: str, overwrite: bool) -> Path:
    """--out, else /kaggle/working/submission.csv on Kaggle, else ./submission.csv; never replaced
    silently."""
    if out:
        path = Path(out)
    else:
        path = (KAGGLE_WORKING if KAGGLE_WORKING.is_dir() else Path.cwd()) / "submission.csv"
    if path.exists() and not overwrite:
        raise BundleError(f"{path} exists: pass --overwrite to replace it, or --out another file")
    return path


# --------------------------------------------------------------------------- the torch runner

def load_bundle_members(bundle_dir: Path, man: dict) -> list:
    """inference.Member objects rebuilt from the bundle's weight files (fp16 weights load into the
    fp32 model: load_state_dict converts)."""
    from foldkit.predict.inference import Member  # lazy: imports torch
    from foldkit.runtime.model import load_checkpoint  # lazy: imports torch
    members = []
    for e in image_entries(man):
        path = bundle_dir / e["weights"]
        if e["format"].startswith("safetensors"):
            from safetensors.torch import load_file
            ckpt = dict(e["checkpoint"], state_dict=load_file(str(path)))
        else:
            ckpt = load_checkpoint(path)
        members.append(Member(path, ckpt))
    return members


def predict_torch(bundle_dir: Path, man: dict, comp, cfg) -> list[np.ndarray]:
    """Per-member test probabilities, on predict.py's own path (predicting.predict_members)."""
    from foldkit.predict.predicting import make_sources, predict_members  # lazy: imports torch
    import torch
    members = load_bundle_members(bundle_dir, man)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return predict_members(cfg, members, make_sources(comp, comp.test, "test", members), man["plan"].tta,
                           cached=comp.source_col == "index")


# --------------------------------------------------------------------------- the onnx runner (no torch)

_PIL_RESAMPLE = {"bilinear": 2, "bicubic": 3, "nearest": 0}   # PIL.Image.Resampling values


def eval_preprocess(img: np.ndarray, data_config: dict) -> np.ndarray:
    """augment.eval_transform without torch: resize the shortest side to size/crop_pct (Pillow's
    antialiased filter, the one torchvision's uint8 resize reproduces), centre crop, scale, normalise.
    HWC uint8 -> CHW float32. Hand-written: no torch-free library applies timm's eval recipe."""
    from PIL import Image

    size = eval_size(data_config)
    resize = int(round(size / (data_config.get("crop_pct") or 1.0)))
    h, w = img.shape[:2]
    short, long_ = (h, w) if h <= w else (w, h)
    new_short, new_long = resize, int(resize * long_ / short)
    nh, nw = (new_short, new_long) if h <= w else (new_long, new_short)
    if (nh, nw) != (h, w):
        pil = Image.fromarray(img[..., 0] if img.shape[2] == 1 else img)
        pil = pil.resize((nw, nh), resample=_PIL_RESAMPLE.get(data_config.get("interpolation"), 2))
        img = np.asarray(pil).reshape(nh, nw, -1)
    if (nh, nw) != (size, size):   # like eval_transform: a square centre crop
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
        img = img[top:top + size, left:left + size]
    # times float32(1/255), as augment.Normalize (torchvision's ToDtype(scale=True)) scales: dividing by 255
    # rounds differently (up to 7e-7 apart), a difference the trees' thresholds or a regression value's digits show
    x = img.astype(np.float32).transpose(2, 0, 1) * np.float32(1.0 / 255)
    mean = np.asarray(data_config["mean"], np.float32)[:, None, None]
    std = np.asarray(data_config["std"], np.float32)[:, None, None]
    return (x - mean) / std


def table_images(comp, table, split: str, preparations):
    """The images of a table's rows in order (the test set, or training rows: export --int8 calibrates
    and scores on them), each a {(grey, side): image} decoded once per distinct preparation by the kit's
    one preparation (images.prepare_image): the torch-free twin of predicting.make_sources."""
    if comp.source_col == "index":
        for a in comp.pixels(split)[table["index"].to_numpy()]:
            yield {(g, side): to_channels(a, g) for g, side in preparations}
    else:
        for k, p in enumerate(table["path"]):
            yield {(g, side): prepare_image(Path(comp.root) / p, g, side, row=k + 1) for g, side in preparations}


def batches(items, size: int):
    """Lists of up to `size` consecutive items."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def member_preparation(entry: dict) -> tuple[bool, int]:
    """The (grey, side) preparation of a manifest member (images.preparation)."""
    return preparation(entry["checkpoint"]["in_chans"], entry["checkpoint"]["data_config"])


def member_batch(batch: list[dict], entry: dict) -> np.ndarray:
    """A batch of table_images as the member's NCHW float32 input (eval_preprocess)."""
    prep, dc = member_preparation(entry), entry["checkpoint"]["data_config"]
    return np.stack([eval_preprocess(b[prep], dc) for b in batch])


def run_views(session, x: np.ndarray, views: list[str], task: str) -> np.ndarray:
    """One member's activated outputs on a batch, averaged over the TTA views (as the torch runner)."""
    name = session.get_inputs()[0].name
    fns = [_view(v) for v in views or ["none"]]
    return sum(activate(session.run(None, {name: np.ascontiguousarray(f(x))})[0], TASKS[task].activation)
               for f in fns) / len(fns)


def _view(name: str):
    """The numpy function of a view of ensemble.TTA_VIEWS (the flipped axes of an NCHW batch)."""
    axes = TTA_VIEWS[name]
    return (lambda x: np.flip(x, axes)) if axes else (lambda x: x)


def onnx_key(man: dict) -> str:
    """The members' ONNX files the onnx runner runs: `onnx_int8` when the bundle was exported with --int8
    (its manifest's int8 `used`), else `onnx`."""
    return "onnx_int8" if (man.get("int8") or {}).get("used") else "onnx"


def onnx_session(path: Path, threads: int = 0):
    """An onnxruntime session of one model on `threads` intra-op threads (0: onnxruntime's default) and one
    inter-op thread (a CNN's graph is one chain: nothing to run side by side); CUDA first where available."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    want = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ort.InferenceSession(str(path), opts, providers=[p for p in want if p in ort.get_available_providers()])


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ValueError:     # sys.modules[name] = None: a module blocked on purpose
        return False


def onnx_sessions(bundle_dir: Path, man: dict, key: str = "", threads: int = 0) -> list:
    if not _importable("onnxruntime"):
        raise BundleError("the onnx runner needs onnxruntime: pip install onnxruntime (on Kaggle with no internet: "
                          "its wheel in a dataset, pip install --no-index --find-links DIR onnxruntime)"
                          + (", or --runner torch for the fp32 checkpoints" if onnx_key(man) == "onnx_int8" else
                             ", or --runner torch"))
    key = key or onnx_key(man)
    out = []
    for e in image_entries(man):
        if not e.get(key):
            raise BundleError(f"{MANIFEST} has no ONNX file for {e['weights']}: export with --onnx, "
                              "or use --runner torch")
        out.append(onnx_session(bundle_dir / e[key], threads))
    return out


def predict_onnx(bundle_dir: Path, man: dict, comp, cfg) -> list[np.ndarray]:
    """Per-member test predictions with onnxruntime, without torch: each member's outputs activated and
    (regression) de-standardised as the torch runner does (Task.to_predictions of foldkit.tasks). The
    int8 models when the bundle has them (onnx_key)."""
    members = image_entries(man)
    task = man["plan"].task
    sessions = onnx_sessions(bundle_dir, man, threads=cfg.threads)
    preps = sorted({member_preparation(e) for e in members})
    out: list[list] = [[] for _ in members]
    for batch in batches(table_images(comp, comp.test, "test", preps), cfg.batch_size):
        for j, (e, s) in enumerate(zip(members, sessions)):
            out[j].append(run_views(s, member_batch(batch, e), man["plan"].tta, task))
    return [TASKS[task].to_predictions(np.concatenate(o), e["checkpoint"].get("target")) for o, e in zip(out, members)]


# --------------------------------------------------------------------------- the whole job

def pick_runner(runner: str, man: dict) -> str:
    if runner != "auto":
        return runner
    if onnx_key(man) == "onnx_int8":
        return "onnx"   # an --int8 bundle is made for onnxruntime on a CPU: its CV was measured with it
    try:
        import torch  # noqa: F401
        return "torch"
    except ImportError:
        if all(e.get("onnx") for e in image_entries(man)):
            return "onnx"
        raise BundleError("torch is not installed and this bundle has no ONNX files: install torch, "
                          "or export the bundle with --onnx and install onnxruntime") from None


def runner_settings(cfg, man: dict, runner: str):
    """cfg with the runner's CPU threads and batch size: --threads / --batch-size where given, else the export's
    probe (runtime_cpu.probe: all the cores this process may use, or 1 where one was as fast; the fastest
    batch), else all cores and --batch-size's default; and the words saying which. The torch runner keeps
    predict.py's own settings unless told (its file is then predict.py's byte for byte: another batch size or
    thread count changes a regression value's last digits); export prints its probe's choice as flags."""
    if runner == "torch":
        threads = cfg.threads                   # 0: torch's default, as predict.py runs
        return cfg, (f"{threads} thread(s) (--threads)" if threads else "torch's threads (as predict.py)") + \
            f", batch {cfg.batch_size} ({'--batch-size' if 'batch_size' in cfg.given else 'as predict.py'})"
    cpu = man.get("runtime_cpu") or {}
    probe = (cpu.get("probe") or {}).get(runner) or {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cfg.threads:                             # --threads N (0: the probe's choice)
        threads, t_how = cfg.threads, "--threads"
    elif probe.get("threads") == 1 and cpu.get("cores_here") == cores:
        threads, t_how = 1, "probed at export"
    else:   # all cores; a 1-thread choice made on a machine of another size (Kaggle's 4 cores) is not applied
        threads = cores
        t_how = ("all cores; the export's probe ran on another number of cores" if probe.get("threads") == 1
                 else "probed at export" if probe else "all cores")
    batch, b_how = ((cfg.batch_size, "--batch-size") if "batch_size" in cfg.given or not probe.get("batch_size")
                    else (int(probe["batch_size"]), "probed at export"))
    return (config.with_settings(cfg, threads=threads, batch_size=batch),
            f"{threads} thread(s) ({t_how}), batch {batch} ({b_how})")


def open_test_set(man: dict, input_dir: Path):
    """The competition's test set and sample (any layout), checked against the bundle."""
    # the task kind as make_folds recorded it (a manifest whose reading has none: the plan's), never detected
    # again: integer ages would stop at make_folds' question
    reading = {"task": man["plan"].task, **man["reading"]}
    comp = read_competition(input_dir, **reading, check_train=False, check_test=True)
    if comp.test is None or len(comp.test) == 0:
        raise BundleError(f"{input_dir} has no test images to predict")
    if comp.test_problems:
        raise BundleError(f"{len(comp.test_problems)} test image(s) cannot be read, and a submission needs a "
                          "prediction for every id: " + "; ".join(comp.test_problems[:5]))
    sample = read_text_csv(comp.sample_submission) if comp.sample_submission else None
    want = (man.get("sample_submission") or {}).get("columns")
    if sample is not None and want and list(sample.columns) != want:
        raise BundleError(f"{comp.sample_submission} has columns {list(sample.columns)} but the bundle was "
                          f"exported for {want}: wrong competition folder?")
    return comp, sample


def run_offline(cfg, bundle_dir: str | Path, input_dir: str = "", log=print) -> dict:
    """Bundle + competition folder -> validated submission file."""
    t0 = time.time()
    bundle_dir = Path(bundle_dir)
    man = read_manifest(bundle_dir)
    out = submission_path(cfg.out, cfg.overwrite)   # before the work: an existing file stops the run now
    log(f"foldkit {foldkit.__version__} from {Path(foldkit.__file__).parent}")
    src = Path(input_dir) if input_dir else find_input_dir(man, cfg.competition)
    comp, sample = open_test_set(man, src)
    runner = pick_runner(cfg.runner, man)
    check_boosters(man)     # a stacked experiment's tree library, before the images are predicted
    cfg, settings = runner_settings(cfg, man, runner)
    plan = man["plan"]
    log(f"{src}: {len(comp.test)} test images; {len(image_entries(man))} model(s) x {len(plan.tta)} view(s), "
        f"{runner} runner{' (int8 models)' if runner == 'onnx' and onnx_key(man) == 'onnx_int8' else ''}, {settings}; "
        f"{plan_in_words(plan.describe())}; {plan.submission_mode} mode")
    t1 = time.time()
    per_image = (predict_torch if runner == "torch" else predict_onnx)(bundle_dir, man, comp, cfg)
    probs = plan.apply(plan_inputs(bundle_dir, man, comp, per_image, log))   # a stacked fold: its trees
    dt = time.time() - t1
    mode = plan.submission_mode
    sub = submission.make(comp.test["id"].astype(str).tolist(), probs, plan, sample, comp.id_col, comp.label_col)
    if out.exists():   # --overwrite (checked above); replaced only once the new submission is valid
        out.unlink()
    path = submission.write(sub, out)
    est = (man.get("estimate") or {}).get("img_per_s")
    log(f"predicted {len(probs)} images in {dt:.1f}s ({len(probs) / max(dt, 1e-9):.1f} img/s"
        + (f"; export measured {est:.1f} img/s on {man['estimate']['device']})" if est else ")"))
    log(f"submission: {path} ({len(sub)} rows, {mode} mode, validated)")
    return {"submission": str(path), "rows": len(sub), "runner": runner, "predict_seconds": dt,
            "seconds": time.time() - t0, "input_dir": str(src)}


def main(argv=None, bundle_dir: str | Path | None = None):
    """predict_offline.py's command line (also `python -m foldkit.export.bundle --bundle DIR`)."""
    parser = config.build_parser(["offline"], description=__doc__.split("\n\n")[0], prog="predict_offline.py",
                                 extra=("input_dir", "out", "competition", "batch_size", "device", "amp",
                                        "channels_last", "workers", "progress"))
    for a in parser._actions:   # the kit's default input/ means nothing here: Kaggle discovery instead
        if a.dest == "input_dir":
            a.help = f"the competition folder (default: {KAGGLE_INPUT}/<competition>, found by its sample_submission)"
    args = parser.parse_args(argv)

    def job():
        cfg = config.resolve(args)
        where = cfg.bundle or bundle_dir
        if not where:
            raise BundleError("which bundle? pass --bundle DIR")
        return run_offline(cfg, where, input_dir=getattr(args, "input_dir", ""))
    return cli_run(job)


if __name__ == "__main__":
    main()
