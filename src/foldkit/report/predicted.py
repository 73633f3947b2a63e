"""The reports of one prediction (predict.py, auto.py): each experiment's report.html and a blend's own page.

    write_reports(prediction, cfg, log)   handed to predicting.run_predict, which calls it once the test
                                          score and the submission are known: reports/<experiment>/ for
                                          each experiment (its OOF CV, tables, figures, galleries with
                                          Grad-CAM heatmaps); with several experiments the blend's own
                                          reports/<exp1+exp2>/ (cv_scores.json: plan, nested CV, test score)

The plan's figures are an experiment's own only when it is predicted alone; a blend's go to the blend's
page, so no figure of a member is shown as the blend's or the other way round.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from foldkit.data.images import decode_image, prepare_image, shrink, to_channels
from foldkit.io import atomic_write_text
from foldkit.predict.blend import report_extra
from foldkit.predict.predicting import Prediction
from foldkit.report.gradcam import heatmapper
from foldkit.report.html import write_blend_page, write_report
from foldkit.tasks import TASKS


class TrainImages:
    """The competition's training images by id, for the galleries: as stored (`load`) and as predict
    prepares them for a model (`prepare`, images.prepare_image: what Grad-CAM explains)."""

    def __init__(self, comp, table):
        self.comp, self.table = comp, table
        self.row = {str(i): k for k, i in enumerate(table["id"].astype(str))}

    def _pixels(self, k: int) -> np.ndarray:
        return self.comp.pixels("train")[int(self.table["index"].iloc[k])]

    def load(self, i) -> np.ndarray:
        k = self.row[str(i)]
        if self.comp.source_col == "index":
            return self._pixels(k)
        return decode_image(Path(self.comp.root) / self.table["path"].iloc[k])

    def prepare(self, i, grey: bool, side: int) -> np.ndarray:
        k = self.row[str(i)]
        if self.comp.source_col == "index":
            return shrink(to_channels(self._pixels(k), grey), side)
        return prepare_image(Path(self.comp.root) / self.table["path"].iloc[k], grey, side)


def write_reports(done: Prediction, cfg, log=print) -> None:
    """Each experiment's own report (--report; --no-report: none), then the blend's."""
    if not cfg.report:
        return
    images, tag = TrainImages(done.comp, done.table), "+".join(done.plan.experiments)
    own = len(done.exps) == 1
    recorded = {k: v for k, v in done.record.items() if k != "test_score"}
    member = {"member of": f"the blend {tag} (its CV, plan and submission: ../{tag}/report.html)"}
    for e in done.exps:
        extra = {**done.notes, **({**report_extra(done.fitted), **recorded} if own else member)}
        heatmap, note = heatmapper(e.dir, images.prepare) if TASKS[done.plan.task].is_classification else (None, None)
        write_report(e.dir, Path(cfg.reports_dir) / e.name, load_image=images.load, folds=e.finished_folds(),
                     extra=extra, test_score=done.record.get("test_score") if own else None,
                     heatmap=heatmap, heatmap_note=note, cut=done.plan.post if own else None)
        log(f"report: {Path(cfg.reports_dir) / e.name / 'report.html'}")
    if not own:
        write_blend_report(done, cfg.reports_dir, log)


def write_blend_report(done: Prediction, reports_dir: str | Path, log=print) -> Path:
    """reports/<exp1+exp2>/cv_scores.json and its report.html: the blend's own figures (its plan, nested CV,
    test score), never written into a member experiment's report."""
    plan, fitted, record = done.plan, done.fitted, done.record
    path = Path(reports_dir) / "+".join(plan.experiments) / "cv_scores.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"experiments": plan.experiments, "metric": fitted["metric"], "cv": fitted["cv"],
            **({"test_score": record["test_score"]} if "test_score" in record else {}), "plan": plan.to_json(),
            "extra": {**report_extra(fitted), **{k: v for k, v in record.items() if k != "test_score"}}}
    atomic_write_text(path, json.dumps(body, indent=1, default=float) + "\n")
    log(f"blend report: {write_blend_page(json.loads(path.read_text()), path.parent)}")
    return path
