"""How long an ensemble will take on the hidden test set (Kaggle code competitions' time limit).

    measure(members, ...)   img/s of the ensemble with its TTA on this device, through the kit's
                            own prediction path (decode + transforms + every member and view)
    estimate(...)           expected time for N test images here and per GPU class, and how many
                            members x views fit a time budget
    runtime_cpu(...)        each runner (torch, ONNX fp32, ONNX int8) timed at 1 thread and on every core
                            here, Kaggle's 4 CPU cores extrapolated by Amdahl's law, and the probe: the
                            threads and batch the bundle's runners use (the manifest's `runtime_cpu`)

GPU classes are scaled from the measured device with GPU_FACTORS: rough relative throughputs
for CNN inference under mixed precision (T4 = 1), orders of magnitude from public benchmark
figures, not measurements of this kit. A CPU measurement is not scaled to GPUs (the ratio
depends too much on the model); run the export, or predict_offline.py, on the GPU to know.
"""
from __future__ import annotations

import json
import math
import os
import time

import numpy as np

from foldkit.data.images import eval_size
from foldkit.export.bundle import member_batch, member_preparation, onnx_session, run_views, table_images
from foldkit.tasks import TASKS, activate

GPU_FACTORS = {"T4": 1.0, "P100": 1.0, "L4": 1.5, "A10": 2.0, "V100": 2.0, "A100": 4.0, "H100": 6.0, "H200": 6.5}


def gpu_class(device) -> str | None:
    """The GPU_FACTORS key of a CUDA device ('Tesla T4' -> 'T4'); None for CPUs and unknown GPUs."""
    if getattr(device, "type", "cpu") != "cuda":
        return None
    import torch
    name = torch.cuda.get_device_name(device).upper()
    return next((k for k in sorted(GPU_FACTORS, key=len, reverse=True) if k in name), None)


def _sources(members, comp, n: int, seed: int = 0):
    """Sources of the first n real test images, or n synthetic images at the members' size."""
    from foldkit.predict.predicting import make_sources, sources_for  # lazy: imports torch
    if comp is not None and comp.test is not None and len(comp.test):
        return make_sources(comp, comp.test.head(n), "test", members), "test images"
    grey = all(m.in_chans == 1 for m in members)
    side = max(eval_size(m.data_config) for m in members)
    rng = np.random.default_rng(seed)
    imgs = [rng.integers(0, 256, (side, side, 1 if grey else 3), dtype=np.uint8) for _ in range(n)]
    return sources_for(members, imgs), "synthetic images"


def measure(members, comp, views: list[str], *, device, dtype=None, channels_last=False, batch_size=64,
            workers=0, how="mean", n: int = 256, n_warm: int = 8) -> dict:
    """Images per second of the whole ensemble with its TTA views, and the fixed cost of a run
    (loader workers, first-batch set-up): two timed runs, of n_warm and of n images, give both."""
    from foldkit.predict.inference import predict_ensemble  # lazy: imports torch
    kw = dict(tta=views, device=device, dtype=dtype, channels_last=channels_last, batch_size=batch_size,
              workers=workers, how=how, progress=False)
    sources, what = _sources(members, comp, n)
    warm = {g: [s[i] for i in range(min(n_warm, len(s)))] for g, s in sources.items()}
    t = time.perf_counter()
    n_warm = len(predict_ensemble(members, warm, **kw))
    t_warm = time.perf_counter() - t
    t = time.perf_counter()
    n_done = len(predict_ensemble(members, sources, **kw))
    dt = time.perf_counter() - t
    return _speed(n_warm, t_warm, n_done, dt) | {
        "images": n_done, "seconds": dt, "what": what, "device": str(device), "gpu_class": gpu_class(device),
        "members": len(members), "views": len(views), "workers": workers}


