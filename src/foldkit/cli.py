"""The kit's commands, one table: `foldkit <command> ...` and the src/<command>.py scripts both run them.

Each command names the settings groups its flags come from, its help text, the work it runs and how it
prints the result. `python src/train.py --fold 0` and `foldkit train --fold 0` are the same call: the
same parser (only the program name in its usage line differs), the same work, the same output.

The work is imported inside the command's function: `--help` and a mistake in the flags stay instant
(no torch). A FoldkitError raised by the work is one line `error: ...` and exit code 2 (errors.cli_run).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

import foldkit
from foldkit import config
from foldkit.errors import EXIT_USER_ERROR, cli_run
from foldkit.io import atomic_write_with


@dataclass(frozen=True)
class Command:
    help: str                           # --help's description; its first line is the command's summary
    groups: tuple[str, ...]             # the config groups whose settings are its flags
    run: Callable[[Any], Any]           # the work: given the resolved settings (or the parsed flags, below)
    extra: tuple[str, ...] = ()         # single settings of other groups it takes too
    show: Callable[[Any, Any, float], None] | None = None   # prints (settings, result, seconds of work)
    resolve: bool = True                # False: run gets the parsed flags, not the settings
    parser: Callable[[str, str], argparse.ArgumentParser] | None = None   # instead of the groups' parser

    @property
    def summary(self) -> str:
        return self.help.split("\n")[0]


# --- the work of each command (imports inside: --help stays instant) ---------------------------------

def _audit(cfg) -> dict:
    from foldkit.audit.run import run_audit  # lazy: --help stays instant
    return run_audit(cfg)


def _show_audit(cfg, summary: dict, seconds: float) -> None:
    from foldkit.audit.run import summary_text  # lazy: --help stays instant
    print(summary_text(summary))
    print(f"{summary['paths']['html']} ({seconds:.1f} s)")


def _make_folds(cfg) -> dict:
    from foldkit.folds.file import make_folds  # lazy: --help stays instant
    return make_folds(cfg)


def _show_folds(cfg, meta: dict, seconds: float) -> None:
    print(meta["counts_text"])
    where = Path(cfg.folds_dir) / "train_folds.csv"
    kind = {"single": f"{len(meta['classes'])} classes",
            "multilabel": f"multi-label, {len(meta['classes'])} labels (tags separated by {meta.get('label_sep')!r})",
            "regression": "regression target"}[meta["task"]]
    print(f"{meta['layout']} layout, {meta['rows']} rows, {kind}, "
          f"{meta['n_folds']} folds ({meta['splitter']}, seed {meta['seed']})"
          + (f", limited from {meta['rows_read']} rows" if cfg.limit else ""))
    dup = meta.get("duplicates") or {}
    print(f"duplicate clusters kept inside one fold: {dup['clusters_grouped']} ({dup['source']})"
          if dup.get("grouped") else f"duplicates not grouped: {dup.get('reason', 'off')}")
    if tl := meta.get("test_like"):
        print(f"fold 0 is test-like: the {tl['rows']} most test-like training rows (mean p_test {tl['mean_p_test']:.3f}, "
              f"other folds {tl['mean_p_test_other_folds']:.3f}; adversarial AUC {tl['adversarial_auc']:.3f}, "
              f"{tl['source']}); train.py --fold 0 scores a test-like validation set")
    print(f"{where}: {meta['status']} (sha256 {meta['sha256'][:12]})")


def _train(cfg) -> list:
    if cfg.lr_find:
        from foldkit.train.lrfind import lr_find  # lazy: --help stays instant
        return [lr_find(cfg)]
    from foldkit.report.html import report_writer  # lazy: --help stays instant
    from foldkit.runtime import distributed  # lazy: --help stays instant
    from foldkit.train.fit import train  # lazy: --help stays instant
    with distributed.rank_in_errors():
        return train(cfg, report=report_writer(cfg.reports_dir))


def _show_train(cfg, results: list, seconds: float) -> None:
    if cfg.lr_find:
        print(results[0].line())
        print(f"plot: {results[0].plot} (losses: {results[0].csv})")
        return
    from foldkit.oof import score_text  # lazy: pandas, --help stays instant
    from foldkit.runtime import distributed  # lazy: --help stays instant
    main = distributed.is_main()        # under torchrun rank 0 alone prints, once the process group is closed
    distributed.shutdown()
    for r in results if main else []:
        print(f"fold {r['fold']}: best {r['metric']} {score_text(r['value'])} at epoch {r['best_epoch']} "
              f"({r['epochs_run']} epochs, {r['seconds']}s)")


def _predict(cfg):
    from foldkit.predict.predicting import predict_image, run_predict  # lazy: --help stays instant
    if cfg.image:
        return predict_image(cfg)
    from foldkit.report.predicted import write_reports  # lazy: --help stays instant
    return run_predict(cfg, reports=write_reports)


def _leaderboard(cfg):
    from foldkit.search.leaderboard import leaderboard  # lazy: --help stays instant
    return leaderboard(cfg.models_dir, cfg.submissions_dir)


def _show_leaderboard(cfg, df, seconds: float) -> None:
    from foldkit.search.leaderboard import format_table  # lazy: --help stays instant
    print(format_table(df))
    if cfg.csv:
        atomic_write_with(Path(cfg.csv), lambda tmp: df.to_csv(tmp, index=False, lineterminator="\n"))
        print(f"written: {cfg.csv}")


def _tune(args):
    try:
        import optuna  # noqa: F401
    except ImportError:
        from foldkit.search.tune import TuneError  # lazy: --help stays instant
        raise TuneError("tune.py needs Optuna: pip install -e '.[tune]'") from None
    from foldkit.search.tune import read_space_table, tune  # lazy: --help stays instant
    table = read_space_table(getattr(args, "config", None))     # the [search_space] table resolve skips
    return tune(config.resolve(args), space_table=table)


def _auto(cfg):
    from foldkit.search.auto import run_auto  # lazy: --help stays instant
    return run_auto(cfg)


def _stack(cfg):
    """The stacked experiment, then its submission and reports through predict.py's own path (the plan, the
    post-processing, the writer): what `predict.py --experiments <stack>` does."""
    from foldkit.predict.calibrate import cv_scorer  # lazy: --help stays instant
    from foldkit.predict.predicting import run_predict  # lazy: --help stays instant
    from foldkit.report.predicted import write_reports  # lazy: --help stays instant
    from foldkit.stack.stacking import run_stack  # lazy: --help stays instant
    out = run_stack(cfg, cv_scorer=cv_scorer)       # the CV read as the report and the leaderboard read it
    done = run_predict(config.with_settings(cfg, experiments=out["experiment"]), reports=write_reports)
    out.update({k: done[k] for k in ("submission", "mode") if k in done})
    return out


def _show_stack(cfg, out: dict, seconds: float) -> None:
    from foldkit.oof import score_text  # lazy: pandas, --help stays instant
    print(f"{'trees on':>12s}  CV {out['metric']}")
    for v, cv in out["cv"].items():
        print(f"{v:>12s}  {score_text(cv)}")
    print(f"stacked experiment: {out['dir']} (CV of its OOF files {score_text(out['cv_file'])}, {out['rows']} rows)")
    top = out["importance_top"]
    top = top[top["variant"] == "stacked"].head(10)
    print(f"importance (stacked; {top['measure'].iloc[0] if len(top) else ''}): " + ", ".join(f"{r.feature} {r.share:.1%}" for r in top.itertuples()))
    print(f"importance: {out['importance']}")
    if out.get("submission"):
        print(f"submission: {out['submission']}")
    print(f"({seconds:.1f} s)")


def _export(cfg):
    from foldkit.export.push import check_push, push_bundle  # lazy: --help stays instant
    check_push(cfg)                  # a flag that cannot push stops here, before minutes of export
    if cfg.bundle:                   # an existing bundle, pushed again (after a timeout, to a new dataset)
        return {"out": cfg.bundle, "push": push_bundle(cfg, cfg.bundle)}
    from foldkit.export.build import export_bundle  # lazy: --help stays instant
    result = export_bundle(cfg)
    if cfg.push:
        result["push"] = push_bundle(cfg, result["out"])
    return result


# Sized for a laptop CPU: a tiny timm ResNet from scratch (offline: no download) on the 32x32 grey digits,
# the Keras augmentation recipe without flips (a flipped 2 is not a 2), 30 epochs: about 2.5 minutes on 2 cores.
DEMO_EXPERIMENT = "digits-test_resnet"
DEMO_TRAIN = ["--model", "test_resnet", "--img-size", "32", "--crop-pct", "1.0", "--aug", "medium",
              "--no-pretrained", "--no-hflip", "--epochs", "30", "--lr", "3e-3", "--batch-size", "64"]


def _demo_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(config.ROOT), help="folder holding input/, folds/, models/, cache/, "
                   "submissions/, reports/ (default: the repository)")
    return p


def _demo(args) -> dict:
    from foldkit.data.demo import build_demo  # lazy: --help stays instant
    root = Path(args.root)
    paths = {"input_dir": root / "input" / "demo", "folds_dir": root / "folds" / "demo",
             "models_dir": root / "models" / "demo", "cache_dir": root / "cache" / "demo",
             "submissions_dir": root / "submissions" / "demo",
             "reports_dir": root / "reports" / "demo"}
    flags = [a for k, v in paths.items() for a in (config.flag_name(k), str(v))]
    t0 = time.time()

    print(f"[1/4] building the demo competition in {paths['input_dir']}")
    info = build_demo(paths["input_dir"])
    print(f"      {info['train']} train + {info['test']} test images (32x32 PNG), "
          f"{info['written']} file(s) written")

    print(f"[2/4] making folds -> {paths['folds_dir']}")
    meta = run_script("make_folds", flags[:6] + ["--n-folds", "5", "--seed", "42"])

    print(f"[3/4] training 5 folds -> {paths['models_dir'] / DEMO_EXPERIMENT}")
    t1 = time.time()
    folds = run_script("train", flags[:8] + DEMO_TRAIN + ["--experiment", DEMO_EXPERIMENT, "--fold", "all"])
    t_train = time.time() - t1
    mean = np.mean([f["value"] for f in folds])
    print(f"trained 5 folds in {t_train:.0f}s; fold accuracy {mean:.4f} (mean)")

    print(f"[4/4] fold ensemble -> {paths['submissions_dir']}, report -> {paths['reports_dir'] / DEMO_EXPERIMENT}")
    pred = run_script("predict", flags + ["--experiments", DEMO_EXPERIMENT])
    print(f"\ndemo done in {time.time() - t0:.1f}s")
    print(f"  CV accuracy (out-of-fold, 5 folds): {pred['cv']:.4f}")
    print(f"  demo test accuracy (fold ensemble, {pred['test_rows']} held-out images): {pred['test_accuracy']:.4f}")
    print(f"  submission: {pred['submission']}")
    print(f"  report:     {paths['reports_dir'] / DEMO_EXPERIMENT / 'report.html'}")
    return {"paths": paths, "folds": meta, "train": folds, "train_seconds": t_train, "predict": pred}


class _OneLineParser(argparse.ArgumentParser):
    """A flag mistake is one line `error: ...`, as config's parser makes it for the other commands."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"error: {message} (see {self.prog} --help)\n")


