"""stack.py's job: the image experiments' OOF predictions and the table's columns in gradient-boosted trees.

    run_stack     members and features -> table-only, image-only and stacked trees cross-fitted on the
                  folds -> the stacked experiment in models/<name>/ (config.json with its `stacked` record,
                  oof_fold{k}.csv, fold{k}.json, the trees of each fold) -> importance CSV (stack.py then
                  submits it through predict.py's path: foldkit.cli)
    cross_fit     fold k's trees fitted on the other folds' rows only (boost.fit stops early on an inner split
                  of those rows), validated on fold k: every scored row is predicted once, by trees that never
                  saw it; rows of no fold (train-only rare classes, fold -1) are trained on and never scored
    apply         a fold's trees on feature rows: what predict.py runs on the test rows (foldkit.predict.stacked:
                  each member's fold ensemble as predict.py makes it, before post-processing, as the OOF features
                  are, beside the test table's columns; every fold's trees averaged by the plan)

The image features of a training row are its OOF prediction, made by the member's fold model that never saw
the row; the fold-k trees see the OOF of the other folds' rows only. CV is the stacked OOF file scored against
the same folds by the kit's own scorer (oof.cv_summary), so the leaderboard and the report agree with it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import time
from pathlib import Path

import numpy as np
import pandas as pd

from foldkit.experiment import Experiment, all_experiments, find_experiments
from foldkit.folds.file import read_folds
from foldkit.io import atomic_write_bytes, atomic_write_text, atomic_write_with
from foldkit.metrics import METRICS
from foldkit.oof import cv_summary, load_oof, score_text
from foldkit.stack import boost
from foldkit.stack.features import StackError, choose, encode, image_features
from foldkit.tasks import TASKS, TRANSFORMS, TargetScale, oof_columns, targets, task_of

VARIANTS = ("table", "image", "stacked")


def is_stacked(exp: Experiment) -> bool:
    return bool(exp.config().get("stacked"))


def members(cfg, meta: dict) -> list[Experiment]:
    """--experiments, else every image experiment trained on all folds of this folds file (as predict.py
    can ensemble them); refused when one is stacked, unfinished or trained on other folds."""
    names = [n.strip() for n in cfg.experiments.split(",") if n.strip()]
    every = list(range(int(meta.get("n_folds") or 0)))
    if names:
        exps = find_experiments(cfg.models_dir, names)
    else:
        exps = [e for e in all_experiments(cfg.models_dir) if not is_stacked(e) and e.finished_folds() == every
                and e.config().get("folds_sha256") == meta["sha256_now"]]
        if not exps:
            raise StackError(f"no image experiment in {cfg.models_dir} is trained on all {len(every)} folds of "
                             f"{cfg.folds_dir}: run `python src/train.py --fold all` first")
    for e in exps:
        if is_stacked(e):
            raise StackError(f"experiment {e.name} is itself a stack: stack image experiments")
        if e.config().get("folds_sha256") != meta["sha256_now"]:
            raise StackError(f"experiment {e.name} was trained on other folds than {cfg.folds_dir} holds now")
        if e.finished_folds() != every:
            raise StackError(f"experiment {e.name} has finished folds {e.finished_folds()}, not all of {every}: "
                             f"train the rest with `python src/train.py --fold all --experiment {e.name}`")
    metrics = {e.config().get("metric") for e in exps}
    if len(metrics) > 1:
        raise StackError(f"the experiments are scored by different metrics ({', '.join(sorted(map(str, metrics)))}): "
                         "stack experiments of one metric")
    return exps


def objective(task: str, n_classes: int) -> str:
    kind = TASKS[task].label
    return "regression" if kind == "number" else "binary" if kind == "tags" or n_classes == 2 else "multiclass"


def target_transform(task: str, metric: str) -> str:
    """The transform a regression metric trains on (tasks.TRANSFORMS: rmsle fits the trees on log1p of the target,
    so their squared error is the metric's), as image experiments do; 'none' for the other kinds."""
    return METRICS[metric].target if TASKS[task].label == "number" else "none"


def fit_fold(kind, x, y, cats, task, n_classes, seeds, train, transform="none"):
    """The models of one fold (per seed; multi-label: per label too), fitted on the rows `train` only (a
    regression target through `transform` first)."""
    obj = objective(task, n_classes)
    if transform != "none":
        y = TRANSFORMS[transform].numpy(np.asarray(y, dtype=np.float64))
    labels = range(y.shape[1]) if y.ndim == 2 else [None]
    return [[boost.fit(kind, x[train], (y[train] if j is None else y[train, j]), cats, obj, n_classes, s)
             for j in labels] for s in seeds]


def apply(models, x: np.ndarray, task: str, n_classes: int, transform: str = "none") -> np.ndarray:
    """The seeds' mean prediction in the task's shape: (N, 1) value (averaged where the trees were fitted, then
    back through `transform`'s inverse), (N, C) probabilities, (N, L) per label."""
    per_seed = []
    for per_label in models:
        outs = [boost.predict(m, x) for m in per_label]
        if TASKS[task].label == "tags":
            per_seed.append(np.stack(outs, axis=1))
        elif TASKS[task].label == "number":
            per_seed.append(outs[0].reshape(-1, 1))
        elif n_classes == 2:
            per_seed.append(np.stack([1 - outs[0], outs[0]], axis=1))
        else:
            per_seed.append(outs[0])
    mean = np.mean(per_seed, axis=0)
    return TRANSFORMS[transform].inverse(mean) if transform != "none" else mean


def cross_fit(kind, x, y, folds, cats, task, n_classes, seeds, log=print, transform="none"):
    """(OOF predictions, importance per feature (boost.importance, summed), models per fold): fold k's models fitted on the rows of the other
    folds only (and the train-only rows, fold -1), scored on fold k's rows."""
    oof = np.full((len(x), 1 if TASKS[task].label == "number" else n_classes), np.nan)
    gain, fitted = np.zeros(x.shape[1]), {}
    for k in sorted(int(f) for f in np.unique(folds) if f >= 0):
        train, valid = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        fitted[k] = fit_fold(kind, x, y, cats, task, n_classes, seeds, train, transform)
        oof[valid] = apply(fitted[k], x[valid], task, n_classes, transform)
        gain += sum(boost.importance(m) for per_label in fitted[k] for m in per_label)
    return oof, gain, fitted


def stack_name(cfg, exps, features, kind) -> str:
    if cfg.experiment:
        return cfg.experiment
    what = json.dumps([[e.name for e in exps], [f.name + ":" + f.kind for f in features], kind, cfg.seeds])
    return f"stack-{hashlib.sha256(what.encode()).hexdigest()[:6]}"


def oof_table(table: pd.DataFrame, pred: np.ndarray, task: str, meta: dict) -> pd.DataFrame:
    """OOF rows of the scored rows in the columns an image experiment writes (id, fold, label, pred, prob_...)."""
    scored = (table["fold"] >= 0).to_numpy()
    cols = oof_columns(task, meta, pred[scored], TargetScale())
    return pd.DataFrame({"id": table["id"][scored].to_numpy(), "fold": table["fold"][scored].to_numpy(),
                         "label": table["label"][scored].to_numpy(), **cols})


def score(frame: pd.DataFrame, classes, metric, task, sep) -> dict:
    return cv_summary(frame, list(classes), metric, task, sep)


def write_experiment(exp: Experiment, record: dict, frame: pd.DataFrame, fitted: dict, spec: dict) -> dict:
    """config.json, oof_fold{k}.csv, the trees of each fold and fold{k}.json (written last: fold k finished).
    Returns the CV of the OOF files as written (oof.load_oof: what the leaderboard and report read)."""
    exp.dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(exp.config_path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    for k, models in fitted.items():
        part = frame[frame["fold"] == k]
        atomic_write_with(exp.oof(k), lambda tmp, p=part: p.to_csv(tmp, index=False, float_format="%.10g"))
        atomic_write_bytes(exp.trees(k), pickle.dumps({**spec, "models": models}))
    oof, classes = load_oof(exp.dir, sorted(fitted))
    rep = score(oof, classes, record["metric"], record["reading"]["task"], record["reading"].get("label_sep", ""))
    for k, models in fitted.items():
        at = rep["folds"].index(k)
        summary = {"fold": k, "metric": record["metric"], "value": rep["fold_scores"][at], "stacked": True,
                   "trees": [m.trees for per_label in models for m in per_label],
                   "train_rows": int((frame["fold"] != k).sum()), "valid_rows": int((frame["fold"] == k).sum())}
        atomic_write_text(exp.summary_path(k), json.dumps(summary, indent=2) + "\n")
    return rep


def importance_table(gains: dict[str, np.ndarray], names: dict[str, list[str]], kind: str) -> pd.DataFrame:
    """importance.csv: variant, feature, importance (summed over folds, seeds and labels), share (of the
    variant's positive total), measure (boost.IMPORTANCE: split gain or permutation importance)."""
    rows = [{"variant": v, "feature": n, "importance": float(g),
             "share": float(max(g, 0) / max(np.clip(gains[v], 0, None).sum(), 1e-300)), "measure": boost.IMPORTANCE[kind]}
            for v in gains for n, g in zip(names[v], gains[v])]
    return pd.DataFrame(rows).sort_values(["variant", "importance"], ascending=[True, False], kind="stable")


def prepare(cfg, log=print):
    """The folds, the members, the table's features and the targets: what every variant is fitted on."""
    table, meta = read_folds(cfg.folds_dir)
    task = task_of(meta)
    exps = members(cfg, meta)
    features = choose(table, meta, cfg.features)
    x_table = encode(table, features)
    x_image, image_names = image_features(exps, table["id"].astype(str))
    y = targets(task, table, meta)
    return table, meta, task, exps, features, x_table, x_image, image_names, y


def stack_record(cfg, meta, exps, features, image_names, kind, seeds, name, metric, reports) -> dict:
    """config.json of the stacked experiment: what every step reads of an experiment (task, metric, classes,
    folds) and the `stacked` record (members, features, booster, seeds, the three CVs)."""
    first = exps[0].config()
    return {"experiment": name, "model": f"stack-{kind}", "img_size": 0, "metric": metric, "seed": cfg.seed,
            "classes": meta["classes"], "n_folds": meta.get("n_folds"), "folds_sha256": meta["sha256_now"],
            "layout": first.get("layout"), "reading": first.get("reading") or {"task": task_of(meta)},
            "test_like_fold": bool(meta.get("test_like")),
            "stacked": {"members": [e.name for e in exps], "booster": kind, "seeds": seeds,
                        "features": [{"name": f.name, "kind": f.kind, "categories": f.categories} for f in features],
                        "image_features": image_names, "test_table": cfg.test_table,
                        "cv": {v: r["cv"] for v, r in reports.items()}}}


def run_stack(cfg, log=print) -> dict:
    """stack.py: the three variants cross-fitted, the stacked experiment written, the submission made when
    the competition has test images. Returns the figures the CLI prints."""
    t0 = time.time()
    table, meta, task, exps, features, x_table, x_image, image_names, y = prepare(cfg, log)
    kind = boost.available() if cfg.booster == "auto" else cfg.booster
    classes, sep, metric = meta["classes"], meta.get("label_sep", "") or "", exps[0].config().get("metric")
    n_classes, folds, seeds = len(classes), table["fold"].to_numpy(), [cfg.seed + s for s in range(cfg.seeds)]
    log(f"stacking {', '.join(e.name for e in exps)} with {len(features)} table feature(s) "
        f"({', '.join(f'{f.name}:{f.kind}' for f in features) or 'none'}); {kind} trees, {len(seeds)} seed(s)")
    cats = [i for i, f in enumerate(features) if f.kind == "cat"]
    transform = target_transform(task, metric)
    data = {"table": (x_table, cats, [f.name for f in features]), "image": (x_image, [], image_names),
            "stacked": (np.concatenate([x_table, x_image], axis=1), cats, [f.name for f in features] + image_names)}
    reports, gains, names, preds, fitted = {}, {}, {}, {}, {}
    for v in VARIANTS:
        x, c, names[v] = data[v]
        if x.shape[1] == 0:
            continue
        preds[v], gains[v], fitted[v] = cross_fit(kind, x, y, folds, c, task, n_classes, seeds, log, transform)
        reports[v] = score(oof_table(table, preds[v], task, meta), classes, metric, task, sep)
        log(f"{v:>8s} trees: CV {metric} {score_text(reports[v]['cv'])} "
            f"(folds {score_text(reports[v]['cv_mean'])} ± {score_text(reports[v]['cv_std'])})")
    name = stack_name(cfg, exps, features, kind)
    exp = Experiment(Path(cfg.models_dir) / name)
    record = stack_record(cfg, meta, exps, features, image_names, kind, seeds, name, metric, reports)
    spec = {"features": [dataclasses.asdict(f) for f in features], "members": [e.name for e in exps],
            "task": task, "n_classes": n_classes, "transform": transform}
    rep = write_experiment(exp, record, oof_table(table, preds["stacked"], task, meta), fitted["stacked"], spec)
    imp = importance_table(gains, names, kind)
    imp_path = exp.dir / "importance.csv"
    atomic_write_with(imp_path, lambda tmp: imp.to_csv(tmp, index=False, lineterminator="\n"))
    out = {"experiment": name, "dir": str(exp.dir), "metric": metric, "booster": kind, "members": [e.name for e in exps],
           "features": [f"{f.name}:{f.kind}" for f in features], "cv": {v: r["cv"] for v, r in reports.items()},
           "cv_file": rep["cv"], "rows": rep["n"], "importance": str(imp_path), "importance_top": imp}
    out["seconds"] = time.time() - t0
    return out
