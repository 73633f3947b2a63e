"""`--log tensorboard|mlflow`: the experiment trackers people already use, fed by training.

The leaderboard (foldkit.search.leaderboard) stays the kit's own view; a tracker is for people who already
live in TensorBoard or MLflow. One run per experiment, named after it:

- every epoch of every fold (`on_epoch(fold, row)`, called by fit.fit_fold's loop; epochs not seen
  live, such as folds trained by fold-parallel workers, resumed or already finished ones, are read back
  from their log_fold{k}.csv at the end, so the tracker holds every epoch of every finished fold),
  as `fold{k}/<column>` with the epoch as the step;
- the resolved settings (config.json), the final CV (`cv/<metric>`, mean and std across folds);
- the report (reports/<experiment>/, written at the end of training) as artifacts (MLflow) or as the
  report's path and figures (TensorBoard, which has no artifact store).

Where: --tracking-uri, else beside the models folder (nothing to start): TensorBoard event files in
`<models-dir>/../runs/tensorboard/<experiment>/`, MLflow a local SQLite store `<models-dir>/../runs/
mlflow.db` with artifacts in `runs/mlflow-artifacts/` (MLflow's plain file store is in maintenance
mode and refuses to open without an opt-out). A tracking server URL works the same for a team.
Optional packages (extra `trackers`): tensorboard; mlflow-skinny with sqlalchemy and alembic.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import pandas as pd

from foldkit.errors import FoldkitError
from foldkit.experiment import Experiment

TRACKERS = ["", "tensorboard", "mlflow"]
INSTALL = "pip install 'foldkit[trackers]'"
MLFLOW_EXPERIMENT = "foldkit"


class TrackerError(FoldkitError, RuntimeError):
    """A tracker that cannot be started (its package missing, its store unreachable)."""


def default_dir(models_dir: str | Path) -> Path:
    return Path(models_dir).resolve().parent / "runs"


class Tracker:
    """What both trackers share: each (fold, epoch) logged once, the end of the run."""

    def __init__(self):
        self.seen: set[tuple[int, int]] = set()

    def on_epoch(self, fold: int, row: dict) -> None:
        key = (int(fold), int(row["epoch"]))
        if key in self.seen:
            return
        self.seen.add(key)
        values = {k: float(v) for k, v in row.items()
                  if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(float(v))}
        self._epoch(int(fold), int(row["epoch"]), values)

    def finish(self, exp: Experiment, report: Callable[[Experiment, list[int]], dict] | None = None) -> dict:
        """Backfill the epochs not seen live, write the report with report(exp, finished folds) (the
        caller's writer, foldkit.report.html.report_writer: train/ draws no page; None: settings only), log
        settings, CV and report; close."""
        folds = exp.finished_folds()
        for k, path in exp.fold_files("log").items():
            if k in folds:
                for row in pd.read_csv(path).to_dict("records"):
                    self.on_epoch(k, row)
        summary = report(exp, folds) if folds and report else None
        self._finish(exp.config(), summary)
        return summary or {}

    def _epoch(self, fold: int, epoch: int, values: dict) -> None:
        raise NotImplementedError

    def _finish(self, settings: dict, summary: dict | None) -> None:
        raise NotImplementedError


def _cv_metrics(summary: dict | None) -> dict:
    if not summary:
        return {}
    m = summary["metric"]
    return {k: v for k, v in {f"cv/{m}": summary["cv"], f"cv/{m}_mean": summary["cv_mean"],
                              f"cv/{m}_std": summary["cv_std"]}.items() if v is not None}


class TensorBoard(Tracker):
    def __init__(self, where: Path, name: str):
        super().__init__()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TrackerError(f"--log tensorboard needs the tensorboard package: {INSTALL}") from None
        self.dir = where / name
        self.writer = SummaryWriter(log_dir=str(self.dir))

    def _epoch(self, fold, epoch, values):
        for k, v in values.items():
            self.writer.add_scalar(f"fold{fold}/{k}", v, epoch)

    def _finish(self, settings, summary):
        rows = "\n".join(f"| {k} | {json.dumps(v)} |" for k, v in settings.items())
        self.writer.add_text("settings", "| setting | value |\n|---|---|\n" + rows)
        for k, v in _cv_metrics(summary).items():
            self.writer.add_scalar(k, v, 0)
        if summary:
            paths = summary["paths"]
            self.writer.add_text("report", f"report: {paths['report.html']}")
            for name in ("fold_scores.png", "curves.png", "confusion.png"):
                if name in paths:
                    import cv2
                    img = cv2.imread(paths[name], cv2.IMREAD_COLOR)[:, :, ::-1]
                    self.writer.add_image(f"report/{name[:-4]}", img.copy(), 0, dataformats="HWC")
        self.writer.close()


class MLflow(Tracker):
    def __init__(self, uri: str, local: Path, name: str):
        super().__init__()
        try:
            import mlflow
            if not uri:   # the SQLite store needs sqlalchemy + alembic: checked here, not at the first epoch
                import alembic  # noqa: F401  # lazy: mlflow's optional SQLite store
                import sqlalchemy  # noqa: F401
        except ImportError as e:
            raise TrackerError(f"--log mlflow needs the mlflow package ({e.name} is missing): {INSTALL}") from None
        artifacts = None
        if not uri:
            local.mkdir(parents=True, exist_ok=True)
            uri, artifacts = f"sqlite:///{local / 'mlflow.db'}", (local / "mlflow-artifacts").as_uri()
        self.uri = uri
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(MLFLOW_EXPERIMENT)
        exp_id = found.experiment_id if found else self.client.create_experiment(MLFLOW_EXPERIMENT, artifacts)
        self.run_id = self.client.create_run(exp_id, run_name=name).info.run_id

    def _epoch(self, fold, epoch, values):
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(f"fold{fold}/{k}", v, now, epoch) for k, v in values.items()])

    def _finish(self, settings, summary):
        from mlflow.entities import Metric, Param
        params = [Param(k, (v if isinstance(v, str) else json.dumps(v))[:6000]) for k, v in settings.items()]
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, params=params,
                              metrics=[Metric(k, v, now, 0) for k, v in _cv_metrics(summary).items()])
        if summary:
            self.client.log_artifacts(self.run_id, str(Path(summary["paths"]["report.html"]).parent), "report")
        self.client.set_terminated(self.run_id)


def open_tracker(cfg, name: str) -> Tracker | None:
    """The tracker --log asks for (None without --log), started before any fold trains."""
    if not cfg.log:
        return None
    local = default_dir(cfg.models_dir)
    if cfg.log == "tensorboard":
        return TensorBoard(Path(cfg.tracking_uri) if cfg.tracking_uri else local / "tensorboard", name)
    return MLflow(cfg.tracking_uri, local, name)
