"""What a student experiment learns from earlier experiments, fold by fold, under one fold-safety rule.

    --soft-labels EXP   training targets = (1 - alpha) x label + alpha x EXP's probabilities: those of EXP's
                        fold-k model (--soft-labels-source fold, the rule) or each row's OOF (oof)
    --pseudo EXP        the test images (and --unlabelled ones) join fold k's training part, labelled by
                        EXP's fold-k model, kept when confident (pseudo_fold{k}.csv lists them)
    --teacher EXP,...   knowledge distillation: on every training batch fold k's student also matches the
                        softened probabilities of each EXP's fold-k model (Hinton et al. 2015)

THE RULE (`safe_teacher_folds`, the one place it is decided): the model trained for fold k learns only from
teacher models that never trained on fold k's validation rows. A teacher experiment must share the
student's folds file (same hash): then its fold-k model trained on exactly the rows with fold != k, and it
is the only one of its models that may label anything fold k's student trains on. The naive construction
(the teacher's whole fold ensemble, as predict.py would use it) includes models that trained on fold k's
validation rows; its pseudo-labels carry their labels into fold k's CV (tests/test_teacher.py trains a
memorising teacher and shows both figures).
Soft labels by default ask the rule too: fold k's training rows are labelled by the teacher's fold-k model.
Their OOF probabilities (--soft-labels-source oof) come from the teacher model of each row's own fold, which
trained on fold k's validation rows; a student imitating those models learns what they memorised of fold
k. With random labels, where an honest CV is chance, that alone lifts the CV far above it
(benchmarks/bench_soft_leak.py); docs/improving.md gives the measured figures.

Single-label competitions only in this version (one clear line for the others). Teachers and students
are ordinary experiments: predict.py, the leaderboard and the bundle treat a student like any other.
The teacher signal of a fold is recorded (`FoldTeaching.record`: experiments, folds, file hashes, how many
pseudo-labels joined) in the checkpoint, fold{k}.json and the resume state: a fold resumed after its teacher
changed is refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from foldkit.config import flag_name, with_settings
from foldkit.data.dataset import ImageSource
from foldkit.data.images import cache_side
from foldkit.data.files import IMAGE_EXTS
from foldkit.data.store import cache_root
from foldkit.errors import FoldkitError
from foldkit.experiment import Experiment, find_experiments, other_folds
from foldkit.io import atomic_write_with, sha256_file
from foldkit.oof import load_oof
from foldkit.predict.inference import Member
from foldkit.predict.predicting import make_sources, predict_members, tta_views
from foldkit.runtime import distributed
from foldkit.runtime.model import load_checkpoint, model_from_checkpoint
from foldkit.tasks import TASKS

OPTIONS = {"soft_labels": "--soft-labels", "pseudo": "--pseudo", "teacher": "--teacher"}
# settings that only mean something with their option (a flag accepted and ignored is refused)
DEPENDENT = {"soft_alpha": "soft_labels", "soft_labels_source": "soft_labels", "pseudo_min_confidence": "pseudo",
             "pseudo_top_margin": "pseudo", "pseudo_weight": "pseudo", "pseudo_soft": "pseudo", "unlabelled": "pseudo",
             "kd_alpha": "teacher", "kd_temperature": "teacher"}


class TeacherError(FoldkitError, ValueError):
    """A teacher experiment or setting a student cannot learn from; the message says which and why."""


def names(cfg, option: str) -> list[str]:
    """The experiment names of one option (--teacher takes several, comma-separated)."""
    return [n.strip() for n in str(getattr(cfg, option) or "").split(",") if n.strip()]


def in_use(cfg) -> bool:
    return any(names(cfg, o) for o in OPTIONS)


# --------------------------------------------------------------------------- THE RULE

def safe_teacher_folds(fold: int) -> list[int]:
    """The folds whose models (of a teacher trained on the same folds file) may teach fold k's student:
    those that never trained on fold k's validation rows, i.e. fold k's own model. Pseudo-labels and
    distillation ask only this function; tests/test_teacher.py replaces it by the whole ensemble (the
    naive construction) and measures the inflated CV that gives."""
    return [fold]


# --------------------------------------------------------------------------- checks before anything is recorded

def check_teaching(cfg, task: str):
    """cfg, checked (and --pseudo-top-margin given alone turning the confidence filter off): one line for a
    teacher option on a task kind it does not handle yet, a dependent setting without its option, a value
    out of range, or an --unlabelled folder without images."""
    given = cfg.given
    for setting, option in DEPENDENT.items():
        if setting in given and not names(cfg, option) and getattr(cfg, setting) not in ("", False):
            raise TeacherError(f"{flag_name(setting)} is a setting of {OPTIONS[option]} EXP, which was not given")
    if not in_use(cfg):
        return cfg
    used = ", ".join(OPTIONS[o] for o in OPTIONS if names(cfg, o))
    if not TASKS[task].exclusive:
        raise TeacherError(f"{used}: single-label competitions only in this version; this one is {task}")
    for setting in ("soft_alpha", "kd_alpha", "pseudo_min_confidence", "pseudo_top_margin"):
        if getattr(cfg, setting) > 1:
            raise TeacherError(f"{flag_name(setting)} {getattr(cfg, setting)}: give a value from 0 to 1")
    if names(cfg, "teacher") and cfg.kd_temperature <= 0:
        raise TeacherError(f"--kd-temperature {cfg.kd_temperature}: give a temperature above 0 (2 is usual)")
    if cfg.balance == "weights" and (names(cfg, "soft_labels") or names(cfg, "pseudo")):
        raise TeacherError("--balance weights does not combine with --soft-labels/--pseudo (soft targets carry no "
                           "class weights): use --balance sampler")
    if cfg.unlabelled and not len(unlabelled_table(cfg.unlabelled)):
        raise TeacherError(f"--unlabelled {cfg.unlabelled}: no image files in it")
    if "pseudo_top_margin" in given and "pseudo_min_confidence" not in given:
        cfg = with_settings(cfg, pseudo_min_confidence=0.0)     # the margin alone decides, as asked
    return cfg


def check_experiments(cfg, meta: dict) -> None:
    """Every teacher experiment exists, shares the student's folds file (folds hash), classes and task kind,
    and is not the student itself; one TeacherError line otherwise. Called before the student's experiment
    is recorded."""
    for option in OPTIONS:
        for name in names(cfg, option):
            if cfg.experiment and name == cfg.experiment:
                raise TeacherError(f"{OPTIONS[option]} {name}: an experiment cannot teach itself; give the student "
                                   "another --experiment name")
            exp = find_experiments(cfg.models_dir, [name])[0]
            tcfg = exp.config()
            if other := other_folds(tcfg, meta["sha256_now"]):
                raise TeacherError(
                    f"{OPTIONS[option]} {name} was trained on other folds ({other}): its models have seen the student's "
                    "validation rows. Retrain the teacher on these folds (train.py --fold all --experiment ...)")
            if [str(c) for c in tcfg.get("classes", [])] != [str(c) for c in meta["classes"]]:
                raise TeacherError(f"{OPTIONS[option]} {name} predicts classes {tcfg.get('classes')}, this competition "
                                   f"has {meta['classes']}: a teacher must have the student's classes")
            if not TASKS[exp.task()[0]].exclusive:
                raise TeacherError(f"{OPTIONS[option]} {name} is a {exp.task()[0]} experiment: teachers are "
                                   "single-label in this version")


def _fold_checkpoint(exp: Experiment, fold: int, option: str) -> Path:
    if not exp.is_finished(fold):
        raise TeacherError(f"{OPTIONS[option]} {exp.name}: fold {fold} is not finished, and only its fold-{fold} "
                           f"model may teach fold {fold} (fold-safe): train it first (train.py --experiment "
                           f"{exp.name} --fold {fold})")
    return exp.checkpoint(fold)


# --------------------------------------------------------------------------- one fold's teaching

@dataclass
class FoldTeaching:
    """Everything fold k's student learns from teachers. targets: (rows of the folds table, classes) float32
    training targets (label smoothing included; a pseudo-labelled image's row scaled by --pseudo-weight) when
    soft labels or pseudo-labels are on, else None; extra: [(ImageSource, targets)] of pseudo-labelled images;
    distiller: the --teacher models (Distiller) or None; record: what the checkpoint and fold{k}.json keep."""
    targets: np.ndarray | None = None
    extra: list = field(default_factory=list)
    distiller: object = None
    record: dict = field(default_factory=dict)

    def hard_labels(self, base: np.ndarray) -> np.ndarray:
        """Class indexes of the extra images (their targets' top class), after `base` (balanced sampling)."""
        return np.concatenate([base, *[t.argmax(1) for _, t in self.extra]]).astype(np.int64)


def for_fold(cfg, run, fold: int, log=print, reuse: bool = False) -> FoldTeaching | None:
    """The teaching of fold k (None without teacher options). reuse: a resumed fold reads its
    pseudo_fold{k}.csv back instead of predicting again (the same images and targets, exactly)."""
    if not in_use(cfg):
        return None
    teaching = FoldTeaching()
    n_classes = len(run.classes)
    eps = cfg.label_smoothing
    if names(cfg, "soft_labels") or names(cfg, "pseudo"):
        teaching.targets = (np.eye(n_classes, dtype=np.float32)[run.y] * (1 - eps) + eps / n_classes).astype(np.float32)
    if names(cfg, "soft_labels"):
        soften(cfg, run, fold, teaching, log)
    if names(cfg, "pseudo"):
        pseudo_labels(cfg, run, fold, teaching, log, reuse)
    if names(cfg, "teacher"):
        paths = [_fold_checkpoint(Experiment(Path(cfg.models_dir) / n), k, "teacher")
                 for n in names(cfg, "teacher") for k in safe_teacher_folds(fold)]
        teaching.distiller = Distiller(paths, run.data_cfg, cfg.kd_alpha, cfg.kd_temperature)
        teaching.record["teacher"] = {"experiments": names(cfg, "teacher"), "alpha": cfg.kd_alpha,
                                      "temperature": cfg.kd_temperature, "mode": "online (every training batch)",
                                      "models": [{"experiment": p.parent.name, "file": p.name,
                                                  "sha256": sha256_file(p)} for p in paths]}
        log(f"fold {fold}: distilling from {', '.join(f'{p.parent.name}/{p.name}' for p in paths)} on every "
            f"training batch (alpha {cfg.kd_alpha:g}, temperature {cfg.kd_temperature:g})")
    return teaching


def soften(cfg, run, fold: int, teaching: FoldTeaching, log=print) -> None:
    """--soft-labels: fold k's training rows' targets mixed with the teacher's probabilities of them; fold k's
    own rows keep their labels (they are validated, never trained on). The probabilities come from
    --soft-labels-source: `fold` (the rule: the teacher's fold-k model), or `oof` (each row's OOF, from the
    teacher model of the row's own fold, which trained on fold k's rows; rows in no fold, -1, have none and
    keep their labels)."""
    name, alpha = names(cfg, "soft_labels")[0], cfg.soft_alpha
    exp = Experiment(Path(cfg.models_dir) / name)
    folds = run.table["fold"].to_numpy()
    if cfg.soft_labels_source == "oof":
        rows = np.flatnonzero((folds >= 0) & (folds != fold))
        probs, record, whose = _oof_probs(exp, run, fold, rows)
    else:
        rows = np.flatnonzero(folds != fold)
        probs, record, whose = _fold_model_probs(cfg, exp, run, fold, rows)
    teaching.targets[rows] = (1 - alpha) * teaching.targets[rows] + alpha * probs
    agree = float((probs.argmax(1) == run.y[rows]).mean())
    if cfg.soft_labels_source == "oof":        # read from files: the same figure wherever the fold resumes
        record["oof_agrees_with_label"] = round(agree, 4)
    teaching.record["soft_labels"] = {"experiment": name, "alpha": alpha, "rows": int(len(rows)),
                                      "source": cfg.soft_labels_source, **record}
    log(f"fold {fold}: soft labels for {len(rows)} training rows = {1 - alpha:g} x label + {alpha:g} x {name}'s "
        f"{whose} (its top class agrees with the label on {agree:.1%})")


def _fold_model_probs(cfg, exp: Experiment, run, fold: int, rows: np.ndarray) -> tuple[np.ndarray, dict, str]:
    """The rows' probabilities from the teacher models the rule allows for fold k (its fold-k model, which
    trained on them and never on fold k's validation rows), one view each."""
    checkpoints = [_fold_checkpoint(exp, k, "soft_labels") for k in safe_teacher_folds(fold)]
    members = [Member(p, load_checkpoint(p)) for p in checkpoints]
    probs = np.mean(predict_members(cfg, members, make_sources(run.comp, run.table, "train", members, cfg),
                                    ["none"], progress=False), axis=0)[rows].astype(np.float32)
    record = {"models": [p.name for p in checkpoints], "sha256": [sha256_file(p) for p in checkpoints]}
    models = "+".join(p.name for p in checkpoints)
    return probs, record, f"{models} probabilities (fold-safe: it never saw fold {fold}'s validation rows)"


def _oof_probs(exp: Experiment, run, fold: int, rows: np.ndarray) -> tuple[np.ndarray, dict, str]:
    """The rows' OOF probabilities (--soft-labels-source oof)."""
    folds = run.table["fold"].to_numpy()
    needed = sorted({int(f) for f in folds if f >= 0 and f != fold})
    for j in needed:
        _fold_checkpoint(exp, j, "soft_labels")
    oof, classes = load_oof(exp.dir, needed)
    probs = oof[[f"prob_{c}" for c in classes]].to_numpy(dtype=np.float32)
    where = pd.Series(np.arange(len(oof)), index=oof["id"].astype(str).to_numpy())
    ids = run.table["id"].astype(str).to_numpy()
    missing = [i for i in ids[rows] if i not in where.index]
    if missing:
        raise TeacherError(f"--soft-labels {exp.name}: no OOF prediction for {len(missing)} training row(s) (first "
                           f"id {missing[0]}): the teacher's OOF files do not cover the folds file")
    at = where.loc[ids[rows]].to_numpy()
    if (oof["fold"].to_numpy()[at] != folds[rows]).any():
        raise TeacherError(f"--soft-labels {exp.name}: its OOF rows sit in other folds than the folds file says")
    return (probs[at], {"oof_sha256": {str(j): sha256_file(exp.oof(j)) for j in needed}},
            f"OOF probabilities (made by models that trained on fold {fold}'s validation rows)")


def unlabelled_table(folder: str) -> pd.DataFrame:
    """id (path relative to the folder) and absolute path of every image file under it, sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise TeacherError(f"--unlabelled {folder}: not a folder")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    return pd.DataFrame({"id": [p.relative_to(root).as_posix() for p in paths],
                         "path": [str(p.resolve()) for p in paths]})


def pool(cfg, comp) -> list[tuple[str, pd.DataFrame]]:
    """The images --pseudo labels: ("test", the competition's test table) and ("unlabelled", --unlabelled's)."""
    parts = []
    if comp.test is not None and len(comp.test):
        parts.append(("test", comp.test.reset_index(drop=True)))
    if cfg.unlabelled:
        parts.append(("unlabelled", unlabelled_table(cfg.unlabelled)))
    if not parts:
        raise TeacherError(f"--pseudo: {comp.root} has no test images and no --unlabelled folder was given: "
                           "nothing to pseudo-label")
    return parts


def predict_pool(cfg, comp, checkpoints: list[Path], classes: list) -> pd.DataFrame:
    """One row per pool image: part, id, source (path or array index), and prob_<class>: the mean of the teacher
    models in `checkpoints` (each with its TTA views, as predict.py would use it)."""
    members = [Member(p, load_checkpoint(p)) for p in checkpoints]
    frames = []
    for part, table in pool(cfg, comp):
        split = "test" if part == "test" else "unlabelled"
        probs = np.mean(predict_members(cfg, members, make_sources(comp, table, "test", members),
                                        tta_views(cfg, members), progress=False), axis=0)
        src = table["index"] if "index" in table.columns and part == "test" else table["path"]
        frames.append(pd.DataFrame({"part": split, "id": table["id"].astype(str).to_numpy(),
                                    "source": src.astype(str).to_numpy(),
                                    **{f"prob_{c}": probs[:, j] for j, c in enumerate(classes)}}))
    return pd.concat(frames, ignore_index=True)


def select(cfg, probs: np.ndarray) -> np.ndarray:
    """Rows kept as pseudo-labels: top probability >= --pseudo-min-confidence and top-1 minus top-2 >=
    --pseudo-top-margin."""
    top2 = np.sort(probs, axis=1)[:, -2:] if probs.shape[1] > 1 else np.c_[np.zeros(len(probs)), probs]
    return (top2[:, 1] >= cfg.pseudo_min_confidence) & (top2[:, 1] - top2[:, 0] >= cfg.pseudo_top_margin)


def pseudo_labels(cfg, run, fold: int, teaching: FoldTeaching, log=print, reuse: bool = False) -> None:
    """--pseudo: the pool images labelled by the teacher's fold-k model (the rule), filtered, written to
    pseudo_fold{k}.csv (every pool image, `joined` 0/1) and read back from it (under torchrun rank 0 predicts,
    every rank reads the same file; a resumed fold reads it again), then appended to the training part."""
    name = names(cfg, "pseudo")[0]
    checkpoints = [_fold_checkpoint(Experiment(Path(cfg.models_dir) / name), k, "pseudo")
                   for k in safe_teacher_folds(fold)]
    path = run.exp.pseudo(fold)
    cols = [f"prob_{c}" for c in run.classes]
    if distributed.is_main() and not (reuse and path.is_file()):
        table = predict_pool(cfg, run.comp, checkpoints, run.classes)
        probs = table[cols].to_numpy()
        table.insert(3, "pred", [run.classes[i] for i in probs.argmax(1)])
        table.insert(4, "joined", select(cfg, probs).astype(int))
        atomic_write_with(path, lambda tmp: table.to_csv(tmp, index=False, float_format="%.6g"))
    distributed.barrier()
    table = pd.read_csv(path, dtype={"id": str, "source": str, "pred": str}, keep_default_na=False)
    kept = table[table["joined"] == 1].reset_index(drop=True)
    probs = kept[cols].to_numpy(dtype=np.float32)
    n_classes, eps = len(run.classes), cfg.label_smoothing
    hard = np.eye(n_classes, dtype=np.float32)[probs.argmax(1)] * (1 - eps) + eps / n_classes
    targets = (probs if cfg.pseudo_soft else hard) * np.float32(cfg.pseudo_weight)
    grey = run.data_cfg["input_size"][0] == 1
    for part in ("test", "unlabelled"):
        rows = (kept["part"] == part).to_numpy()
        if rows.any():
            sub = kept[rows]
            src = (pd.DataFrame({"id": sub["id"], "index": sub["source"].astype(int)}) if part == "test"
                   and "index" in run.comp.test.columns else pd.DataFrame({"id": sub["id"], "path": sub["source"]}))
            # the unlabelled folder's images in a store of their own: the test images' store stays the test set's
            split = "test" if part == "test" else "unlabelled"
            teaching.extra.append((ImageSource(run.comp, src.reset_index(drop=True), split, grey=grey,
                                               cache=cfg.cache, max_side=cache_side(run.data_cfg), progress=False,
                                               cache_dir=cache_root(cfg)),
                                   targets[rows]))
    per_class = {str(c): int(n) for c, n in zip(run.classes, np.bincount(probs.argmax(1), minlength=n_classes))}
    rule = " and ".join(x for x in (f"confidence >= {cfg.pseudo_min_confidence:g}" if cfg.pseudo_min_confidence
                                    else "", f"top-1 - top-2 >= {cfg.pseudo_top_margin:g}"
                                    if cfg.pseudo_top_margin else "") if x) or "no filter"
    teaching.record["pseudo"] = {"experiment": name, "models": [p.name for p in checkpoints],
                                 "sha256": [sha256_file(p) for p in checkpoints],
                                 "pool": int(len(table)), "joined": int(len(kept)), "per_class": per_class,
                                 "filter": rule, "soft": bool(cfg.pseudo_soft), "weight": cfg.pseudo_weight,
                                 "file": path.name}
    log(f"fold {fold}: {len(kept)} of {len(table)} pool images joined the training part as "
        f"{'soft' if cfg.pseudo_soft else 'hard'} pseudo-labels of {name}/{'+'.join(p.name for p in checkpoints)} ({rule}, weight "
        f"{cfg.pseudo_weight:g}); per class: " + ", ".join(f"{c} {n}" for c, n in per_class.items()))


# --------------------------------------------------------------------------- distillation

class Distiller:
    """The --teacher models of one fold, run on the student's own training batch (after augmentation and
    mixup: the teacher sees exactly the student's view, which is what makes distillation work with any
    augmentation; Beyer et al. 2022, "a good teacher is patient and consistent"). The batch is turned into
    each teacher's input: un-normalised with the student's mean/std, resized (bilinear, antialiased) to the
    teacher's input size, grey <-> RGB as the teacher needs, normalised with the teacher's mean/std."""

    def __init__(self, checkpoints: list[Path], student_data_cfg: dict, alpha: float, temperature: float):
        self.alpha, self.temperature, self.student = float(alpha), float(temperature), student_data_cfg
        self.models = []
        for p in checkpoints:
            ckpt = load_checkpoint(p)
            model = model_from_checkpoint(ckpt).eval()
            for prm in model.parameters():
                prm.requires_grad_(False)
            self.models.append((model, ckpt["data_config"]))

    def to(self, device, channels_last: bool = False) -> "Distiller":
        import torch
        for model, _ in self.models:
            model.to(device)
            if channels_last:
                model.to(memory_format=torch.channels_last)
        return self

    def _view(self, x, dc: dict):
        import torch
        import torch.nn.functional as F

        def stats(cfg):
            c = cfg["input_size"][0]
            m, s = (torch.tensor(list(cfg[k])[:c] if len(cfg[k]) >= c else list(cfg[k]) * c, device=x.device,
                                 dtype=x.dtype).view(1, -1, 1, 1) for k in ("mean", "std"))
            return m, s
        m_s, s_s = stats(self.student)
        img = x * s_s + m_s
        c_t = dc["input_size"][0]
        if img.shape[1] == 1 and c_t == 3:
            img = img.expand(-1, 3, -1, -1)
        elif img.shape[1] == 3 and c_t == 1:
            img = (img * torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)).sum(
                1, keepdim=True)
        size = tuple(dc["input_size"][1:])
        if tuple(img.shape[-2:]) != size:
            img = F.interpolate(img, size=size, mode="bilinear", antialias=True, align_corners=False)
        m_t, s_t = stats(dc)
        return (img - m_t) / s_t

    def probs(self, x):
        """The teachers' mean softmax at the temperature, for the student's batch x (no gradient)."""
        import torch
        with torch.no_grad():
            p = 0
            for model, dc in self.models:
                p = p + torch.softmax(model(self._view(x, dc)).float() / self.temperature, dim=1)
            return p / len(self.models)


# --------------------------------------------------------------------------- in words

def describe(config: dict) -> str:
    """The teacher settings of an experiment's config.json in a few words ('' for none): the leaderboard's
    `teachers` column."""
    out = []
    if config.get("soft_labels"):
        out.append(f"soft labels {config['soft_labels']} (alpha {config.get('soft_alpha', 0.3):g})")
    if config.get("pseudo"):
        margin = config.get("pseudo_top_margin") or 0
        conf = config.get("pseudo_min_confidence", 0.9)
        rule = " ".join(x for x in (f"conf>={conf:g}" if conf else "", f"margin>={margin:g}" if margin else "") if x)
        out.append(f"pseudo {config['pseudo']} ({rule or 'all'}, {'soft' if config.get('pseudo_soft') else 'hard'}"
                   f", w {config.get('pseudo_weight', 1.0):g}" + (", +unlabelled" if config.get("unlabelled") else "")
                   + ")")
    if config.get("teacher"):
        out.append(f"distilled from {config['teacher']} (alpha {config.get('kd_alpha', 0.5):g}, "
                   f"T {config.get('kd_temperature', 2.0):g})")
    return "; ".join(out)
