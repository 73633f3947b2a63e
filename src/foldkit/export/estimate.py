"""How long an ensemble will take on the hidden test set (Kaggle code competitions' time limit).

    measure(members, ...)   img/s of the ensemble with its TTA on this device, through the kit's
                            own prediction path (decode + transforms + every member and view)
    estimate(...)           expected time for N test images here and per GPU class, and how many
                            members x views fit a time budget

GPU classes are scaled from the measured device with GPU_FACTORS: rough relative throughputs
for CNN inference under mixed precision (T4 = 1), orders of magnitude from public benchmark
figures, not measurements of this kit. A CPU measurement is not scaled to GPUs (the ratio
depends too much on the model); run the export, or predict_offline.py, on the GPU to know.
"""
from __future__ import annotations

import math
import time

import numpy as np

from foldkit.data.images import eval_size

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
