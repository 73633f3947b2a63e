"""tune.py's job: an Optuna study whose trials are ordinary foldkit experiments.

A trial samples learning settings from a search space, trains the first of --tune-folds reporting each
epoch's validation metric to Optuna (the pruner stops bad trials there), then the other folds; its value
is the CV on those folds (foldkit.oof.cv_summary over their OOF). The trial's experiment is
models/<model>-<hash of its settings>/ like a train.py run's, so the leaderboard, predict.py, blends
and export use it unchanged, and a trial that samples settings already trained reuses the finished folds.

Storage: SQLite beside the experiments by default (models/tune.db), or any URL Optuna takes (PostgreSQL
for workers on many machines). Restarts: a trial whose process died (kill, crash, lost machine) stops
sending heartbeats and is marked FAIL after 2 x --heartbeat seconds; it and a trial interrupted with
Ctrl-C are queued again with the same settings, and the rerun resumes the half-trained fold from its
last epoch (fold{k}_last.pt) exactly as train.py does. Finished and pruned trials are never redone.
"""
from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import math
import os
import socket
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from foldkit import config
from foldkit.errors import ConfigError, FoldkitError
from foldkit.folds.file import read_folds
from foldkit.metrics import METRICS
from foldkit.oof import cv_summary, load_oof
from foldkit.predict.calibrate import cv_scorer
from foldkit.train.builder import build_run, task_settings
from foldkit.train.fit import fit_fold_locked, parse_folds, train
from foldkit.train.foldlock import FoldLockError
from foldkit.train.trackers import open_tracker

# Readable ranges: a list is a choice, a table {low, high, log} a range (int when both ends are
# integers). Defaults aimed at fine-tuning pretrained backbones for ~10 epochs.
_QUICK = {"lr": {"low": 1e-4, "high": 3e-3, "log": True},
          "weight_decay": {"low": 1e-4, "high": 0.1, "log": True},
          "aug": ["light", "medium"]}
SPACES = {
    "quick": _QUICK,
    "standard": {**_QUICK, "aug": ["none", "light", "medium", "heavy"], "img_size": [192, 224, 256],
                 "label_smoothing": {"low": 0.0, "high": 0.2}, "mixup": [0.0, 0.2], "cutmix": [0.0, 1.0],
                 "freeze_epochs": {"low": 0, "high": 2}, "ema": [False, True]},
    "backbones": {"model": ["resnet50", "efficientnet_b0", "convnext_tiny", "tf_efficientnetv2_s",
                            "mobilenetv3_large_100"],
                  "lr": {"low": 1e-4, "high": 3e-3, "log": True}},
}
# kept for the report of a trial: what it samples (learning settings) and the tune group's own flags
_TUNABLE = {f.name for f in dataclasses.fields(config.Config)
            if f.metadata["group"] == "train" and f.name not in config.RUN_ONLY}


class TuneError(FoldkitError, ValueError):
    """A search space, study or tune flag that cannot be used; the message says which and why."""


def check_space(space: dict, where: str) -> dict:
    """The space with every entry checked: a tunable setting, a non-empty choice list or a low <= high
    range, each value accepted by the setting (config.convert)."""
    if not space:
        raise TuneError(f"{where}: the search space is empty")
    out = {}
    for name, spec in space.items():
        if name not in _TUNABLE:
            raise TuneError(f"{where}: {name!r} is not a learning setting that can be searched"
                            + config.did_you_mean(name, sorted(_TUNABLE)))
        if isinstance(spec, list) and spec:
            values = spec
        elif isinstance(spec, dict) and {"low", "high"} <= set(spec) <= {"low", "high", "log"}:
            if not spec["low"] <= spec["high"] or (spec.get("log") and spec["low"] <= 0):
                raise TuneError(f"{where}: {name} range {spec}: needs low <= high (and low > 0 with log)")
            values = [spec["low"], spec["high"]]
        else:
            raise TuneError(f"{where}: {name} = {spec!r}: give a list of choices or {{low = .., high = .., "
                            "log = true}}")
        for v in values:
            try:
                config.convert(name, v)
            except ConfigError as e:
                raise TuneError(f"{where}: {name} value {v!r} {e}") from None
        out[name] = spec
    return out


def read_space_table(path: str | None) -> dict:
    """The [search_space] table of a --config file ({} without one)."""
    if not path:
        return {}
    table = config._toml().loads(Path(path).read_text()).get(config.SEARCH_SPACE) or {}
    if not isinstance(table, dict):
        raise TuneError(f"{path}: {config.SEARCH_SPACE} must be a table [{config.SEARCH_SPACE}]")
    return table


