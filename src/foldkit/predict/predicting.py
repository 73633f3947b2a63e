"""predict.py's job: fold ensemble -> validated submission + CV report; or one image's top-k.

    make_plan(cfg, ...) the plan (blend.Plan) fitted on the experiments' OOF: folds combined,
                       blend weights, post-processing, TTA views, submission mode. export.py
                       fits the bundle's plan with it too.
    run_predict(cfg)   experiments -> members -> per-member test probabilities (each image decoded
                       once) -> plan.apply -> submission (sample's shape, validated, never
                       overwritten) -> test score; the reports are written by the `reports` it is
                       handed (foldkit.report.predicted.write_reports: predict/ writes no page)
    predict_image(cfg) top-k classes of one image, through the same plan
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from foldkit import metrics
from foldkit.data.dataset import ImageSource, auto_workers
from foldkit.data.images import preparation, shrink, to_channels
from foldkit.data.reading import read_text_csv
from foldkit.data.store import cache_root
from foldkit.ensemble import trained_with_flips, views_of
from foldkit.experiment import Experiment, find_experiments
from foldkit.data.reading import open_competition
from foldkit.folds.file import read_folds
from foldkit.predict import blend, stacked, submission
from foldkit.predict.inference import load_members, load_single_image, predict_ensemble
from foldkit.predict.submission import SubmissionError
from foldkit.tags import join_tags, multi_hot
from foldkit.runtime.device import amp_dtype, pick_device, use_channels_last
from foldkit.stack.stacking import is_stacked
from foldkit.tasks import TASKS, check_combination


def members_for(cfg, expected_classes=None, stacks: bool = False):
    """The experiments of --experiments (default: the latest) and every finished fold's model; with
    `stacks` (predict.py), a stacked experiment's folds are its trees (foldkit.predict.stacked.StackedFold),
    else load_members refuses it in one line (export.py, --image)."""
    names = [n.strip() for n in cfg.experiments.split(",") if n.strip()] or None
    exps = find_experiments(cfg.models_dir, names)
    if not stacks or not any(is_stacked(e) for e in exps):
        return exps, load_members(exps, expected_classes)
    members = []
    for e in exps:
        members += stacked.load_stacked(e, load_members) if is_stacked(e) else load_members([e], expected_classes)
    return exps, members


def tta_views(cfg, members) -> list[str]:
    flips = {trained_with_flips(Experiment(m.path.parent).config()) for m in stacked.image_members(members)}
    return views_of(cfg.tta, flips == {True})


def read_sample(comp) -> pd.DataFrame | None:
    """sample_submission.csv as written (ids and values as text: no NA guessing)."""
    return read_text_csv(comp.sample_submission) if comp.sample_submission else None


def make_plan(cfg, exps, members, sample, log=print, for_test: bool = True) -> tuple[blend.Plan, dict]:
    """The plan of these experiments and members, fitted on their OOF (--blend, --calibrate,
    --thresholds), with --ensemble, the TTA views and the submission mode (decided from the metric and
    the sample). Its post-processing is fitted, and its CV scored, for the metric of the file written
    (submission.file_metric: a tags file's F metric, a probability file's probability metric).
    predict.py and export.py both fit it here. Returns (plan, blend.from_experiments's dict)."""
    classes, (task, sep) = members[0].classes, exps[0].task()
    check_combination(task, cfg.ensemble, cfg.blend)
    views = tta_views(cfg, members)
    trained = exps[0].config().get("metric", "accuracy")
    positive, positive_why = positive_class(cfg, exps, sample, classes, task)
    mode, why = submission.decide_mode(sample, classes, cfg.submission_mode, trained, task, positive)
    scored, scored_why = submission.file_metric(task, mode, trained, cfg.tag_metric, len(classes))
    if for_test:
        log(f"submission mode: {mode} ({why})")
        if positive_why and mode == "probs" and (sample is None or len(sample.columns) == 2):
            other = next(str(c) for c in classes if str(c) != positive)
            log(f"positive class: {positive} ({positive_why}); --positive-class {other} writes P({other})")
        if scored_why:
            log(f"note: {scored_why}")
    fitted = blend.from_experiments(exps, classes, cfg.blend, cfg.calibrate, cfg.thresholds, log, cfg.clip, scored,
                                    views)
    plan = dataclasses.replace(fitted["plan"], experiments=[e.name for e in exps],
                               members=[(m.path.parent.name, int(m.fold)) for m in members], ensemble=cfg.ensemble,
                               tta=views, submission_mode=mode, classes=list(classes),
                               metric=fitted["metric"], task=task, positive=positive,
                               label_sep=tags_separator(cfg, sample, sep, task))
    return plan, fitted


def tags_separator(cfg, sample, train_sep: str, task: str) -> str:
    """The separator of a tags file's tags (submission.tags_separator), --label-sep when predict.py is
    given it; --label-sep on a competition without tags is refused (it would change nothing)."""
    given = cfg.label_sep if "label_sep" in cfg.given else ""
    if TASKS[task].label != "tags":
        if given:
            raise SubmissionError(f"--label-sep {given!r} joins the tags of a multi-label submission; this "
                                  f"competition is {task}: remove it")
        return ""
    return submission.tags_separator(sample, train_sep, given)


def positive_class(cfg, exps, sample, classes, task) -> tuple[str, str]:
    """(the class whose probability a binary one-column file holds, why; '' for other tasks): the class the
    sample's value column is named after, --positive-class (predict.py's, else the training run's), else
    the second in sorted order. A flag that contradicts the sample's column name is refused."""
    given = cfg.positive_class if "positive_class" in cfg.given else ""
    chosen, why = (given, "--positive-class") if given else (
        exps[0].config().get("positive_class", "") or "", "--positive-class of the training run")
    submission.check_positive_class(chosen, classes, task, why=why)
    names = [str(c) for c in classes]
    if not (TASKS[task].exclusive and len(names) == 2):
        return "", ""
    column = str(sample.columns[1]) if sample is not None and len(sample.columns) == 2 else ""
    if column in names:
        if chosen and chosen != column:
            raise SubmissionError(f"sample_submission.csv's value column is named {column}, so it holds "
                                  f"P({column}), but {why} says {chosen}: pass --positive-class {column}, or "
                                  "check the sample")
        return column, "the sample's value column is named after it"
    if chosen:
        return chosen, why
    return names[1], "the second class in sorted order"


def predict_members(cfg, members, sources, tta, cached: bool = False, progress=None,
                    workers: int | None = None) -> list[np.ndarray]:
    """Per-member probabilities (each view averaged) with the run settings --device, --amp,
    --batch-size, --channels-last, --workers: what plan.apply takes. predict.py, --image and the
    bundle's torch runner all predict here."""
    device = pick_device(cfg.device)
    _, per_member = predict_ensemble(
        members, sources, tta=tta, device=device, dtype=amp_dtype(device, cfg.amp),
        batch_size=cfg.batch_size, progress=cfg.progress if progress is None else progress,
        channels_last=use_channels_last(cfg.channels_last, device),
        workers=auto_workers(cfg.workers, cached=cached) if workers is None else workers, return_members=True)
    return per_member


def preparations(members) -> list[tuple[bool, int]]:
    """The distinct (grey, side) image preparations of the ensemble's members (images.preparation):
    each member sees exactly what its training and OOF saw; each image is decoded once per entry."""
    return sorted({preparation(m.in_chans, m.data_config) for m in members})


def sources_for(members, images: list) -> dict:
    """{(grey, side): images} for MultiViewDataset from images already in memory (HWC uint8, e.g.
    synthetic ones), given each preparation's channels and shrink."""
    return {(grey, side): [shrink(to_channels(im, grey), side) for im in images]
            for grey, side in preparations(members)}


def make_sources(comp, table, split, members, cfg=None) -> dict:
    """{(grey, side): ImageSource} of a table's images, one per distinct preparation of the members: from
    the decoded-image store under cfg's cache folder (foldkit.data.store, shared with training and earlier
    predictions) when cfg.cache is auto or disk, else prepared on demand (cfg None: the bundle, one pass)."""
    cache, where = ("off", None) if cfg is None or cfg.cache in ("ram", "off") else (cfg.cache, cache_root(cfg))
    return {(grey, side): ImageSource(comp, table, split, grey=grey, cache=cache, max_side=side, progress=False,
                                      cache_dir=where)
            for grey, side in preparations(members)}


def _solution_labels(comp, test: pd.DataFrame, classes: list = (), sep: str = " ") -> pd.Series | None:
    """Test labels when the competition has them: solution.csv (id,label, or one 0/1 column per class or
    label: read as the class set to 1, or the tags set to 1 joined by sep) or labelled test data."""
    sol = Path(comp.root) / "solution.csv"
    if sol.is_file():
        s = read_text_csv(sol)
        ids, cols = s[s.columns[0]].astype(str), list(s.columns[1:])
        if len(cols) > 1 and set(cols) == {str(c) for c in classes}:     # one-hot / multi-hot columns
            on = s[cols].apply(pd.to_numeric, errors="coerce").fillna(0).to_numpy() > 0.5
            return pd.Series(join_tags(on, cols, sep), index=ids)
        return pd.Series(s[cols[0]].to_numpy(), index=ids)
    if "label" in test.columns:
        return pd.Series(test["label"].astype(str).to_numpy(), index=test["id"].astype(str))
    return None


def rare_class_notes(meta: dict) -> dict:
    """What the report says about classes with fewer samples than folds (folds_meta.json)."""
    rare = (meta.get("rare_classes") or {})
    if not rare.get("classes"):
        return {}
    desc = ", ".join(f"{c} ({n})" for c, n in rare["classes"].items())
    if rare.get("mode") == "train-only":
        return {"rare classes": f"{rare.get('train_only_rows', 0)} row(s) of {len(rare['classes'])} class(es) with "
                                f"fewer samples than folds were trained on in every fold and validated in none "
                                f"(no OOF rows, not in the CV): {desc}"}
    return {"rare classes": f"{len(rare['classes'])} class(es) have fewer samples than folds, so some folds "
                            f"validate them without having trained on them (their OOF scores are pessimistic): {desc}"}


def predict_test(cfg, comp, members, plan, log=print):
    """Test probabilities: every member and TTA view on each test image decoded once, then the plan
    (each experiment's folds combined, the blend, the post-processing fitted on OOF).
    Returns (probs, probs without post-processing, seconds)."""
    if comp.test_problems:
        more = f"\n  ... and {len(comp.test_problems) - 10} more" if len(comp.test_problems) > 10 else ""
        raise SubmissionError(f"{len(comp.test_problems)} test image(s) of {comp.sample_submission or comp.root} "
                              "cannot be read, and a submission needs a prediction for every id:\n  "
                              + "\n  ".join(comp.test_problems[:10]) + more + "\nFix or restore those files.")
    t1 = time.time()
    images = stacked.image_members(members)     # a stacked experiment's image models too, each once
    sources = make_sources(comp, comp.test, "test", images, cfg)
    per_image = predict_members(cfg, images, sources, plan.tta, cached=all(s.prepared for s in sources.values()))
    per_member = stacked.per_member(members, images, per_image, comp, plan.ensemble, log)
    probs, probs_raw = plan.apply(per_member), plan.apply(per_member, raw=True)
    dt = time.time() - t1
    log(f"predicted {len(probs)} test images with {len(members)} models x {len(plan.tta)} views in {dt:.1f}s "
        f"({len(probs) / max(dt, 1e-9):.0f} img/s)")
    return probs, probs_raw, dt


def write_submission(cfg, comp, probs, plan, sample, cv, log=print):
    """The submission in the sample's shape and the plan's mode, validated, under a name never used
    before. Returns (path, mode, rows)."""
    mode, names = plan.submission_mode, plan.experiments
    sub = submission.make(comp.test["id"].astype(str).tolist(), probs, plan, sample, comp.id_col, comp.label_col)
    cv_txt = f"_cv{cv:.5f}" if cv is not None else ""
    path = submission.write(sub, submission.unused_path(Path(cfg.submissions_dir), f"{'+'.join(names)}{cv_txt}"))
    log(f"submission: {path} ({len(sub)} rows, {mode} mode, validated against "
        f"{'sample_submission.csv' if sample is not None else 'the test images'})")
    return path, mode, len(sub)


def labelled_test(comp, classes, task: str = "single", sep: str = "") -> tuple[np.ndarray, np.ndarray] | None:
    """(row mask of labelled test images, their targets as metrics.score takes them: class indexes,
    multi-hot rows or numbers) when the competition ships test labels (solution.csv or labelled test
    data); checked before predicting: a label that is not a class (a tag that is not a label, a value
    that is not a number) is one clear error."""
    truth = _solution_labels(comp, comp.test, classes, sep or " ")
    if truth is None:
        return None
    ids = comp.test["id"].astype(str)
    keep = ids.isin(truth.index).to_numpy()
    labels = truth.loc[ids[keep]]
    cidx = {str(c): j for j, c in enumerate(classes)}
    if TASKS[task].label == "number":
        values = pd.to_numeric(labels, errors="coerce")
        bad = [(i, v) for i, v, x in zip(labels.index, labels, values) if not np.isfinite(x)]
    elif TASKS[task].label == "tags":
        bad = [(i, v) for i, v in labels.items() if any(t.strip() not in cidx for t in str(v).split(sep) if t.strip())]
    else:
        bad = [(i, v) for i, v in labels.items() if str(v) not in cidx]
    if bad:
        sol = Path(comp.root) / "solution.csv"
        what = {"number": "not numbers", "tags": f"tags that are not among the labels {classes}"}.get(
            TASKS[task].label, f"not among the classes {classes}")
        raise SubmissionError(f"{sol if sol.is_file() else 'the test labels'}: {len(bad)} label(s) are {what}, "
                              f"first: id {bad[0][0]} label {bad[0][1]!r}. Fix the file, or move it away to predict "
                              "without a test score")
    if TASKS[task].label == "number":
        return keep, values.to_numpy(dtype=np.float64)
    if TASKS[task].label == "tags":
        return keep, multi_hot(labels, sep, [str(c) for c in classes]).astype(np.float64)
    return keep, np.array([cidx[str(v)] for v in labels], dtype=int)


def score_test(truth, probs, probs_raw, metric: str, postprocessed: bool, log=print) -> dict:
    """Test score and accuracy on the labelled test images ({} without labels), and the score
    without post-processing when some was applied."""
    if truth is None:
        return {}
    keep, y = truth
    out = {"test_score": metrics.score(metric, y, probs[keep])}
    if y.ndim == 1 and y.dtype.kind == "i":      # single-label: accuracy beside the metric
        out["test_accuracy"] = float((probs[keep].argmax(1) == y).mean())
    acc = f" (accuracy {out['test_accuracy']:.4f})" if "test_accuracy" in out else ""
    log(f"test {metric}: {out['test_score']:.5f}{acc} on {int(keep.sum())} labelled test images")
    if postprocessed:
        out["test_score_before_postprocessing"] = metrics.score(metric, y, probs_raw[keep])
        log(f"test {metric} without post-processing: {out['test_score_before_postprocessing']:.5f}")
    return out


@dataclass
class Prediction:
    """What the reports of one prediction are written from (foldkit.report.predicted.write_reports, which
    predict.py hands to run_predict: predict/ writes no page): the competition and its training table (the
    galleries' images), the experiments, the plan and the figures it was fitted with, the notes on rare
    classes and the record of the test score and the submission (empty without test images)."""
    comp: Any
    table: pd.DataFrame
    exps: list
    plan: blend.Plan
    fitted: dict
    notes: dict
    record: dict = field(default_factory=dict)


def run_predict(cfg, log=print, reports: Callable | None = None) -> dict:
    """Experiments -> plan -> test predictions -> validated submission -> test score; then
    reports(prediction, cfg, log) writes the reports (None: none) and the upload line is printed."""
    t0 = time.time()
    done, members, sample, truth = open_prediction(cfg, log)
    plan, cv, metric = done.plan, done.fitted["cv"], done.fitted["metric"]
    out: dict = {"experiments": plan.experiments, "members": len(members), "metric": metric, "cv": cv,
                 "blend": blend.report_extra(done.fitted)}
    if not has_test(done.comp):
        log(f"no test images in {done.comp.root}: report only, no submission")
        if reports:
            reports(done, cfg, log)
        return out
    probs, probs_raw, dt = predict_test(cfg, done.comp, members, plan, log)
    path, mode, n_rows = write_submission(cfg, done.comp, probs, plan, sample, cv, log)
    out.update(submission=str(path), mode=mode, tta=plan.tta, test_rows=n_rows, predict_seconds=dt)
    scores = score_test(truth, probs, probs_raw, metric, bool(plan.steps), log)   # with the test labels, if any
    out.update(scores)
    done.record = {**scores, "submission": str(path)}
    if reports:
        reports(done, cfg, log)
    upload(cfg, path, "+".join(plan.experiments), metric, cv, log)
    out["seconds"] = time.time() - t0
    return out


def has_test(comp) -> bool:
    return comp.test is not None and len(comp.test) > 0


def open_prediction(cfg, log=print) -> tuple[Prediction, list, pd.DataFrame | None, tuple | None]:
    """The competition, the experiments' members and the plan fitted on their OOF (blend weights and
    post-processing, with nested CV). Returns (prediction, members, sample submission, test labels)."""
    table, meta = read_folds(cfg.folds_dir)
    reading = dataclasses.replace(cfg)     # predict.py's --label-sep joins the tags written (make_plan), it does
    reading.given = cfg.given - {"label_sep"}   # not re-read the training labels that make_folds read
    comp, _ = open_competition(reading, meta, check_test=True)
    exps, members = members_for(cfg, meta["classes"], stacks=True)
    log(f"ensemble: {len(members)} checkpoint(s) from {', '.join(e.name for e in exps)}")
    if meta["sha256_now"] not in {m.folds_sha256 for m in members}:
        log(f"note: these checkpoints were trained on other folds than {cfg.folds_dir} holds now; "
            "the CV report uses each experiment's own OOF files")
    sample = read_sample(comp)
    plan, fitted = make_plan(cfg, exps, members, sample, log, for_test=has_test(comp))
    truth = labelled_test(comp, members[0].classes, plan.task, exps[0].task()[1]) if has_test(comp) else None
    notes = rare_class_notes(meta)
    for line in notes.values():
        log(f"note: {line}")
    return Prediction(comp, table, exps, plan, fitted, notes), members, sample, truth


def upload(cfg, path: Path, tag: str, metric: str, cv: float | None, log=print) -> None:
    """The kaggle command that uploads the submission, and the upload itself with --submit."""
    msg = f"{tag} CV {metric} {cv:.5f}" if cv is not None else tag
    log("upload with: " + submission.upload_line(cfg.submit, path, msg))
    if cfg.submit:
        log(submission.kaggle_submit(cfg.submit, path, msg))


def predict_image(cfg, log=print) -> list[tuple]:
    """Top-k (class, probability) of one image, through the plan predict.py submits with (--blend,
    --calibrate, --thresholds, --ensemble, TTA) and the run settings (--batch-size, --amp, --device)."""
    exps, members = members_for(cfg)
    plan, _ = make_plan(cfg, exps, members, None, log=lambda *a: None, for_test=False)
    sources = {prep: [img] for prep, img in load_single_image(cfg.image, preparations(members)).items()}
    per_member = predict_members(cfg, members, sources, plan.tta, progress=False,
                                 workers=0)   # one decoded image: a loader process would only cost its start
    probs = plan.apply(per_member)[0]
    how = ([f"{plan.blend} blend"] if len(exps) > 1 else []) + [n for n, _ in plan.steps]
    log(f"{cfg.image}  ({len(members)} models of {', '.join(e.name for e in exps)})"
        + (f" with {', '.join(how)}" if how else ""))
    if TASKS[plan.task].label == "number":
        log(f"  predicted value: {probs[0]:.6g}")
        return [("value", float(probs[0]))]
    classes = plan.classes
    order = np.argsort(-probs, kind="stable")[: cfg.topk]
    top = [(classes[j], float(probs[j])) for j in order]
    if TASKS[plan.task].label == "tags":   # the tags the submission would write (>= 0.5 after the per-label thresholds)
        log(f"  tags: {join_tags(probs[None] >= 0.5, classes, plan.label_sep)[0] or '(none)'}")
    for c, p in top:
        log(f"  {str(c):>20s}  {p:.4f}")
    return top
