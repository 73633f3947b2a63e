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
the row; the fold-k trees see the OOF of the other folds' rows only. A target encoding (--target-encode) is
fitted on fold k's training rows only: their own encodings cross-fitted by an inner K-fold, fold k's rows
encoded by the statistics of all of them (features.fit_target_encoders); each fold's encoders are stored
with its trees, and the test rows are encoded by them. CV is the stacked OOF file scored against the same
folds by the kit's own scorer (oof.cv_summary) read as the report and the leaderboard read it: a threshold
metric at the threshold fitted on the rows scored (the scorer predict.calibrate.cv_scorer, handed down by
the CLI since predict/ sits above stack/).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from foldkit.experiment import Experiment, all_experiments, find_experiments
from foldkit.folds.file import read_folds
from foldkit.io import atomic_write_bytes, atomic_write_text, atomic_write_with
from foldkit.metrics import METRICS
from foldkit.oof import cv_summary, load_oof, score_text
from foldkit.stack import boost
from foldkit.stack.features import (StackError, apply_target_encoders, check_columns, choose, encoded_values,
                                    fit_target_encoders, image_features, image_views, table_matrix, table_names)
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


@dataclass
class TargetEncoding:
    """--target-encode for cross_fit: the encoded columns' values (N, E) and the targets they encode (N, J),
    inserted as features at column `at`; cross_fit fills `encoders` (fold -> that fold's fitted encoders)."""
    values: np.ndarray
    targets: np.ndarray
    at: int
    seed: int
    encoders: dict = field(default_factory=dict)

    def fold_matrix(self, x: np.ndarray, k: int, train: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """x with fold k's encodings inserted: the training rows' cross-fitted, fold k's by the fold's encoders
        (statistics of all the training rows, never of fold k's labels)."""
        encoders, own = fit_target_encoders(self.values[train], self.targets[train], self.seed)
        self.encoders[k] = encoders
        te = np.full((len(x), own.shape[1]), np.nan)
        te[train], te[valid] = own, apply_target_encoders(encoders, self.values[valid])
        return np.concatenate([x[:, :self.at], te, x[:, self.at:]], axis=1)


def encoding_targets(task: str, y: np.ndarray, n_classes: int, transform: str) -> np.ndarray:
    """What a target encoding averages (N, J): the target on the scale the trees fit (regression), P(positive)
    (two classes), each class as 0/1 (more), each label (multi-label)."""
    kind = TASKS[task].label
    if kind == "number":
        y = np.asarray(y, dtype=np.float64)
        return (TRANSFORMS[transform].numpy(y) if transform != "none" else y).reshape(-1, 1)
    if kind == "tags":
        return np.asarray(y, dtype=np.float64)
    if n_classes == 2:
        return (np.asarray(y) == 1).astype(np.float64).reshape(-1, 1)
    return np.eye(n_classes)[np.asarray(y, dtype=int)]


def cross_fit(kind, x, y, folds, cats, task, n_classes, seeds, log=print, transform="none", te=None):
    """(OOF predictions, importance per feature (boost.importance, summed), models per fold): fold k's models fitted on the rows of the other
    folds only (and the train-only rows, fold -1), scored on fold k's rows. `te` (TargetEncoding): fold k's
    target encodings fitted on its training rows only, inserted at te.at (its encoders kept in te.encoders)."""
    oof = np.full((len(x), 1 if TASKS[task].label == "number" else n_classes), np.nan)
    gain, fitted = None, {}
    for k in sorted(int(f) for f in np.unique(folds) if f >= 0):
        train, valid = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        xk = te.fold_matrix(x, k, train, valid) if te is not None else x
        fitted[k] = fit_fold(kind, xk, y, cats, task, n_classes, seeds, train, transform)
        oof[valid] = apply(fitted[k], xk[valid], task, n_classes, transform)
        fold_gain = sum(boost.importance(m) for per_label in fitted[k] for m in per_label)
        gain = fold_gain if gain is None else gain + fold_gain
    return oof, (np.zeros(x.shape[1]) if gain is None else gain), fitted


def stack_name(cfg, exps, features, kind, views=("none",)) -> str:
    if cfg.experiment:
        return cfg.experiment
    extra = [[cfg.norm_by, te_columns(cfg)]] if cfg.norm_by or te_columns(cfg) else []   # old names kept
    extra += [list(views)] if list(views) != ["none"] else []
    what = json.dumps([[e.name for e in exps], [f.name + ":" + f.kind for f in features], kind, cfg.seeds, *extra])
    return f"stack-{hashlib.sha256(what.encode()).hexdigest()[:6]}"


SETTINGS = ("members", "features", "booster", "seeds", "norm_by", "target_encode", "tta", "test_table")


def check_overwrite(exp: Experiment, settings: dict) -> None:
    """A stacked experiment of that name stacked with other settings is never replaced (one line); stacked
    with the same ones, stack.py fits it again (the same trees: the seeds are the same)."""
    if not exp.config_path.is_file():
        return
    old = exp.config().get("stacked")
    if old is None:
        raise StackError(f"experiment {exp.name} exists in {exp.dir.parent} and is an image experiment: name the "
                         "stack another way (--experiment NAME)")
    old = {"tta": ["none"], **old}          # stacked before the views were recorded: on the one-view OOF
    changed = [k for k in SETTINGS if k in old and json.loads(json.dumps(old[k])) != json.loads(json.dumps(settings.get(k)))]
    if changed:
        raise StackError(f"stacked experiment {exp.name} exists, stacked with other {', '.join(changed)}: name this "
                         f"stack another way (--experiment NAME), or delete {exp.dir} to replace it")


def oof_table(table: pd.DataFrame, pred: np.ndarray, task: str, meta: dict) -> pd.DataFrame:
    """OOF rows of the scored rows in the columns an image experiment writes (id, fold, label, pred, prob_...)."""
    scored = (table["fold"] >= 0).to_numpy()
    cols = oof_columns(task, meta, pred[scored], TargetScale())
    return pd.DataFrame({"id": table["id"][scored].to_numpy(), "fold": table["fold"][scored].to_numpy(),
                         "label": table["label"][scored].to_numpy(), **cols})


def score(frame: pd.DataFrame, classes, metric, task, sep, cv_scorer=None) -> dict:
    """oof.cv_summary, read by cv_scorer(metric, task, n_classes)'s scorer when given (predict.calibrate's:
    a threshold metric at its fitted threshold, as the report and the leaderboard read it)."""
    scorer = cv_scorer(metric, task, len(classes)) if cv_scorer else None
    return cv_summary(frame, list(classes), metric, task, sep, scorer)


def write_experiment(exp: Experiment, record: dict, frame: pd.DataFrame, fitted: dict, spec: dict,
                     fold_specs: dict | None = None, cv_scorer=None) -> dict:
    """config.json, oof_fold{k}.csv, the trees of each fold (with the spec, and fold_specs[k]: the fold's
    fitted target encoders) and fold{k}.json (written last: fold k finished). Returns the CV of the OOF files
    as written (oof.load_oof: what the leaderboard and report read)."""
    exp.dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(exp.config_path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    for k, models in fitted.items():
        part = frame[frame["fold"] == k]
        atomic_write_with(exp.oof(k), lambda tmp, p=part: p.to_csv(tmp, index=False, float_format="%.10g"))
        atomic_write_bytes(exp.trees(k), pickle.dumps({**spec, **(fold_specs or {}).get(k, {}), "models": models}))
    oof, classes = load_oof(exp.dir, sorted(fitted))
    rep = score(oof, classes, record["metric"], record["reading"]["task"], record["reading"].get("label_sep", ""),
                cv_scorer)
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


def te_columns(cfg) -> list[str]:
    return [c.strip() for c in cfg.target_encode.split(",") if c.strip()]


def encoded_outputs(task: str, classes: list) -> list[str]:
    """What each target-encoded column becomes: one mean (regression, two classes), or one per class or label."""
    one = TASKS[task].label == "number" or (TASKS[task].label != "tags" and len(classes) == 2)
    return ["y"] if one else [str(c) for c in classes]


def prepare(cfg, log=print):
    """The folds, the members, the table's features (their spec: what the test side needs to build the same
    rows, features.table_matrix) and the targets: what every variant is fitted on."""
    table, meta = read_folds(cfg.folds_dir)
    task = task_of(meta)
    exps = members(cfg, meta)
    spec = {"norm_by": cfg.norm_by, "target_encode": te_columns(cfg)}
    check_columns(table, spec, f"the folds file of {cfg.folds_dir}")
    features = choose(table, meta, cfg.features, encoded=tuple(spec["target_encode"]))
    spec["features"] = [dataclasses.asdict(f) for f in features]
    x_table = table_matrix(table, spec)
    spec["tta"] = image_views(exps, cfg.tta)
    x_image, image_names = image_features(exps, table["id"].astype(str), spec["tta"], log)
    y = targets(task, table, meta)
    return table, meta, task, exps, features, spec, x_table, x_image, image_names, y


def stack_record(cfg, meta, exps, spec, image_names, kind, seeds, name, metric, reports) -> dict:
    """config.json of the stacked experiment: what every step reads of an experiment (task, metric, classes,
    folds) and the `stacked` record (members, features, booster, seeds, the three CVs)."""
    first = exps[0].config()
    return {"experiment": name, "model": f"stack-{kind}", "img_size": 0, "metric": metric, "seed": cfg.seed,
            "classes": meta["classes"], "n_folds": meta.get("n_folds"), "folds_sha256": meta["sha256_now"],
            "layout": first.get("layout"), "reading": first.get("reading") or {"task": task_of(meta)},
            "test_like_fold": bool(meta.get("test_like")),
            "stacked": {"members": [e.name for e in exps], "booster": kind, "seeds": seeds,
                        "features": spec["features"], "norm_by": spec["norm_by"],
                        "target_encode": spec["target_encode"], "image_features": image_names,
                        "test_table": cfg.test_table, "tta": spec["tta"],
                        "cv": {v: r["cv"] for v, r in reports.items()}}}


def variants(cfg, table, task, classes, spec, x_table, x_image, image_names, y, transform) -> dict:
    """Each variant's (features, categorical columns, feature names, TargetEncoding or None): the table's
    features (target encodings inserted after them), the image predictions, both."""
    cats = [i for i, f in enumerate(spec["features"]) if f["kind"] == "cat"]
    names = table_names(spec, encoded_outputs(task, classes))
    cols = spec["target_encode"]

    def te():
        return TargetEncoding(encoded_values(table, cols), encoding_targets(task, y, len(classes), transform),
                              x_table.shape[1], cfg.seed) if cols else None
    return {"table": (x_table, cats, names, te()), "image": (x_image, [], image_names, None),
            "stacked": (np.concatenate([x_table, x_image], axis=1), cats, names + image_names, te())}


def run_stack(cfg, log=print, cv_scorer=None) -> dict:
    """stack.py: the three variants cross-fitted, the stacked experiment written, the submission made when
    the competition has test images. cv_scorer(metric, task, n_classes): how the CVs are read
    (predict.calibrate.cv_scorer, handed down by the CLI: the report's and the leaderboard's reading).
    Returns the figures the CLI prints."""
    t0 = time.time()
    table, meta, task, exps, features, spec, x_table, x_image, image_names, y = prepare(cfg, log)
    kind = boost.resolve(cfg.booster)
    classes, sep, metric = meta["classes"], meta.get("label_sep", "") or "", exps[0].config().get("metric")
    n_classes, folds, seeds = len(classes), table["fold"].to_numpy(), [cfg.seed + s for s in range(cfg.seeds)]
    extra = "".join([f"; z-scores by {cfg.norm_by}" if cfg.norm_by else "",
                     f"; target-encoded {', '.join(spec['target_encode'])}" if spec["target_encode"] else ""])
    log(f"stacking {', '.join(e.name for e in exps)} with {len(features)} table feature(s) "
        f"({', '.join(f'{f.name}:{f.kind}' for f in features) or 'none'}{extra}); {kind} trees, {len(seeds)} seed(s)")
    name = stack_name(cfg, exps, features, kind, spec["tta"])
    exp = Experiment(Path(cfg.models_dir) / name)
    check_overwrite(exp, stack_record(cfg, meta, exps, spec, image_names, kind, seeds, name, metric, {})["stacked"])
    transform = target_transform(task, metric)
    data = variants(cfg, table, task, classes, spec, x_table, x_image, image_names, y, transform)
    reports, gains, names, preds, fitted = {}, {}, {}, {}, {}
    for v in VARIANTS:
        x, c, names[v], te = data[v]
        if not names[v]:
            continue
        preds[v], gains[v], fitted[v] = cross_fit(kind, x, y, folds, c, task, n_classes, seeds, log, transform, te)
        reports[v] = score(oof_table(table, preds[v], task, meta), classes, metric, task, sep, cv_scorer)
        log(f"{v:>8s} trees: CV {metric} {score_text(reports[v]['cv'])} "
            f"(folds {score_text(reports[v]['cv_mean'])} ± {score_text(reports[v]['cv_std'])})")
    record = stack_record(cfg, meta, exps, spec, image_names, kind, seeds, name, metric, reports)
    full_spec = {**spec, "members": [e.name for e in exps], "task": task, "n_classes": n_classes, "transform": transform}
    te = data["stacked"][3]
    fold_specs = {k: {"encoders": enc} for k, enc in te.encoders.items()} if te else None
    rep = write_experiment(exp, record, oof_table(table, preds["stacked"], task, meta), fitted["stacked"], full_spec,
                           fold_specs, cv_scorer)
    imp = importance_table(gains, names, kind)
    imp_path = exp.dir / "importance.csv"
    atomic_write_with(imp_path, lambda tmp: imp.to_csv(tmp, index=False, lineterminator="\n"))
    out = {"experiment": name, "dir": str(exp.dir), "metric": metric, "booster": kind, "members": [e.name for e in exps],
           "features": [f"{f.name}:{f.kind}" for f in features], "cv": {v: r["cv"] for v, r in reports.items()},
           "cv_file": rep["cv"], "rows": rep["n"], "importance": str(imp_path), "importance_top": imp}
    out["seconds"] = time.time() - t0
    return out