def load_space(cfg, table: dict | None = None) -> dict:
    """--space's preset, or the config file's [search_space] table (added to the preset when --space is
    given as well)."""
    if table and "space" not in cfg.given:
        return check_space(table, f"[{config.SEARCH_SPACE}]")
    return check_space({**SPACES[cfg.space], **(table or {})}, f"--space {cfg.space}")


def space_label(cfg, table: dict | None) -> str:
    """The space's part of the default study name: the preset, custom (a [search_space] table alone), or both."""
    if not table:
        return cfg.space
    return f"{cfg.space}+custom" if "space" in cfg.given else "custom"


def study_identity(cfg, space: dict, folds: list[int], folds_sha: str) -> dict:
    """Everything that decides what a trial's CV means: the settings every trial starts from (the learning
    settings less the sampled ones: model, epochs, image size, ...), the space, the metric, the folds
    scored and the folds file. Trials of two runs are comparable only when these are equal."""
    fixed = {k: v for k, v in config.learning_settings(cfg).items() if k not in space}
    return json.loads(json.dumps({"settings": fixed, "space": space, "metric": cfg.metric, "tune_folds": folds,
                                  "folds_sha256": folds_sha}, default=str))


def identity_hash(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]


def _differences(old: dict, new: dict) -> list[str]:
    """'name old -> new' for each value that differs (the settings flattened beside the other entries)."""
    flat = [{**d.get("settings", {}), **{k: v for k, v in d.items() if k != "settings"}} for d in (old, new)]
    return [f"{k} {flat[0].get(k, '(unset)')} -> {flat[1].get(k, '(unset)')}"
            for k in sorted(set(flat[0]) | set(flat[1])) if flat[0].get(k) != flat[1].get(k)]


def sample(trial, space: dict) -> dict:
    out = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            out[name] = trial.suggest_categorical(name, spec)
        elif isinstance(spec["low"], int) and isinstance(spec["high"], int) and not isinstance(spec["low"], bool):
            out[name] = trial.suggest_int(name, spec["low"], spec["high"], log=bool(spec.get("log")))
        else:
            out[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))
    return out


def tune_fold_list(cfg, n_folds: int) -> list[int]:
    if cfg.holdout_fold >= n_folds:
        raise TuneError(f"--holdout-fold {cfg.holdout_fold}: the folds file has folds 0..{n_folds - 1}")
    folds = [k for k in parse_folds(cfg.tune_folds, n_folds) if k != cfg.holdout_fold]
    if cfg.holdout_fold in parse_folds(cfg.tune_folds, n_folds) and cfg.tune_folds.strip().lower() != "all":
        raise TuneError(f"--tune-folds {cfg.tune_folds} contains --holdout-fold {cfg.holdout_fold}: the search "
                        "must never score the held-out fold")
    if not folds:
        raise TuneError("no fold left to tune on: use more folds or another --holdout-fold")
    return folds


def _trial_config(base: dict, params: dict, fold_spec: str):
    """A trial's settings as the user would give them; build_run settles them as it settles train.py's, so the
    held-out fold of the best trial lands in that trial's experiment."""
    return config.resolve({**base, **params, "fold": fold_spec, "experiment": ""})


def base_settings(cfg) -> dict:
    """The settings the user gave (flags, config file), less the tune group's: every trial starts there."""
    tune_group = {f.name for f in dataclasses.fields(config.Config) if f.metadata["group"] == "tune"}
    return {k: getattr(cfg, k) for k in cfg.given if k not in tune_group and k not in ("fold", "experiment")}


def make_objective(cfg, space: dict, base: dict, folds: list[int], log=print):
    def objective(trial):
        params = sample(trial, space)
        tcfg, run = build_run(_trial_config(base, params, ",".join(map(str, folds))), log=lambda *_: None)
        trial.set_user_attr("experiment", run.exp.name)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")   # who ran it (many machines)
        log(f"trial {trial.number}: {_fmt_params(params)} -> {run.exp.dir}")
        tracker = open_tracker(tcfg, run.exp.name)        # --log: one tracker run per trial's experiment
        try:
            cv = trial_cv(trial, tcfg, run, folds, tracker, log)
        finally:
            if tracker:
                tracker.finish(run.exp)
        log(f"trial {trial.number}: CV {tcfg.metric} {cv:.5f} on folds {folds}")
        return cv
    return objective


