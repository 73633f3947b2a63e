"""export.py --int8: each member's ONNX model quantized to int8 by onnxruntime, measured against the CV.

    export_int8(cfg, ...)  quantize every member, score fp32 and int8 on the OOF rows, refuse a bundle
                           that loses more than --max-cv-drop; returns the manifest's `int8` entry
    quantize_member(...)   static quantization (QDQ, per-channel int8 weights, uint8 activations
                           calibrated by MinMax on training images of the member's own training folds,
                           prepared exactly as the ONNX runner prepares test images: bundle.table_images
                           + bundle.member_batch); dynamic quantization where static fails, said in the log
    compare(...)           fp32 and int8 ONNX on the OOF rows (each fold's model on its own validation rows,
                           as the CV did, with the plan's TTA views, then the bundle's plan): CV of both,
                           their agreement, and img/s of both on this machine (the same images, in turn)

The CV here is the bundle's plan (fitted on the fp32 OOF by make_plan) applied as it is to the OOF
rows: in-sample for fitted post-processing, the same for fp32 and int8, so their difference is what
quantization costs. onnxruntime (the `onnx` extra) is imported inside the functions that need it.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from foldkit.errors import FoldkitError
from foldkit.export.bundle import batches, member_batch, member_preparation, run_views, table_images
from foldkit.folds.file import read_folds
from foldkit.metrics import METRICS, score
from foldkit.oof import score_text
from foldkit.tasks import TASKS, targets

# onnxruntime's advice for x86 CPUs (quantize_static's docstring): uint8 activations and int8 weights, with
# reduce_range (7-bit weights) on CPUs without VNNI, where 8-bit products can saturate. Kaggle's CPUs vary and
# the bundle's CV is measured here, so always reduce_range: the same, correct model everywhere.
SETTINGS = {"format": "QDQ", "per_channel": True, "reduce_range": True, "activations": "QUInt8",
            "weights": "QInt8", "calibration": "MinMax"}
CALIBRATION_BATCH = 32
CALIBRATION_SEED = 0


class Int8Error(FoldkitError, ValueError):
    """An int8 bundle that cannot be written as asked (--max-cv-drop); the message says what to do."""


class _Calibration:
    """onnxruntime's CalibrationDataReader (it takes any object with get_next): input batches, made lazily."""

    def __init__(self, name: str, arrays):
        self.name, self.arrays = name, iter(arrays)

    def get_next(self):
        x = next(self.arrays, None)
        return None if x is None else {self.name: x}


def calibration_rows(table, fold: int, n: int):
    """n training rows of the member of `fold` (rows of the other folds: never the rows it is scored on),
    drawn with a fixed seed, in table order."""
    others = table[table["fold"] != fold]
    return others.sample(n=min(n, len(others)), random_state=CALIBRATION_SEED).sort_index()