def _download_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = _OneLineParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("urls", help="CSV with url and label (or tags, or a number) columns, optional id and split; "
                   "or a folder of <class>.txt files, one URL a line")
    p.add_argument("--out", required=True, help="competition folder to write (e.g. input/birds)")
    p.add_argument("--layout", choices=["csv", "folders"], default="csv",
                   help="csv: train.csv + train/<id>.<ext>; folders: train/<label>/<id>.<ext> (default: csv)")
    p.add_argument("--workers", type=int, default=16, help="downloads in flight (default: 16)")
    p.add_argument("--per-host", type=int, default=8, help="requests in flight to one host (default: 8)")
    p.add_argument("--delay", type=float, default=0.0, help="seconds between request starts to one host")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds for one request (default: 20)")
    p.add_argument("--max-time", type=float, default=0.0, help="seconds for the whole run; the rest waits for "
                   "a rerun (default: no limit)")
    p.add_argument("--retries", type=int, default=3, help="further tries after 429, 5xx, timeouts (default: 3)")
    p.add_argument("--max-bytes", type=int, default=20 << 20, help="largest file, stopped while streaming "
                   "(default: 20 MiB)")
    p.add_argument("--max-side", type=int, default=0, help="shrink images whose longer side is larger "
                   "(default: stored as received)")
    p.add_argument("--allow-host", default="", help="comma-separated hosts: the only ones fetched")
    p.add_argument("--retry-failed", action="store_true", help="fetch the failures of earlier runs again")
    p.add_argument("--resume", action="store_true", help="download into a folder that holds other files or another list's "
                   "download (its train.csv, sample_submission.csv and downloads.csv are rewritten)")
    p.add_argument("--shard", default="", help="K/N, env or env/N: download one share (then --merge)")
    p.add_argument("--merge", action="store_true", help="write the tables from every share's journal")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _download(args) -> dict:
    from foldkit.data.download import DownloadError, Settings, run_download, shard_spec  # lazy: --help stays instant
    from foldkit.data.fetch import Limits  # lazy: --help stays instant
    for name in ("workers", "per_host", "retries", "max_bytes", "max_side", "timeout", "delay", "max_time"):
        low = 1 if name in ("workers", "per_host", "max_bytes", "timeout") else 0
        if getattr(args, name) < low:
            raise DownloadError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be at least {low}")
    hosts = tuple(h.strip().lower() for h in args.allow_host.split(",") if h.strip())
    limits = Limits(timeout=args.timeout, max_bytes=args.max_bytes, retries=args.retries, per_host=args.per_host,
                    delay=args.delay, allow_hosts=hosts)
    return run_download(Settings(
        source=Path(args.urls), out=Path(args.out), layout=args.layout, workers=args.workers, limits=limits,
        max_side=args.max_side, max_time=args.max_time, retry_failed=args.retry_failed, resume=args.resume,
        shard=shard_spec(args.shard) if args.shard else None, merge=args.merge, progress=not args.no_progress))