def trial_cv(trial, tcfg, run, folds: list[int], tracker, log=print) -> float:
    """Train the trial's folds (the first reporting each epoch to the pruner); the CV on their OOF."""
    import optuna

    def report(fold, row):
        epoch, value = row["epoch"], row["valid_metric"]
        if fold != folds[0] or value is None or math.isnan(value):
            return
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"fold {fold} epoch {epoch}: {tcfg.metric} {value:.5f}")
    on_epoch = ([tracker.on_epoch] if tracker else []) + [report]
    for k in folds:
        s = run.exp.summary(k) if run.exp.is_finished(k) else \
            fit_fold_locked(tcfg, run, k, log=lambda *_: None, on_epoch=on_epoch)
        trial.set_user_attr(f"fold{k}", s["value"])
        log(f"trial {trial.number} fold {k}: {tcfg.metric} {s['value']}")
    oof, classes = load_oof(run.exp.dir, folds)
    task, sep = run.exp.task()
    return cv_summary(oof, classes, tcfg.metric, task, sep, cv_scorer(tcfg.metric, task, len(classes)))["cv"]


def _fmt_params(params: dict) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def shown_url(url: str) -> str:
    """The storage URL as it may be printed: the password replaced by ***."""
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy can parse: print it as given
        return url


def open_storage(url: str, heartbeat: int):
    """Optuna's RDBStorage on url (with the heartbeat that marks dead trials). A PostgreSQL server that
    does not answer fails after 10 s (libpq would wait minutes) and pooled connections are checked
    before use (a trial can leave one idle for hours). Workers starting together race to create the
    schema (the loser's INSERT of the schema version fails): it is tried 4 times; a missing driver or an
    unreachable server is a TuneError naming the URL without its password."""
    import optuna
    from sqlalchemy.engine import make_url
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)   # the heartbeat
    shown = shown_url(url)
    try:
        parsed = make_url(url)
        driver = parsed.get_dialect().driver
    except Exception as e:  # noqa: BLE001 - ArgumentError (not a URL), NoSuchModuleError (postgres://)
        raise TuneError(f"--storage {shown}: not a database URL SQLAlchemy knows ({e}); write "
                        "sqlite:///path/tune.db or postgresql+psycopg://user:password@host/database") from None
    kwargs = {}
    if parsed.get_backend_name() == "postgresql":
        kwargs = {"pool_pre_ping": True}
        if "connect_timeout" not in parsed.query:
            kwargs["connect_args"] = {"connect_timeout": 10}
    for attempt in range(4):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat,
                                              grace_period=2 * heartbeat)
        except ImportError:
            raise TuneError(f"--storage {shown}: its database driver {driver} is not installed; for PostgreSQL "
                            "pip install -e '.[postgres]' (psycopg 3) and write postgresql+psycopg://...") from None
        except Exception as e:  # noqa: BLE001 - SQLAlchemy raises many kinds for a bad URL or server
            if attempt == 3:
                why = " ".join(str(e).split("(Background on this error")[0].split())
                if parsed.password:
                    why = why.replace(str(parsed.password), "***")
                raise TuneError(f"--storage {shown}: cannot open it ({type(e).__name__}: {why[:200]}); check "
                                "that the server is running and the host, port, user, password and database "
                                "are right") from None
            time.sleep(1 + attempt)


def open_study(cfg, default_name: str, identity: dict):
    """The study (created or joined) and the storage URL as printable (no password). The study records its
    identity (study_identity); joining one recorded with other settings is refused: its trials' CV would
    not mean what this run's does. A study without one (made by hand) takes this run's."""
    import optuna
    storage_url = cfg.storage or f"sqlite:///{Path(cfg.models_dir).resolve() / 'tune.db'}"
    if storage_url.startswith("sqlite:///"):
        Path(storage_url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    storage = open_storage(storage_url, cfg.heartbeat)
    storage_url = shown_url(storage_url)
    pruner = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
              "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(),
              "none": optuna.pruners.NopPruner}[cfg.pruner]()
    name = cfg.study or default_name
    direction = "maximize" if METRICS[cfg.metric].greater_is_better else "minimize"
    study = optuna.create_study(storage=storage, study_name=name, direction=direction, pruner=pruner,
                                sampler=optuna.samplers.TPESampler(seed=None), load_if_exists=True)
    if study.direction.name.lower() != direction:
        raise TuneError(f"study {name!r} in {storage_url} was made to {study.direction.name.lower()}: "
                        f"--metric {cfg.metric} needs {direction}; use another --study")
    recorded = study.user_attrs.get("identity")
    if recorded is None:
        study.set_user_attr("identity", identity)
    elif recorded != identity:
        diff = _differences(recorded, identity)
        raise TuneError(f"study {name!r} in {storage_url} was made with other settings ({'; '.join(diff[:4])}"
                        + (f"; {len(diff) - 4} more" if len(diff) > 4 else "") + "): its trials' CV does not mean "
                        "what this run's would; use another --study, or leave --study out (the default name "
                        "follows the settings)")
    return study, storage_url