def _speed(n_warm: int, t_warm: float, n_done: int, dt: float) -> dict:
    """img/s and fixed seconds from a short and a long timed run: the slope between them when the long
    run took measurably longer, else (a test set of a few dozen images, timing noise) the long run's
    plain average with no fixed cost: never a rate from a difference of noise."""
    if n_done > 2 * n_warm and dt > 1.5 * t_warm:
        rate = (n_done - n_warm) / (dt - t_warm)
        return {"img_per_s": rate, "fixed_seconds": max(0.0, t_warm - n_warm / rate)}
    return {"img_per_s": n_done / max(dt, 1e-9), "fixed_seconds": 0.0}


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def fitting(seconds: float, n_units: int, budget_s: float, load_s: float = 0.0) -> int:
    """How many member-views fit the budget when n_units of them take `seconds` (loading included),
    taking the whole per-image cost (decoding included) as proportional to members x views: a
    slight underestimate of what fits."""
    per_unit = max(seconds - load_s, 1e-9) / n_units
    return max(0, math.floor((budget_s - load_s) / per_unit))


def estimate(measured: dict, n_images: int, gpus: list[str], budget_h: float,
             load_s: float = 0.0) -> tuple[dict, list[str]]:
    """Expected seconds for n_images here and on each GPU class (scaled from a measured GPU);
    lines to print, with a warning per estimate over the budget."""
    rate, m, v = measured["img_per_s"], measured["members"], measured["views"]
    load_s = load_s + measured.get("fixed_seconds", 0.0)
    here = load_s + n_images / rate
    out = {"test_images": n_images, "seconds_here": here, "per_gpu": {}}
    lines = [f"runtime estimate: {measured['images']} {measured['what']} at {rate:.1f} img/s on "
             f"{measured['device']} ({m} model(s) x {v} view(s), {load_s:.1f}s fixed) -> {n_images} test images "
             f"in {_hms(here)}"]
    ref = measured.get("gpu_class")
    for g in gpus:
        if g not in GPU_FACTORS:
            lines.append(f"  {g}: unknown GPU class (known: {', '.join(GPU_FACTORS)})")
        elif ref is None:
            lines.append(f"  {g}: not estimated (measured on {measured['device']}, not on a GPU; run the export "
                         "or predict_offline.py on a GPU to measure)")
        else:
            s = load_s + n_images / (rate * GPU_FACTORS[g] / GPU_FACTORS[ref])
            out["per_gpu"][g] = s
            lines.append(f"  {g}: about {_hms(s)} (rough factor {GPU_FACTORS[g] / GPU_FACTORS[ref]:.2f} x {ref})")
    if budget_h > 0:
        budget = budget_h * 3600
        for where, s in [(measured["device"], here), *out["per_gpu"].items()]:
            if s > budget:
                k = fitting(s, m * v, budget, load_s)
                lines.append(f"WARNING: on {where} the ensemble needs {_hms(s)}, over the {budget_h:g} h budget: "
                             f"about {k} member-view(s) fit ({_combos(k, v)})")
        out["fits"] = all(s <= budget for s in [here, *out["per_gpu"].values()])
    return out, lines