def _show_download(args, summary: dict, seconds: float) -> None:
    from foldkit.data.download import summary_text  # lazy: --help stays instant
    print(summary_text(summary))


# --- the table: the commands in the order of a competition ----------------------------------------

COMMANDS: dict[str, Command] = {
    "demo": Command(
        """Run the whole kit on the embedded demo competition (scikit-learn's real digits).

    python src/demo.py

Builds input/demo/ (a competition of its own: your data in input/ is never
touched), then runs the pipeline with settings sized for a laptop CPU. All of
the demo's outputs live in demo/ subfolders of folds/, models/, cache/, submissions/
and reports/.
""", (), _demo, resolve=False, parser=_demo_parser),
    "download": Command(
        """Download a list of image URLs into a competition folder the kit reads (train.csv + train/, test/).

    python src/download.py urls.csv --out input/birds
    python src/download.py urls/ --out input/birds --layout folders      # urls/<class>.txt, one URL a line
    python src/download.py urls.csv --out input/birds --retry-failed     # the same command continues

Many downloads in flight (keep-alive connections, --per-host limit and --delay, retries with backoff on
429/5xx/timeouts honouring Retry-After). Every file is decoded before it is kept: HTML error pages,
truncated and empty files never reach train/; exact duplicates are kept once. Killed, the same command
continues where it stopped. downloads.csv holds every URL's outcome (docs/download.md).
""", (), _download, show=_show_download, resolve=False, parser=_download_parser),
    "audit": Command(
        "Audit the competition before any training: duplicates, train/test copies, image statistics.",
        ("paths", "data", "audit"), _audit, show=_show_audit),
    "make_folds": Command(
        "Split the competition's training set into stratified CV folds.",
        ("paths", "data", "folds"), _make_folds, extra=("audit_dir", "near_threshold"), show=_show_folds),
    "train": Command(
        """Fine-tune a timm backbone on one fold (or several) of the folds file.

    python src/train.py --fold 0
    python src/train.py --fold all --model efficientnet_b0 --pretrained-file weights.pth --epochs 15
    python src/train.py --config exp.toml --fold 0,1

Trains on the other folds, validates on this one every epoch, keeps the best
epoch by --metric, and writes models/<experiment>/: fold{k}.pt (best, self-
describing), oof_fold{k}.csv, log_fold{k}.csv, curve_fold{k}.png. A killed run
resumes from its last epoch when started again.

More devices (docs/training.md "More GPUs"):
    torchrun --nproc_per_node 4 src/train.py --fold 0           # one fold, data-parallel (DDP)
    python src/train.py --fold all --devices 0,1,2,3             # one fold per GPU, side by side

Under torchrun --batch-size is the global batch (each process takes its share).

Learning rate (docs/training.md "Learning rate"): a range test on fold 0 with the same settings, no training:
    python src/train.py --lr-find --model efficientnet_b0 --pretrained-file weights.pth
prints the suggested --lr and writes models/lr_find/<experiment>/lr_find.csv and lr_find.png.
""", ("paths", "data", "train"), _train, extra=("seed", "tta"), show=_show_train),
    "predict": Command(
        """Ensemble the finished folds of an experiment into a validated submission and a CV report.

    python src/predict.py                          # latest experiment -> submissions/, reports/
    python src/predict.py --experiments a,b        # cross-model ensemble
    python src/predict.py --image photo.jpg        # top-k classes of one image (path or URL)
    python src/predict.py --submit COMPETITION     # also upload with the kaggle CLI

Models are rebuilt from their checkpoints alone (no network, no config file),
each test image is decoded once for all folds and TTA views, and the
submission takes the exact shape of sample_submission.csv. Its file name
carries the experiment and CV score; an existing file is never overwritten.
""", ("paths", "data", "predict"), _predict,
        extra=("batch_size", "device", "amp", "channels_last", "workers", "progress", "positive_class")),
    "leaderboard": Command(
        """One table of every experiment under models/, best CV first: what to check after every run.

    python src/leaderboard.py                     # print the table
    python src/leaderboard.py --csv board.csv     # also write it as CSV

Columns: experiment, model, image size, the settings that differ between experiments, folds
finished, CV on all OOF rows (and mean ± std across folds) in each experiment's metric, training
time, and the submissions made from the experiment (file and CV).
""", ("paths", "leaderboard"), _leaderboard, show=_show_leaderboard),
    "tune": Command(
        """Search learning settings on the folds with Optuna: every trial is a normal experiment in models/.

    python src/tune.py --n-trials 20                       # --space quick: lr, weight decay, augmentation
    python src/tune.py --space standard --tune-folds 0,1,2 --holdout-fold 4 --epochs 8
    python src/tune.py --config search.toml                # a [search_space] table of ranges
    python src/tune.py --storage postgresql+psycopg://user:pw@host/db   # the same command on many machines

A trial trains the first --tune-folds fold reporting each epoch's metric (the pruner stops bad trials
there), then the others; its value is the CV on them. The study lives in models/tune.db (SQLite) unless
--storage says otherwise: start the command again (or on another machine with a shared --storage) and it
continues. optuna-dashboard sqlite:///models/tune.db shows it. Needs the `tune` extra (pip install
-e '.[tune]'; '.[postgres]' adds the PostgreSQL driver).
""", ("paths", "data", "train", "tune"), _tune, extra=("seed",), resolve=False),
    "auto": Command(
        """The strongest honest submission within a time budget, every step a normal experiment.

    python src/auto.py --hours 2
    python src/auto.py --hours 8 --portfolio convnext_tiny,efficientnet_b2,resnet50

Measures each --portfolio backbone's training speed on this device, keeps those whose time on every
fold fits the budget (in order; when the first does not fit whole: fewer folds, then fewer epochs, then
a smaller image size, saying what was given up), trains them, then runs predict.py's path on them: blend
fitted on the OOF (nested CV), submission, report. Only a budget too small for one epoch of one fold
stops at once with one line saying the hours it needs. 20% of the budget is kept for prediction.
""", ("paths", "data", "train", "auto"), _auto,
        extra=("seed", "tta", "ensemble", "submission_mode", "calibrate", "thresholds", "report", "submit")),
    "stack": Command(
        """Stack image experiments' out-of-fold predictions with the table's columns in gradient-boosted trees.

    python src/stack.py                                   # every experiment trained on all folds + every column
    python src/stack.py --experiments a,b --features area,zipcode:cat --seeds 3

Fold k's trees train on the other folds' rows only (their image features are OOF predictions, made by
models that never saw those rows), stop early on an inner split of them and predict fold k: the stacked
OOF covers every row once and its CV is honest. Prints the CV of trees on the table alone, on the image
predictions alone and on both; writes the stacked experiment models/<name>/ (the leaderboard and the
report read it like any other), its features' importance (importance.csv), then runs predict.py on it:
the submission when the competition has test images (test rows from test.csv or --test-table), and the
report. `python src/predict.py --experiments <stack>,<other>` submits or blends it later like any other
experiment. LightGBM with the `stack` extra, else scikit-learn's HistGradientBoosting.
""", ("paths", "data", "stack"), _stack, show=_show_stack,
        extra=("experiments", "experiment", "seed", "tta", "ensemble", "submission_mode", "batch_size", "device",
               "amp", "channels_last", "workers", "progress", "cache")),
    "export": Command(
        """Write an offline inference bundle of an ensemble for Kaggle code competitions.

    python src/export.py --experiments a,b --out bundle/          # checkpoints, wheel, script, notebook
    python src/export.py --onnx --half --test-images 50000        # + ONNX, fp16 weights, estimate for 50k
    python src/export.py --int8 --max-cv-drop 0.005              # + int8 ONNX for a CPU, scored on the OOF
    python src/export.py --push me/my-bundle --kernel me/my-notebook --competition SLUG   # + onto Kaggle
    python src/export.py --bundle bundle/ --push me/my-bundle     # push an existing bundle again

The bundle applies the plan predict.py submits with for the same flags (--ensemble, --blend,
--calibrate, --thresholds, --clip, --tta, --submission-mode). It holds everything inference needs with no network (predict_offline.py finds the
competition under /kaggle/input and writes a validated submission.csv) and a runtime estimate
measured on this device; --time-budget warns when the ensemble will not fit.
""", ("paths", "data", "export"), _export,
        extra=("experiments", "tta", "ensemble", "submission_mode", "blend", "calibrate", "thresholds", "clip",
               "tag_metric", "positive_class", "batch_size", "device", "amp", "channels_last", "workers", "bundle")),
}


