"""predict.py's job: fold ensemble -> validated submission + CV report; or one image's top-k.

    run_predict(cfg)   experiments -> members -> test probabilities (each image decoded once)
                       -> submission (sample's shape, validated, never overwritten)
                       -> reports/<experiment>/ (OOF CV, confusion, worst errors, report.html)
    predict_image(cfg) top-k classes of one image from the fold ensemble
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from foldkit import engine, metrics, submission
from foldkit.submission import SubmissionError
from foldkit.experiment import Experiment, find_experiments
from foldkit.inference import EnsembleError, combine, load_members, load_single_image, predict_ensemble


def members_for(cfg, expected_classes=None):
    """The experiments of --experiments (default: the latest) and every finished fold's model."""
    names = [n.strip() for n in cfg.experiments.split(",") if n.strip()] or None
    exps = find_experiments(cfg.models_dir, names)
    return exps, load_members(exps, expected_classes)


def tta_views(cfg, members) -> list[str]:
    if cfg.tta == "auto":
        cfgs = [Experiment(m.path.parent).config() for m in members]
        flips = {bool(c.get("hflip", True)) and c.get("aug", "light") != "none" for c in cfgs}
        return ["none", "hflip"] if flips == {True} else ["none"]
    views = [v.strip() for v in cfg.tta.split(",") if v.strip() and v.strip() != "none"]
    bad = [v for v in views if v not in ("hflip", "vflip")]
    if bad:
        raise EnsembleError(f"unknown --tta view(s) {bad}: use none, hflip, vflip")
    return ["none"] + views


def preparations(members) -> list[tuple[bool, int]]:
    """The distinct (grey, side) image preparations of the ensemble's members (images.preparation):
    each member sees exactly what its training and OOF saw; each image is decoded once per entry."""
    from foldkit.images import preparation
    return sorted({preparation(m.in_chans, m.data_config) for m in members})


def sources_for(members, images: list) -> dict:
    """{(grey, side): images} for MultiViewDataset from images already in memory (HWC uint8, e.g.
    synthetic ones), given each preparation's channels and shrink."""
    from foldkit.images import shrink, to_channels
    return {(grey, side): [shrink(to_channels(im, grey), side) for im in images]
            for grey, side in preparations(members)}


def make_sources(comp, table, split, members) -> dict:
    """{(grey, side): ImageSource} of a table's images, one per distinct preparation of the members."""
    from foldkit.dataset import ImageSource
    return {(grey, side): ImageSource(comp, table, split, grey=grey, cache="off", max_side=side, progress=False)
            for grey, side in preparations(members)}


def _solution_labels(comp, test: pd.DataFrame) -> pd.Series | None:
    """Test labels when the competition has them: solution.csv (id,label) or labelled test data."""
    sol = Path(comp.root) / "solution.csv"
    if sol.is_file():
        from foldkit.data import read_text_csv
        s = read_text_csv(sol)
        return pd.Series(s[s.columns[1]].to_numpy(), index=s[s.columns[0]].astype(str))
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


def predict_test(cfg, comp, exps, members, plan, log=print):
    """Test probabilities: every member and TTA view on each test image decoded once, each
    experiment's folds averaged (--ensemble), then the plan fitted on OOF (--blend, post-processing).
    Returns (probs, probs without post-processing, views, seconds)."""
    if comp.test_problems:
        more = f"\n  ... and {len(comp.test_problems) - 10} more" if len(comp.test_problems) > 10 else ""
        raise SubmissionError(f"{len(comp.test_problems)} test image(s) of {comp.sample_submission or comp.root} "
                              "cannot be read, and a submission needs a prediction for every id:\n  "
                              + "\n  ".join(comp.test_problems[:10]) + more + "\nFix or restore those files.")
    from foldkit.dataset import auto_workers
    device = engine.pick_device(cfg.device)
    views = tta_views(cfg, members)
    t1 = time.time()
    _, per_member = predict_ensemble(
        members, make_sources(comp, comp.test, "test", members), tta=views, device=device,
        dtype=engine.amp_dtype(device, cfg.amp), batch_size=cfg.batch_size, progress=cfg.progress,
        channels_last=cfg.channels_last == "on" or (cfg.channels_last == "auto" and device.type == "cuda"),
        workers=auto_workers(cfg.workers, cached=comp.source_col == "index"), how=cfg.ensemble, return_members=True)
    per_exp = np.stack([combine([p for m, p in zip(members, per_member) if m.path.parent == e.dir], cfg.ensemble)
                        for e in exps])
    probs, probs_raw = plan.apply(per_exp), plan.apply(per_exp, raw=True)
    dt = time.time() - t1
    log(f"predicted {len(probs)} test images with {len(members)} models x {len(views)} views in {dt:.1f}s "
        f"({len(probs) / max(dt, 1e-9):.0f} img/s)")
    return probs, probs_raw, views, dt


def write_submission(cfg, comp, probs, classes, names, cv, log=print):
    """The submission in the sample's shape, validated, under a name never used before. Returns
    (path, mode, rows)."""
    from foldkit.data import read_text_csv
    sample = read_text_csv(comp.sample_submission) if comp.sample_submission else None
    mode = submission.choose_mode(sample, classes, cfg.submission_mode) if sample is not None else "label"
    sub = submission.build(comp.test["id"].astype(str).tolist(), probs, classes, sample, mode,
                           id_col=comp.id_col, label_col=comp.label_col)
    submission.validate(sub, sample, classes, mode)
    cv_txt = f"_cv{cv:.5f}" if cv is not None else ""
    path = submission.write(sub, submission.unused_path(Path(cfg.submissions_dir), f"{'+'.join(names)}{cv_txt}"))
    log(f"submission: {path} ({len(sub)} rows, {mode} mode, validated against "
        f"{'sample_submission.csv' if sample is not None else 'the test images'})")
    return path, mode, len(sub)


