"""The experiment folder `models/<experiment>/`: its file names and which folds are finished.

This is a file contract (docs/ARCHITECTURE.md) that users' notebooks read; every module that
reads or writes an experiment folder goes through this class instead of spelling file names.

    config.json           resolved settings + experiment, folds_sha256, classes, n_folds, layout
    fold{k}.pt            best checkpoint of fold k (self-describing, weights_only-loadable)
    fold{k}_last.pt       resume state, removed when the fold finishes
    fold{k}.json          written last: fold k is finished (best epoch, value, seconds, ...)
    oof_fold{k}.csv       out-of-fold probabilities of fold k's best epoch
    oof_tta_fold{k}.csv   the same rows predicted by fold{k}.pt with predict.py's TTA views (when it uses any):
                          what predict.py fits its post-processing on (foldkit.train.oof_tta)
    log_fold{k}.csv       one row per epoch;  curve_fold{k}.png  its plot
    fold{k}.lock          host + pid of the process training fold k (foldkit.train.foldlock), removed when it stops
    pseudo_fold{k}.csv    --pseudo: every pool image with the fold-k teacher's probabilities, joined 0/1
    trees_fold{k}.pkl     a stacked experiment (stack.py, config.json `stacked`): fold k's trees and feature
                          spec, in place of fold{k}.pt

The learning-rate range test (train.py --lr-find, foldkit.train.lrfind) records no experiment: it writes
`<models>/lr_find/<experiment>/lr_find.csv` and `lr_find.png`, <experiment> being the name the same
settings get when trained (`default_name`); that folder has no config.json, so no step lists it.

A fold counts as finished only when both fold{k}.json and fold{k}.pt exist. A fold killed
mid-run leaves an OOF file of its best epoch so far; CV, ensembles and reports use finished
folds only, so they always agree.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from foldkit.errors import FoldkitError
from foldkit.io import create_once

CONFIG = "config.json"
# the per-fold files, "{}" standing for the fold number: the one place these names are spelled
FOLD_FILES = {"checkpoint": "fold{}.pt", "last_checkpoint": "fold{}_last.pt", "summary": "fold{}.json",
              "oof": "oof_fold{}.csv", "oof_tta": "oof_tta_fold{}.csv", "log": "log_fold{}.csv",
              "curve": "curve_fold{}.png", "lock": "fold{}.lock", "pseudo": "pseudo_fold{}.csv",
              "trees": "trees_fold{}.pkl"}
# train.py --lr-find's results: <models>/<LR_FIND_DIR>/<experiment>/ (never an experiment folder itself)
LR_FIND_DIR = "lr_find"
LR_FIND_FILES = {"csv": "lr_find.csv", "plot": "lr_find.png"}
_FOLD_RE = {kind: re.compile("^" + re.escape(name).replace(r"\{\}", r"(\d+)") + "$")
            for kind, name in FOLD_FILES.items()}


def fold_file(kind: str):
    """An Experiment method: fold k's file of one kind (FOLD_FILES), so each name is spelled once."""
    def path(self, k: int) -> Path:
        return self.dir / FOLD_FILES[kind].format(k)
    path.__doc__ = f"fold k's {kind.replace('_', ' ')} file ({FOLD_FILES[kind].format('{k}')})"
    return path


class ExperimentError(FoldkitError, ValueError):
    """An experiment folder that is missing, unfinished or unreadable; the message says which."""


class Experiment:
    """One folder models/<name>/ (it may not exist yet)."""

    def __init__(self, path: str | Path):
        self.dir = Path(path)

    def __repr__(self) -> str:
        return f"Experiment({str(self.dir)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Experiment) and self.dir == other.dir

    def __hash__(self) -> int:
        return hash(self.dir)

    @property
    def name(self) -> str:
        return self.dir.name

    # ---- file names (the contract)
    @property
    def config_path(self) -> Path:
        return self.dir / CONFIG

    checkpoint = fold_file("checkpoint")
    last_checkpoint = fold_file("last_checkpoint")
    summary_path = fold_file("summary")
    oof = fold_file("oof")
    oof_tta = fold_file("oof_tta")
    log = fold_file("log")
    curve = fold_file("curve")
    lock = fold_file("lock")
    pseudo = fold_file("pseudo")
    trees = fold_file("trees")

    def fold_files(self, kind: str) -> dict[int, Path]:
        """The files of one kind present in the folder ("oof", "log", "curve", ... as in FOLD_FILES),
        by fold number, ascending (fold10 after fold2)."""
        if not self.dir.is_dir():
            return {}
        found = ((_FOLD_RE[kind].match(p.name), p) for p in self.dir.iterdir())
        return dict(sorted((int(m.group(1)), p) for m, p in found if m and p.is_file()))

    # ---- state
    def exists(self) -> bool:
        return self.config_path.is_file()

    def config(self) -> dict:
        """config.json as a dict ({} when the folder has none)."""
        if not self.config_path.is_file():
            return {}
        try:
            cfg = json.loads(self.config_path.read_text())
        except ValueError as e:
            raise ExperimentError(f"{self.config_path} is not valid JSON: {e}") from None
        if not isinstance(cfg, dict):
            raise ExperimentError(f"{self.config_path} must hold a JSON object, got {type(cfg).__name__}")
        return cfg

    def task(self) -> tuple[str, str]:
        """(task kind, tag separator) the experiment was trained for: config.json's `reading` (what
        make_folds detected); experiments from before task kinds are single-label."""
        reading = self.config().get("reading") or {}
        return reading.get("task", "single"), reading.get("label_sep", "") or ""

    def model_file(self, k: int) -> Path:
        """Fold k's model: its checkpoint, or a stacked experiment's trees (config.json `stacked`)."""
        return self.trees(k) if self.config().get("stacked") else self.checkpoint(k)

    def is_finished(self, k: int) -> bool:
        return self.summary_path(k).is_file() and self.model_file(k).is_file()

    def finished_folds(self) -> list[int]:
        """Fold numbers with both fold{k}.json and fold{k}.pt (a stacked experiment: its trees), ascending
        (fold10 after fold2)."""
        return [k for k in self.fold_files("summary") if self.model_file(k).is_file()]

    def summary(self, k: int) -> dict:
        return json.loads(self.summary_path(k).read_text())

    def last_finished_time(self) -> float:
        """mtime of the newest fold{k}.json (0 when none): 'the latest experiment'."""
        return max((self.summary_path(k).stat().st_mtime for k in self.finished_folds()), default=0.0)