def requeue_interrupted(study, log=print, max_tries: int = 3) -> None:
    """Trials that died (heartbeat stale, Ctrl-C) are queued again with the same settings (their
    experiment resumes from its last epoch), unless an equal trial is queued, running or done, or the
    same settings failed max_tries times."""
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # ExperimentalWarning: the heartbeat API is stable in use
        fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    live = [t.params for t in trials if t.state != TrialState.FAIL]
    failed = [t for t in trials if t.state == TrialState.FAIL and "error" not in t.user_attrs]
    for t in failed:
        if t.params in live or sum(f.params == t.params for f in failed) >= max_tries + 1:
            continue
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        live.append(t.params)
        log(f"trial {t.number} was interrupted: queued again with the same settings "
            f"({t.user_attrs.get('experiment', '?')} resumes from its last epoch)")


# run settings tune.py cannot honour, and what to do instead (one line each)
_REFUSED = {
    "devices": "tune.py trains a trial's folds one after another on --device: to search on several devices, "
               "start one tune.py per device (--device cuda:0, --device cuda:1, ...) with the same --models-dir "
               "or --storage; they share the study",
    "lr_find": "--lr-find tests one set of settings: run python src/train.py --lr-find with them first, then "
               "search lr around its suggestion ([search_space] lr = {low = .., high = .., log = true})",
}
SAME_FAILURE_STOPS = 3    # trials in a row failing with the same reason: a setting they all share is wrong


def check_run_flags(cfg) -> None:
    if "fold" in cfg.given or "experiment" in cfg.given:
        raise TuneError("tune.py names each trial's experiment and picks its folds: use --tune-folds and "
                        "--holdout-fold instead of --fold / --experiment")
    for name, why in _REFUSED.items():
        if getattr(cfg, name):
            raise TuneError(f"{config.flag_name(name)} is not used by tune.py: {why}")
    if cfg.tracking_uri and not cfg.log:
        raise TuneError("--tracking-uri says where --log writes: give --log tensorboard or --log mlflow with it")