def score_test(comp, probs, probs_raw, classes, metric: str, postprocessed: bool, log=print) -> dict:
    """Test score and accuracy when the competition ships test labels ({} otherwise), and the score
    without post-processing when some was applied."""
    truth = _solution_labels(comp, comp.test)
    if truth is None:
        return {}
    ids = comp.test["id"].astype(str)
    cidx = {str(c): j for j, c in enumerate(classes)}
    keep = ids.isin(truth.index).to_numpy()
    y = np.array([cidx[str(v)] for v in truth.loc[ids[keep]]])
    out = {"test_score": metrics.score(metric, y, probs[keep]),
           "test_accuracy": float((probs[keep].argmax(1) == y).mean())}
    log(f"test {metric}: {out['test_score']:.5f} (accuracy {out['test_accuracy']:.4f}) on {int(keep.sum())} "
        "labelled test images")
    if postprocessed:
        out["test_score_before_postprocessing"] = metrics.score(metric, y, probs_raw[keep])
        log(f"test {metric} without post-processing: {out['test_score_before_postprocessing']:.5f}")
    return out


def run_predict(cfg, log=print) -> dict:
    from foldkit.data import decode_image
    from foldkit.folds import open_competition, read_folds
    from foldkit.report import write_report

    t0 = time.time()
    table, meta = read_folds(cfg.folds_dir)
    comp, _ = open_competition(cfg, meta, check_test=True)
    exps, members = members_for(cfg, meta["classes"])
    classes = members[0].classes
    shas = {m.folds_sha256 for m in members}
    names = [e.name for e in exps]
    log(f"ensemble: {len(members)} checkpoint(s) from {', '.join(names)}")
    if meta["sha256_now"] not in shas:
        log(f"note: these checkpoints were trained on other folds than {cfg.folds_dir} holds now; "
            "the CV report uses each experiment's own OOF files")

    # ---- reports (OOF of each experiment; the ensemble's OOF when they share folds)
    out: dict = {"experiments": names, "members": len(members)}
    id_to_row = {str(i): k for k, i in enumerate(table["id"].astype(str))}

    def load_train_image(i):
        k = id_to_row[str(i)]
        if comp.source_col == "index":
            return comp.pixels("train")[int(table["index"].iloc[k])]
        return decode_image(Path(comp.root) / table["path"].iloc[k])

    # ---- blend weights + post-processing fitted on the experiments' OOF, with nested CV (foldkit.blend)
    from foldkit import blend
    fitted = blend.from_experiments(exps, classes, cfg.blend, cfg.calibrate, cfg.thresholds, log)
    cv, metric, plan, blend_extra = fitted["cv"], fitted["metric"], fitted["plan"], blend.report_extra(fitted)

    notes = rare_class_notes(meta)
    for line in notes.values():
        log(f"note: {line}")

    def write_reports(extra=None, **kw):
        if cfg.report:
            for e in exps:
                write_report(e.dir, Path(cfg.reports_dir) / e.name, load_image=load_train_image,
                             folds=e.finished_folds(), extra={**notes, **(extra or {})}, **kw)
                log(f"report: {Path(cfg.reports_dir) / e.name / 'report.html'}")
    out.update(metric=metric, cv=cv, blend=blend_extra)

    # ---- test predictions
    if comp.test is None or len(comp.test) == 0:
        log(f"no test images in {comp.root}: report only, no submission")
        write_reports(extra=blend_extra)
        return out
    probs, probs_raw, views, dt = predict_test(cfg, comp, exps, members, plan, log)
    path, mode, n_rows = write_submission(cfg, comp, probs, classes, names, cv, log)
    out.update(submission=str(path), mode=mode, tta=views, test_rows=n_rows, predict_seconds=dt)

    # ---- the test score, when the competition ships its labels (the demo's solution.csv)
    scores = score_test(comp, probs, probs_raw, classes, metric, bool(plan.steps), log)
    out.update(scores)
    if "test_score_before_postprocessing" in scores:
        blend_extra["test_score_before_postprocessing"] = scores["test_score_before_postprocessing"]
    if scores:
        write_reports(test_score=scores["test_score"], extra={"test_accuracy": scores["test_accuracy"],
                                                              "submission": str(path), **blend_extra})
    else:
        write_reports(extra={"submission": str(path), **blend_extra})
    tag = "+".join(names)
    msg = f"{tag} CV {metric} {cv:.5f}" if cv is not None else tag
    cmd = submission.kaggle_command(cfg.submit, path, msg)
    log("upload with: " + " ".join(f'"{c}"' if " " in c else c for c in cmd))
    if cfg.submit:
        log(submission.kaggle_submit(cfg.submit, path, msg))
    out["seconds"] = time.time() - t0
    return out


def predict_image(cfg, log=print) -> list[tuple]:
    """Top-k (class, probability) of one image from the fold ensemble."""
    exps, members = members_for(cfg)
    sources = {prep: [img] for prep, img in load_single_image(cfg.image, preparations(members)).items()}
    probs = predict_ensemble(members, sources, tta=tta_views(cfg, members), device=engine.pick_device(cfg.device),
                             how=cfg.ensemble, progress=False, workers=0)[0]
    classes = members[0].classes
    order = np.argsort(-probs)[: cfg.topk]
    top = [(classes[j], float(probs[j])) for j in order]
    log(f"{cfg.image}  ({len(members)} models of {', '.join(e.name for e in exps)})")
    for c, p in top:
        log(f"  {str(c):>20s}  {p:.4f}")
    return top
