"""tune.py measured: default settings against the best of a small tuned study, on real Fashion-MNIST.

    python benchmarks/bench_tune.py                       # 1,200 rows, 3 folds, 8 trials, 3 epochs (2 CPU cores)
    python benchmarks/bench_tune.py --rows 6000 --trials 20 --epochs 8
    python benchmarks/bench_tune.py --workers-only --rows 400 --trials 5 --epochs 2 \
        --storage postgresql+psycopg://user:pw@localhost/optuna      # the 2-worker study on PostgreSQL

Fold 2 is held out: the search scores folds 0 and 1 only (--tune-folds 0,1 --holdout-fold 2), and the
default recipe is trained on the same folds and on fold 2, so both get a CV and an honest held-out score.
Then the same study is run by 2 processes started together on one storage (SQLite in the work folder, or
--storage URL: a fresh study name each run), checked from the study: trials per worker, no trial started
twice, no fold of any trial's experiment trained twice (its log has each epoch once), no lock left.
Prints one block of figures for benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks" / "scenarios"))

BASE = ["--model", "test_resnet", "--no-pretrained", "--img-size", "28", "--crop-pct", "1.0", "--no-hflip",
        "--batch-size", "64", "--no-progress", "--workers", "0"]


def run(cmd, **kw):
    t0 = time.time()
    r = subprocess.run([sys.executable, *map(str, cmd)], capture_output=True, text=True, **kw)
    if r.returncode:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r.stdout, time.time() - t0


def cv_of(exp_dir, folds, metric="accuracy"):
    from foldkit.oof import cv_summary, load_oof
    oof, classes = load_oof(exp_dir, folds)
    return cv_summary(oof, classes, metric)["cv"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1200)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--work", default="")
    ap.add_argument("--storage", default="", help="the 2-worker study's storage URL (default: SQLite)")
    ap.add_argument("--workers-only", action="store_true", help="only the 2-worker study (no default, no 1 worker)")
    a = ap.parse_args(argv)
    import fashion_mnist
    work = Path(a.work or tempfile.mkdtemp(prefix="bench_tune_"))
    comp = fashion_mnist.build(ROOT.parent / "shared" / "data" / "fashion_mnist", work / "in", limit=a.rows)
    common = ["--input-dir", comp, "--folds-dir", work / "folds"]
    run([ROOT / "src/make_folds.py", *common, "--n-folds", "3"])
    tune = [ROOT / "src/tune.py", *common, *BASE, "--epochs", a.epochs, "--n-trials", a.trials, "--tune-folds",
            "0,1", "--holdout-fold", 2]
    head = (f"Fashion-MNIST {a.rows} train rows, 3 folds (2 searched, fold 2 held out), test_resnet 28 px, "
            f"{a.epochs} epochs, space quick, median pruner, {a.trials} trials")
    if a.workers_only:
        w = two_workers(tune, work / "m2", a.storage, a.epochs)
        print(head)
        print(f"2 workers on one {w['kind']} study {w['study']}: wall {w['wall']:.0f} s; {w['line']}")
        return
    (default_cv, default_hold), t_default = default_recipe(common, a.epochs, work / "m_default")
    t1, one = one_worker(tune, work / "m1", a.epochs)
    w = two_workers(tune, work / "m2", a.storage, a.epochs)
    print(head)
    print(f"default:  CV(0,1) {default_cv:.4f}  held-out fold 2 {default_hold:.4f}  ({t_default:.0f} s, 3 folds)")
    print(f"tuned 1 worker: {one}; wall {t1:.0f} s")
    print(f"tuned 2 workers on one {w['kind']} study: wall {w['wall']:.0f} s ({w['wall'] / t1:.2f} x one worker); "
          + w["line"])


def default_recipe(common, epochs, models):
    """The default settings on folds 0,1 (its CV) and 2 (held out)."""
    from foldkit.experiment import Experiment
    _, t = run([ROOT / "src/train.py", *common, "--models-dir", models, *BASE, "--epochs", epochs,
                "--experiment", "default", "--fold", "all"])
    d = models / "default"
    return (cv_of(d, [0, 1]), Experiment(d).summary(2)["value"]), t


def one_worker(tune, models, epochs):
    """The study run by one process on SQLite: best trial, held-out score, what pruning saved."""
    import optuna
    import pandas as pd
    out1, t1 = run([*tune, "--models-dir", models, "--study", "bench"])
    s1 = optuna.load_study(study_name="bench", storage=f"sqlite:///{models / 'tune.db'}")
    done = [t for t in s1.trials if t.state.name == "COMPLETE"]
    pruned = [t for t in s1.trials if t.state.name == "PRUNED"]
    best = s1.best_trial
    hold = [line for line in out1.splitlines() if line.startswith("held-out fold")]
    # what pruning saved: the epochs a pruned trial did not train, at the study's mean epoch time
    epoch_s = float(pd.concat([pd.read_csv(p) for p in models.glob("*/log_fold*.csv")])["seconds"].mean())
    saved_epochs = sum(2 * epochs - (t.last_step or 0) for t in pruned)
    return t1, (f"best CV(0,1) {best.value:.4f} (trial {best.number}: {best.params}); "
                f"{hold[0] if hold else 'no held-out line'}; {len(done)} complete, {len(pruned)} pruned "
                f"(~{saved_epochs} epochs = ~{saved_epochs * epoch_s:.0f} s saved at {epoch_s:.1f} s/epoch)")


def two_workers(tune, models, storage, epochs):
    """The study run by 2 tune.py processes started together on one storage; what the study and every
    trial's experiment say about it."""
    import optuna
    import pandas as pd
    name = f"bench-{time.strftime('%Y%m%d-%H%M%S')}" if storage else "bench"
    url = storage or f"sqlite:///{models / 'tune.db'}"
    cmd = [*map(str, tune), "--models-dir", str(models), "--storage", url, "--study", name]
    t0 = time.time()
    procs = [subprocess.Popen([sys.executable, *cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate()[0] for p in procs]
    wall = time.time() - t0
    if any(p.returncode for p in procs):
        sys.exit("a worker failed:\n" + "\n---\n".join(o[-2000:] for o in outs))
    study = optuna.load_study(study_name=name, storage=url)
    trials = study.trials
    started = [sum(f"trial {t.number}: " in line and "->" in line for o in outs for line in o.splitlines())
               for t in trials]
    per_worker = {}
    for t in trials:
        per_worker[t.user_attrs.get("worker", "?")] = per_worker.get(t.user_attrs.get("worker", "?"), 0) + 1
    exps = [t.user_attrs["experiment"] for t in trials]
    logs = {p: pd.read_csv(p)["epoch"].tolist() for e in set(exps) for p in (models / e).glob("log_fold*.csv")}
    twice = [str(p) for p, ep in logs.items() if len(ep) != len(set(ep)) or len(ep) > epochs]
    states = pd.Series([t.state.name.lower() for t in trials]).value_counts().to_dict()
    line = (f"{len(trials)} trials {states}, per worker {sorted(per_worker.values(), reverse=True)}; each started "
            f"once: {all(n == 1 for n in started)}; {len(set(exps))} experiments for {len(exps)} trials, "
            f"{len(logs)} fold logs, folds trained twice: {twice or 'none'}; "
            f"locks left: {len(list(models.glob('*/*.lock')))}")
    from sqlalchemy.engine import make_url
    return {"kind": make_url(url).get_backend_name() if storage else "SQLite",
            "wall": wall, "line": line, "study": name}

if __name__ == "__main__":
    main()