def all_experiments(models_dir: str | Path) -> list[Experiment]:
    """Every experiment folder (with a config.json) under models_dir, by name."""
    return [Experiment(p.parent) for p in sorted(Path(models_dir).glob(f"*/{CONFIG}"))]


def find_experiments(models_dir: str | Path, names: list[str] | None = None) -> list[Experiment]:
    """The named experiments, or the latest one (most recently finished fold)."""
    models_dir = Path(models_dir)
    if names:
        out = []
        for n in names:
            e = Experiment(models_dir / n)
            if not e.exists():
                have = [x.name for x in all_experiments(models_dir)]
                raise ExperimentError(f"no experiment {n!r} in {models_dir} (have: {have or 'none'})")
            out.append(e)
        return out
    done = [(e.last_finished_time(), e.name, e) for e in all_experiments(models_dir) if e.finished_folds()]
    if not done:
        raise ExperimentError(f"no finished fold in {models_dir}: run `python src/train.py --fold 0` first")
    return [max(done)[2]]


def other_folds(recorded: dict, sha_now: str) -> str:
    """'' when an experiment's config.json names the folds file of hash sha_now, else the two hashes in
    words (the one check before an experiment's models are mixed with these folds)."""
    old = recorded.get("folds_sha256")
    return "" if old == sha_now else f"folds hash {str(old)[:12]}, this folds file {sha_now[:12]}"


def prepare_experiment(cfg, folds_meta: dict, settings: dict, reading: dict | None = None) -> Experiment:
    """Create models/<exp>/config.json, or check that an existing one has the same settings and folds.
    settings: the experiment's identity, `config.learning_settings(cfg)` (passed in: this module is
    below config, which reaches the report through the blend registry).
    An experiment name is never reused with other learning settings or other folds."""
    name = default_name(cfg, settings)
    exp = Experiment(Path(cfg.models_dir) / name)
    record = {**cfg.to_dict(), "experiment": name, "folds_sha256": folds_meta["sha256_now"],
              "classes": folds_meta["classes"], "n_folds": folds_meta.get("n_folds"),
              "layout": folds_meta.get("layout"), "reading": reading or {},
              "test_like_fold": bool(folds_meta.get("test_like"))}   # fold 0 = the test-like fold (make_folds)
    # written once: of several processes (machines) starting the experiment together one creates
    # config.json and the others compare with it, as a later run does
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    if exp.exists() or not create_once(exp.config_path, text.encode("utf-8")):
        old = exp.config()
        if other := other_folds(old, record["folds_sha256"]):
            raise ExperimentError(f"experiment {name!r} was trained on other folds ({other}). Its checkpoints "
                                  "and OOF predictions would not mix: use a new --experiment name.")
        diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if diff:
            desc = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(diff.items()))
            raise ExperimentError(f"experiment {name!r} exists with other settings ({desc}). "
                                  "Use another --experiment name, or the same settings to continue it.")
    return exp


def default_name(cfg, settings: dict) -> str:
    """The experiment name these settings get: --experiment, else derived from model, size and settings.
    `lr_find` is refused: it is the folder of the learning-rate range test's results."""
    name = cfg.experiment or experiment_name(cfg.model, cfg.img_size, settings)
    if name == LR_FIND_DIR:
        raise ExperimentError(f"--experiment {name}: that folder holds --lr-find's results; choose another name")
    return name


def lr_find_files(models_dir: str | Path, name: str) -> dict[str, Path]:
    """Where --lr-find writes for experiment `name`: {"csv": ..., "plot": ...} under
    <models_dir>/lr_find/<name>/ (beside the experiments, never inside one)."""
    folder = Path(models_dir) / LR_FIND_DIR / name
    return {kind: folder / file for kind, file in LR_FIND_FILES.items()}


def experiment_name(model: str, img_size: int, settings: dict) -> str:
    """<model>[-<size>px]-<hash of the learning settings>."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:6]
    return f"{model}{f'-{img_size}px' if img_size else ''}-{h}"