def _combos(k: int, views: int) -> str:
    if k == 0:
        return "not even one model with one view: use a smaller model or image size"
    opts = [f"{k // vv} model(s) x {vv} view(s)" for vv in range(views, 0, -1) if k // vv >= 1]
    return "e.g. " + " or ".join(opts)


def per_runner(est: dict, onnx_rates: dict, log=print) -> list[str]:
    """The estimate for the test set by runner: torch (measured above) and the ONNX fp32 and int8 rates export
    --int8 measured on the OOF rows (decoding included), each with the torch run's fixed cost; recorded in
    est["per_runner"] (seconds). On this machine's cores only: not measured at other core counts."""
    n, fixed = est["test_images"], est.get("load_seconds", 0.0) + est.get("fixed_seconds", 0.0)
    rates = {"torch": est["img_per_s"], "onnx fp32": onnx_rates["onnx_fp32"], "onnx int8": onnx_rates["onnx_int8"]}
    est["per_runner"] = {k.replace(" ", "_"): fixed + n / r for k, r in rates.items()}
    line = (f"runtime estimate by runner, {n} test images on this machine ({onnx_rates['cpu_cores']} cores): "
            + ", ".join(f"{k}{' on ' + str(est.get('device')) if k == 'torch' else ''} {_hms(s)}"
                        for k, s in zip(rates, est["per_runner"].values())))
    log(line)
    return [line]


# --------------------------------------------------------------------------- per runner, per CPU cores

KAGGLE_CPU_CORES = 4     # Kaggle's CPU notebooks
PROBE_BATCH = 8          # the per-core timing's batch
PROBE_SECONDS = 0.3      # each runner at each thread count is timed for at least this long (after a warm-up)
PROBE_BATCHES = (8, 32)  # the batch sizes the probe tries at the chosen thread count


def cpu_cores() -> int:
    """The cores this process may run on (taskset, a container's cpuset): what 'all cores' means here."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _probe_images(comp, entries: list[dict], groups: list[list[int]], n: int,
                  seed: int = 0) -> tuple[list[np.ndarray], float]:
    """n test images (synthetic ones at the members' size when there is no test set) as the NCHW input of one
    member per group, and the seconds per image the onnx runner spends preparing them on one thread: each
    decoded once per preparation, then preprocessed once per member (bundle.member_batch)."""
    preps = sorted({member_preparation(e) for e in entries})
    t = time.perf_counter()
    if comp is not None and comp.test is not None and len(comp.test):
        images = list(table_images(comp, comp.test.head(n), "test", preps))
    else:
        rng = np.random.default_rng(seed)
        images = [{(g, s): rng.integers(0, 256, (s, s, 1 if g else 3), dtype=np.uint8) for g, s in preps}
                  for _ in range(n)]
    seconds = time.perf_counter() - t
    inputs = []
    for g in groups:
        t = time.perf_counter()
        inputs.append(member_batch(images, entries[g[0]]))
        seconds += len(g) * (time.perf_counter() - t)
    return inputs, seconds / max(len(images), 1)


def alike(entries: list[dict]) -> list[list[int]]:
    """Member indices grouped by model and input (architecture, channels, data config): the folds of one
    experiment take the same time per image, so one member of each group is timed and counted for all."""
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        c = e["checkpoint"]
        key = json.dumps([c.get("model_name"), c.get("in_chans"), c.get("data_config")], sort_keys=True, default=str)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def torch_model(member, task: str):
    """run(x, threads): one member's torch model on a batch (fp32, no grad, one view: a view is a flip, whose
    cost is nothing beside the model's) on `threads` CPU threads (0: torch's default), as the torch runner."""
    import torch
    model = member.model.cpu().float().eval()
    default = torch.get_num_threads()

    def run(x, threads):
        torch.set_num_threads(threads or default)
        with torch.inference_mode():
            activate(model(torch.from_numpy(x)).numpy(), TASKS[task].activation)
        torch.set_num_threads(default)
    return run


def onnx_model(path, task: str):
    """run(x, threads): one member's onnxruntime session, intra-op threads `threads` (0: onnxruntime's
    default), inter-op 1, one view, as the onnx runner runs it."""
    sessions: dict[int, object] = {}

    def run(x, threads):
        if threads not in sessions:
            sessions[threads] = onnx_session(path, threads)
        run_views(sessions[threads], x, ["none"], task)
    return run


def models_rate(run, x: np.ndarray, threads: int, batch: int, seconds: float = PROBE_SECONDS) -> float:
    """Images per second of run() (one model) at `threads` and `batch`: a warm-up image (session made, first
    call's set-up), then batches over the sample, round and round, for at least `seconds`."""
    run(x[:1], threads)
    done, t = 0, time.perf_counter()
    while done == 0 or time.perf_counter() - t < seconds:
        part = x[done % len(x):][:batch]
        run(part, threads)
        done += len(part)
    return done / (time.perf_counter() - t)


def ensemble_rate(parts: list[tuple], threads: int, batch: int) -> float:
    """img/s of the whole ensemble, models only: each timed model's seconds per image times how many it stands
    for (members alike x views), added up."""
    return 1 / sum(weight / models_rate(run, x, threads, batch) for run, x, weight in parts)


def amdahl(rate_1: float, rate_n: float, n: int) -> float:
    """The parallel fraction p of Amdahl's law, speedup(k) = 1 / ((1 - p) + p / k), fitted on the speedup
    measured from 1 to n threads; in [0, 1], so an extrapolation never passes linear scaling."""
    if n <= 1:
        return 0.0
    speedup = rate_n / rate_1
    return float(min(1.0, max(0.0, (1 - 1 / speedup) / (1 - 1 / n))))


def scaled(rate_1: float, p: float, k: int) -> float:
    return rate_1 / ((1 - p) + p / k)


def _runner_cores(parts, prepare_s: float, n: int, n_images: int, fixed_s: float) -> dict:
    """One runner's img/s measured at 1 and n threads (models only, then with one thread's image preparation)
    and extrapolated to Kaggle's CPU cores by Amdahl's law; the seconds for n_images at each."""
    measured = sorted({1, n})
    rates = {k: ensemble_rate(parts, k, PROBE_BATCH) for k in measured}
    p = amdahl(rates[1], rates[n], n)
    per = {}
    for k in sorted({*measured, KAGGLE_CPU_CORES}):
        if k not in rates and n == 1:
            continue                      # one core here: no scaling measured, nothing to extrapolate from
        m = rates.get(k) or scaled(rates[1], p, k)
        rate = 1 / (prepare_s + 1 / m)
        per[str(k)] = {"img_per_s": rate, "models_img_per_s": m, "seconds": fixed_s + n_images / rate,
                       "measured": k in rates}
    return {"parallel_fraction": p, "cores": per}


def probe(parts, cores: dict, default_batch: int, n: int) -> dict:
    """The runner's threads and batch size, chosen on this machine: all cores unless one thread was as fast
    (within 5%), then the fastest of PROBE_BATCHES; beside it, img/s at the defaults the runner had before
    (the library's own thread count, --batch-size)."""
    one, all_ = cores["1"]["models_img_per_s"], cores[str(n)]["models_img_per_s"]
    threads = n if n > 1 and all_ > 1.05 * one else 1
    tried = {PROBE_BATCH: cores[str(threads)]["models_img_per_s"]}
    for b in PROBE_BATCHES:
        if b not in tried and b <= len(parts[0][1]):
            tried[b] = ensemble_rate(parts, threads, b)
    best = max(tried, key=tried.get)
    return {"threads": "all" if threads > 1 else 1, "threads_here": threads, "batch_size": best,
            "img_per_s": tried[best], "tried": {str(b): r for b, r in tried.items()},
            "default": {"threads": "library default", "batch_size": default_batch,
                        "img_per_s": ensemble_rate(parts, 0, default_batch)}}


NAMES = {"torch": "torch", "onnx_fp32": "ONNX fp32", "onnx_int8": "ONNX int8"}


def short_time(seconds: float) -> str:
    """2h10, 48 min, 21 s."""
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    if seconds < 3570:
        return f"{seconds / 60:.0f} min"
    h, m = divmod(int(round(seconds / 60)), 60)
    return f"{h}h{m:02d}"


def core_lines(res: dict) -> list[str]:
    """The estimate per runner at each core count, then each probe's choice against the defaults."""
    n, runners = res["cores_here"], res["runners"]
    head = f"{res['test_images']:,} test images, {res['models']} model(s) x {res['views']} view(s):"
    out = []
    for k in sorted({int(k) for r in runners.values() for k in r["cores"]}):
        times = " · ".join(f"{NAMES[name]} {short_time(r['cores'][str(k)]['seconds'])}"
                           for name, r in runners.items() if str(k) in r["cores"])
        how = ("measured" if k in res["measured_threads"] else
               f"extrapolated from {' and '.join(map(str, res['measured_threads']))} measured, Amdahl's law: parallel "
               "fraction " + ", ".join(f"{NAMES[nm]} {r['parallel_fraction']:.2f}" for nm, r in runners.items()))
        out.append(f"{head} {times} on {k} core{'s' if k > 1 else ''} ({how})")
    if n == 1:
        out.append(f"  not extrapolated to {KAGGLE_CPU_CORES} cores: this process may use 1 core, no scaling to fit")
    load = res.get("load_average")
    if load is not None and load > n:
        out.append(f"  caution: this machine was busy while timing (load average {load:.1f} on {n} core(s)): the "
                   "per-core figures and the probe's thread choice may be off; export again on an idle machine")
    for runner, p in res.get("probe", {}).items():
        d = p["default"]
        threads = "all cores" if p["threads"] == "all" else "1 thread"
        applied = ("predict_offline.py applies it (--threads, --batch-size override)" if runner != "torch" else
                   f"the torch runner keeps predict.py's settings (its file is predict.py's byte for byte): "
                   f"predict_offline.py --threads {p['threads_here']} --batch-size {p['batch_size']} applies it")
        out.append(f"probe, {runner} runner: {threads} ({p['threads_here']} here), batch {p['batch_size']}: "
                   f"{p['img_per_s']:.1f} img/s (models) vs {d['img_per_s']:.1f} img/s at its defaults "
                   f"({d['threads']} threads, batch {d['batch_size']}); {applied}")
    return out


def _session_seconds(path) -> float:
    """Seconds to create one onnxruntime session of a model (the onnx runner's start, per member)."""
    t = time.perf_counter()
    onnx_session(path, 0)
    return time.perf_counter() - t


def runtime_cpu(members, entries: list[dict], folder, comp, views: list[str], task: str, est: dict,
                batch_size: int, log=print) -> tuple[dict, list[str]]:
    """The manifest's `runtime_cpu`: every runner the bundle has (torch; ONNX fp32 with --onnx; ONNX int8 with
    --int8) timed at 1 thread and at every core this process may use on a short sample of test images, with
    the seconds for the test set at those and at Kaggle's 4 CPU cores (extrapolated), and the probe's threads
    and batch for the torch runner and the onnx runner (int8 models where the bundle has them)."""
    groups = alike(entries)
    inputs, prepare_s = _probe_images(comp, entries, groups, max(*PROBE_BATCHES, min(batch_size, 64)))
    weights = [len(g) * len(views or ["none"]) for g in groups]
    runs = {"torch": [(torch_model(members[g[0]], task), x, w) for g, x, w in zip(groups, inputs, weights)]}
    for key, name in (("onnx", "onnx_fp32"), ("onnx_int8", "onnx_int8")):
        if all(e.get(key) for e in entries):
            runs[name] = [(onnx_model(folder / entries[g[0]][key], task), x, w) for g, x, w in zip(groups, inputs, weights)]
    n, fixed = cpu_cores(), est.get("load_seconds", 0.0) + est.get("fixed_seconds", 0.0)
    # each runner's own fixed cost: torch's is loading the checkpoints and its run's start (the estimate's);
    # an onnx runner's is creating its sessions (timed here, one per alike group, counted per member)
    fixed_of = {"torch": fixed}
    for key, name in (("onnx", "onnx_fp32"), ("onnx_int8", "onnx_int8")):
        if name in runs:
            fixed_of[name] = sum(len(g) * _session_seconds(folder / entries[g[0]][key]) for g in groups)
    res = {"cores_here": n, "measured_threads": sorted({1, n}), "kaggle_cores": KAGGLE_CPU_CORES,
           "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
           "sample_images": len(inputs[0]), "batch_size": PROBE_BATCH, "prepare_seconds_per_image": prepare_s,
           "test_images": est["test_images"], "fixed_seconds": fixed, "models": len(members), "views": len(views),
           "timed_members": [entries[g[0]]["weights"] for g in groups],
           "runners": {name: {**_runner_cores(parts, prepare_s, n, est["test_images"], fixed_of[name]),
                              "fixed_seconds": fixed_of[name]}
                       for name, parts in runs.items()}}
    onnx = "onnx_int8" if "onnx_int8" in runs else "onnx_fp32"
    res["probe"] = {runner: probe(runs[name], res["runners"][name]["cores"], batch_size, n)
                    for runner, name in (("torch", "torch"), ("onnx", onnx)) if name in runs}
    lines = core_lines(res)
    for line in lines:
        log(line)
    return res, lines