def run_study(cfg, log=print, space_table: dict | None = None, enqueue: list[dict] | None = None):
    """Run trials until the study holds --n-trials finished or pruned ones (all workers together) or
    --timeout; returns the study. The study's metric is the task's (foldkit.train.builder.task_settings).
    A trial that fails, for whatever reason, is recorded as failed with it and the worker goes on."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    check_run_flags(cfg)
    cfg, _ = task_settings(cfg)
    space = load_space(cfg, space_table)
    table, meta = read_folds(cfg.folds_dir)
    folds = tune_fold_list(cfg, int(table["fold"].max()) + 1)
    # trials are reported here, one line each: Optuna's own lines would add a traceback per failed trial
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    identity = study_identity(cfg, space, folds, meta["sha256_now"])
    study, url = open_study(cfg, f"{space_label(cfg, space_table)}-{cfg.metric}-{identity_hash(identity)}", identity)
    log(f"study {study.study_name} in {url}: {cfg.metric} CV on folds {folds}, pruner {cfg.pruner}, "
        f"{cfg.n_trials} trials in all")
    requeue_interrupted(study, log)
    for params in enqueue or []:
        study.enqueue_trial(params)
    objective = make_objective(cfg, space, base_settings(cfg), folds, log)

    def guarded(trial):
        try:
            return objective(trial)
        except optuna.TrialPruned:
            raise
        except Exception as e:  # noqa: BLE001 - a NaN loss, CUDA out of memory at a sampled size, a model timm
            # does not know: the trial fails (FAIL, its reason recorded, not queued again), the worker goes on
            reason = str(e) if isinstance(e, FoldkitError) else f"{type(e).__name__}: {e}"
            trial.set_user_attr("error", " ".join(reason.split())[:500])
            log(f"trial {trial.number} failed: {' '.join(reason.split())[:500]}")
            raise
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    left = cfg.n_trials - len(study.get_trials(deepcopy=False, states=done))
    stopped = []
    if left > 0:
        # MaxTrialsCallback stops at the study's count (all workers); n_trials bounds this process's
        # attempts so that trials failing one after another (every one a NaN loss) cannot loop forever
        study.optimize(guarded, n_trials=2 * left + 2, timeout=cfg.timeout * 3600 or None, catch=(Exception,),
                       callbacks=[MaxTrialsCallback(cfg.n_trials, states=done), _after_trial(log, stopped)])
    if stopped:
        raise TuneError(f"{SAME_FAILURE_STOPS} trials in a row failed with: {stopped[0]}; fix the setting they "
                        f"share (a flag, or a value of the search space) and start tune.py again")
    return study


def _after_trial(log, stopped: list):
    """Says when a trial was pruned; after a failed one frees what it held (an out-of-memory trial's tensors)
    and stops the worker when the last SAME_FAILURE_STOPS trials failed for one reason."""
    from optuna.trial import TrialState
    failures = []

    def callback(study, trial):
        if trial.state == TrialState.PRUNED:
            log(f"trial {trial.number}: pruned after epoch {trial.last_step} of its first fold")
        if trial.state != TrialState.FAIL:
            failures.clear()
            return
        free_memory()
        failures.append(trial.user_attrs.get("error"))
        if len(failures) >= SAME_FAILURE_STOPS and len(set(failures[-SAME_FAILURE_STOPS:])) == 1 and failures[-1]:
            stopped.append(failures[-1])
            study.stop()
    return callback


def free_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def summary(study, cfg, top: int = 5) -> list[str]:
    """The best trials (CV, experiment, sampled settings), counts by state, and the optimism warning:
    the best of N is selected on the same folds it is scored on."""
    from optuna.trial import TrialState
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    states = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,)))
              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
    lines = [f"study {study.study_name}: " + ", ".join(f"{n} {s}" for s, n in states.items() if n)]
    failed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if "error" in t.user_attrs]
    lines += [f"  #{t.number:<4} failed: {t.user_attrs['error']}  {_fmt_params(t.params)}" for t in failed[-3:]]
    if not done:
        return lines + ["no finished trial yet"]
    up = METRICS[cfg.metric].greater_is_better
    done.sort(key=lambda t: -t.value if up else t.value)
    lines.append(f"best trials ({cfg.metric} CV):")
    for t in done[:top]:
        lines.append(f"  #{t.number:<4} {t.value:.5f}  {t.user_attrs.get('experiment', '?')}  {_fmt_params(t.params)}")
    values = np.array([t.value for t in done], dtype=float)
    if len(values) > 1:
        lines.append(f"warning: the best CV of {len(values)} trials is optimistic: it was chosen on the folds it is "
                     f"scored on. Trials spread: median {np.median(values):.5f}, std {values.std(ddof=1):.5f}, "
                     f"range {values.min():.5f}..{values.max():.5f}"
                     + ("" if cfg.holdout_fold >= 0 else "; --holdout-fold K gives an honest number"))
    return lines


def holdout_score(study, cfg, log=print) -> dict | None:
    """Train the best trial's settings on the held-out fold (never scored by the search): its score is
    an honest estimate of the chosen settings."""
    if cfg.holdout_fold < 0 or not study.get_trials(deepcopy=False, states=(_complete(),)):
        return None
    from optuna.trial import TrialState

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if running:   # another worker's trial may still become the best: the last worker to stop scores it
        log(f"held-out fold {cfg.holdout_fold}: {len(running)} trial(s) still running in other workers; the "
            "last worker to stop trains the best trial on it (or run this command again once all have stopped)")
        return None
    best = study.best_trial
    tcfg = _trial_config(base_settings(cfg), best.params, str(cfg.holdout_fold))
    try:
        [s] = train(tcfg, log=lambda *_: None)
    except FoldLockError as e:    # two workers stopped together: the other one is training it
        log(f"held-out fold {cfg.holdout_fold}: {e}")
        return None
    log(f"held-out fold {cfg.holdout_fold} (never used to choose): {cfg.metric} {s['value']:.5f} for trial "
        f"#{best.number} (its CV {best.value:.5f}) -> {best.user_attrs.get('experiment')}")
    return s


def _complete():
    from optuna.trial import TrialState
    return TrialState.COMPLETE


def tune(cfg, log=print, space_table: dict | None = None) -> dict:
    t0 = time.time()
    cfg, _ = task_settings(cfg)      # the task's metric for the summary and the held-out fold
    study = run_study(cfg, log, space_table)
    for line in summary(study, cfg):
        log(line)
    held = holdout_score(study, cfg, log)
    return {"study": study, "holdout": held, "seconds": time.time() - t0}