# --- running a command ---------------------------------------------------------------------------

def run_command(name: str, argv: list[str] | None, prog: str, description: str | None = None) -> Any:
    """Parse `argv` with the command's flags, run its work and print its result; returns the result.
    A mistake in the flags or a FoldkitError is one line `error: ...` and exit code 2."""
    cmd = COMMANDS[name]
    description = cmd.help if description is None else description
    parser = (cmd.parser(prog, description) if cmd.parser else
              config.build_parser(list(cmd.groups), description=description, prog=prog, extra=cmd.extra))
    args = parser.parse_args(argv)

    def work():
        settings = config.resolve(args) if cmd.resolve else args
        t0 = time.time()
        result = cmd.run(settings)
        if cmd.show:
            cmd.show(settings, result, time.time() - t0)
        return result
    return cli_run(work)


def run_script(name: str, argv: list[str] | None = None) -> Any:
    """What `python src/<name>.py ...` runs (its main): the command under the script's own name."""
    return run_command(name, argv, prog=f"{name}.py")


def script(name: str) -> Callable[..., Any]:
    """A src/<name>.py script's main(argv=None): run_script under that name."""
    def main(argv: list[str] | None = None) -> Any:
        return run_script(name, argv)
    return main


def overview() -> str:
    """`foldkit --help`: every command with its one-line summary."""
    width = max(map(len, COMMANDS))
    lines = ["usage: foldkit <command> [flags]        foldkit <command> --help: the command's flags", "",
             "foldkit: folds -> train -> predict for Kaggle-style image classification.", "", "commands:"]
    lines += [f"  {name:<{width}}  {cmd.summary}" for name, cmd in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`foldkit <command> [flags]`: the same as `python src/<command>.py [flags]`. Returns the exit code
    (the console script exits with it); the command's result is run_command's."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(overview())
        return 0 if argv else EXIT_USER_ERROR
    if argv[0] == "--version":
        print(f"foldkit {foldkit.__version__}")
        return 0
    name = argv[0].replace("-", "_")         # make-folds or make_folds
    if name not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}{config.did_you_mean(name, COMMANDS)} "
              f"(commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return EXIT_USER_ERROR
    console_help = COMMANDS[name].help.replace(f"python src/{name}.py", f"foldkit {name}")
    run_command(name, argv[1:], prog=f"foldkit {name}", description=console_help)
    return 0