def _pre_processed(src: Path, dst: Path, where: str, log=print) -> Path:
    """onnxruntime's pre-processing before quantization (shape inference, graph optimisation): dst, or src
    as it is where the pre-processing fails (said in the log)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    try:
        quant_pre_process(str(src), str(dst))
        return dst
    except Exception as e:   # noqa: BLE001 -- optional step: quantization works on the model as exported too
        log(f"int8: onnxruntime's pre-processing of {where} failed ({type(e).__name__}: {str(e)[:200]}); "
            "quantizing the model as exported")
        return src


def _loads(path: Path) -> None:
    import onnxruntime as ort
    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def quantize_member(src: Path, dst: Path, calibration, where: str, log=print) -> str:
    """src (fp32 ONNX) -> dst (int8), pre-processed, then static quantization with SETTINGS; dynamic
    quantization (uint8 weights: onnxruntime's CPU ConvInteger takes no int8 weights) where static fails or
    its model does not load. Returns the method."""
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = _pre_processed(src, Path(tmp) / "pre.onnx", where, log)
        try:
            name = onnx.load(str(model)).graph.input[0].name
            quantize_static(str(model), str(dst), _Calibration(name, calibration), quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
            _loads(dst)
            return "static"
        except Exception as e:   # noqa: BLE001 -- whatever static quantization trips on, dynamic is the fallback
            log(f"int8: static quantization of {where} failed ({type(e).__name__}: {str(e)[:200]}); "
                "dynamic quantization instead (weights quantized, activations at run time)")
        try:
            quantize_dynamic(str(model), str(dst), per_channel=True, reduce_range=True, weight_type=QuantType.QUInt8)
            _loads(dst)
        except Exception as e:   # noqa: BLE001 -- reported in one line
            raise Int8Error(f"{where}: onnxruntime quantizes this model neither statically nor dynamically "
                            f"({type(e).__name__}: {str(e)[:200]}): export without --int8") from None
        return "dynamic"


def quantize_members(entries: list[dict], folder: Path, comp, table, n: int, log=print) -> None:
    """onnx_int8/<stem>.onnx for every member (entries gain `onnx_int8`, `int8_method`)."""
    for e in entries:
        rows = calibration_rows(table, e["fold"], n)
        images = table_images(comp, rows, "train", [member_preparation(e)])
        arrays = (member_batch(b, e) for b in batches(images, CALIBRATION_BATCH))
        rel = Path("onnx_int8") / Path(e["onnx"]).name
        method = quantize_member(folder / e["onnx"], folder / rel, arrays, e["onnx"], log)
        e.update(onnx_int8=rel.as_posix(), int8_method=method, int8_calibration_images=len(rows))


def _member_oof(e: dict, folder: Path, comp, table, views, task: str, batch_size: int) -> dict:
    """One member's fp32 and int8 predictions on its own validation rows, and the seconds each took
    (preparing the images, and each model; a first batch runs once untimed, warming both sessions)."""
    import onnxruntime as ort
    rows = np.flatnonzero(table["fold"].to_numpy() == e["fold"])
    sessions = {k: ort.InferenceSession(str(folder / e[key]), providers=["CPUExecutionProvider"])
                for k, key in (("fp32", "onnx"), ("int8", "onnx_int8"))}
    preds = {k: [] for k in sessions}
    secs = dict.fromkeys(["prepare", *sessions], 0.0)
    t = time.perf_counter()
    for i, batch in enumerate(batches(table_images(comp, table.iloc[rows], "train", [member_preparation(e)]),
                                      batch_size)):
        x = member_batch(batch, e)
        secs["prepare"] += time.perf_counter() - t
        for k, s in sorted(sessions.items(), reverse=i % 2 == 1):   # in turn, first one then the other
            if i == 0:
                run_views(s, x, views, task)
            t = time.perf_counter()
            preds[k].append(run_views(s, x, views, task))
            secs[k] += time.perf_counter() - t
        t = time.perf_counter()
    target = e["checkpoint"].get("target")
    return {"rows": rows, "seconds": secs,
            **{k: TASKS[task].to_predictions(np.concatenate(p), target) for k, p in preds.items()}}


def _per_experiment(plan, entries: list[dict], oofs: list[dict], n_rows: int, kind: str):
    """(E, N, C) OOF predictions of each experiment (each row by its fold's model) on the rows every
    experiment has, and those rows."""
    arrays, covered = [], np.ones(n_rows, bool)
    for name in plan.experiments:
        mine = [o for e, o in zip(entries, oofs) if e["experiment"] == name]
        a = np.full((n_rows, mine[0][kind].shape[1]), np.nan)
        for o in mine:
            a[o["rows"]] = o[kind]
        arrays.append(a)
        covered &= ~np.isnan(a).any(1)
    rows = np.flatnonzero(covered)
    return np.stack([a[rows] for a in arrays]), rows


def agreement(task: str, a: np.ndarray, b: np.ndarray) -> dict:
    """How alike the fp32 and int8 predictions are (the plan's blend, before post-processing): the share of
    rows with the same class (single-label), of tags on the same side of 0.5 (multi-label), and the largest
    and mean absolute difference of the probabilities (or of the predicted values: regression)."""
    out = {"max_abs_diff": float(np.abs(a - b).max()), "mean_abs_diff": float(np.abs(a - b).mean())}
    if TASKS[task].label == "tags":
        out["same_tags"] = float(((a > 0.5) == (b > 0.5)).mean())
    elif TASKS[task].label != "number":
        out["same_label"] = float((a.argmax(1) == b.argmax(1)).mean())
    return out


def _speed(oofs: list[dict]) -> dict:
    """img/s of the whole ensemble on this machine, models only and with decoding and preparation: per image,
    every member's model time added up (each member timed on its own validation rows)."""
    per = {k: sum(o["seconds"][k] / len(o["rows"]) for o in oofs) for k in ("prepare", "fp32", "int8")}
    prep = per["prepare"] / len(oofs)    # one preparation per image (the members share one here, or near)
    return {"onnx_fp32": 1 / (prep + per["fp32"]), "onnx_int8": 1 / (prep + per["int8"]),
            "models_only": {"onnx_fp32": 1 / per["fp32"], "onnx_int8": 1 / per["int8"]},
            "int8_vs_fp32": per["fp32"] / per["int8"], "cpu_cores": os.cpu_count(),
            "images": int(sum(len(o["rows"]) for o in oofs))}


def cv_drop(metric: str, fp32: float, int8: float) -> float:
    """What int8 loses of the metric, in its direction (positive: worse)."""
    return (fp32 - int8) if METRICS[metric].greater_is_better else (int8 - fp32)


def compare(cfg, entries: list[dict], folder: Path, comp, table, meta: dict, plan) -> dict:
    """CV of the bundle's plan on the fp32 and the int8 OOF predictions, their agreement, img/s of both."""
    oofs = [_member_oof(e, folder, comp, table, plan.tta, plan.task, cfg.batch_size) for e in entries]
    fp32, rows = _per_experiment(plan, entries, oofs, len(table), "fp32")
    int8, _ = _per_experiment(plan, entries, oofs, len(table), "int8")
    y = targets(plan.task, table.iloc[rows], meta)
    cv = {"metric": plan.metric, "fp32": score(plan.metric, y, plan.finish(fp32)),
          "int8": score(plan.metric, y, plan.finish(int8)), "rows": int(len(rows))}
    cv["drop"] = cv_drop(plan.metric, cv["fp32"], cv["int8"])
    return {"cv": cv, "agreement": agreement(plan.task, plan.finish(fp32, raw=True), plan.finish(int8, raw=True)),
            "img_per_s": _speed(oofs)}


def lines(res: dict) -> list[str]:
    cv, ag, sp = res["cv"], res["agreement"], res["img_per_s"]
    same = ag.get("same_label", ag.get("same_tags"))
    return [f"int8 ({res['methods']}; {res['calibration_images']} calibration images per model): OOF CV {cv['metric']} "
            f"fp32 {score_text(cv['fp32'])} | int8 {score_text(cv['int8'])} (drop {cv['drop']:+.5f}) on {cv['rows']} "
            f"OOF rows; agreement: " + (f"{same:.2%} same {'label' if 'same_label' in ag else 'tags'}, " if same is not None
                                        else "") + f"max |diff| {ag['max_abs_diff']:.2e}",
            f"int8 speed on this machine ({sp['cpu_cores']} cores, {sp['images']} images): onnx fp32 "
            f"{sp['onnx_fp32']:.1f} img/s | int8 {sp['onnx_int8']:.1f} img/s with decoding; models only "
            f"{sp['models_only']['onnx_fp32']:.1f} | {sp['models_only']['onnx_int8']:.1f} img/s "
            f"(int8 {sp['int8_vs_fp32']:.2f}x fp32)"]


def check_drop(max_drop: float, res: dict) -> None:
    """--max-cv-drop (negative: no limit): refuse an int8 bundle that loses more of the metric than that."""
    cv = res["cv"]
    if max_drop >= 0 and cv["drop"] > max_drop:
        raise Int8Error(f"--max-cv-drop {max_drop:g}: the int8 models lose {cv['drop']:.5f} {cv['metric']} on the "
                        f"OOF rows (fp32 {score_text(cv['fp32'])}, int8 {score_text(cv['int8'])}); no bundle "
                        "written: export without --int8, with more --int8-calibration images, or a larger "
                        "--max-cv-drop")


def export_int8(cfg, entries: list[dict], folder: Path, comp, plan, log=print) -> dict:
    """--int8: every member quantized into folder/onnx_int8/, scored against fp32 on the OOF rows and
    checked against --max-cv-drop. Returns the manifest's `int8` entry."""
    table, meta = read_folds(cfg.folds_dir)
    quantize_members(entries, folder, comp, table, cfg.int8_calibration, log)
    res = compare(cfg, entries, folder, comp, table, meta, plan)
    methods = sorted({e["int8_method"] for e in entries})
    res.update(used=True, settings=SETTINGS, methods="+".join(methods),
               calibration_images=min(e["int8_calibration_images"] for e in entries))
    for line in lines(res):
        log(line)
    check_drop(cfg.max_cv_drop, res)
    return res
