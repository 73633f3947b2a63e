"""tune.py measured: default settings against the best of a small tuned study, on real Fashion-MNIST.

    python benchmarks/bench_tune.py                       # 1,200 rows, 3 folds, 8 trials, 3 epochs (2 CPU cores)
    python benchmarks/bench_tune.py --rows 6000 --trials 20 --epochs 8

Fold 2 is held out: the search scores folds 0 and 1 only (--tune-folds 0,1 --holdout-fold 2), and the
default recipe is trained on the same folds and on fold 2, so both get a CV and an honest held-out score.
Then the same study is run by 2 processes on one SQLite storage (wall time, trials trained twice).
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

BASE = ["--model", "test_resnet", "--img-size", "28", "--crop-pct", "1.0", "--no-hflip", "--batch-size", "64",
        "--no-progress", "--workers", "0"]


def run(cmd, **kw):
    t0 = time.time()
    r = subprocess.run([sys.executable, *map(str, cmd)], capture_output=True, text=True, **kw)
    if r.returncode:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r.stdout, time.time() - t0


def cv_of(exp_dir, folds, metric="accuracy"):
    from foldkit.report import cv_summary, load_oof
    oof, classes = load_oof(exp_dir, folds)
    return cv_summary(oof, classes, metric)["cv"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1200)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--work", default="")
    a = ap.parse_args(argv)
    import fashion_mnist
    import optuna
    work = Path(a.work or tempfile.mkdtemp(prefix="bench_tune_"))
    comp = fashion_mnist.build(ROOT.parent / "shared" / "data" / "fashion_mnist", work / "in", limit=a.rows)
    common = ["--input-dir", comp, "--folds-dir", work / "folds"]
    run([ROOT / "src/make_folds.py", *common, "--n-folds", "3"])
    ep = ["--epochs", a.epochs]
    # default recipe: folds 0,1 (its CV) and 2 (held out)
    _, t_default = run([ROOT / "src/train.py", *common, "--models-dir", work / "m_default", *BASE, *ep,
                        "--experiment", "default", "--fold", "all"])
    d = work / "m_default" / "default"
    from foldkit.experiment import Experiment
    default_cv, default_hold = cv_of(d, [0, 1]), Experiment(d).summary(2)["value"]
    # one worker
    tune = [ROOT / "src/tune.py", *common, *BASE, *ep, "--n-trials", a.trials, "--tune-folds", "0,1",
            "--holdout-fold", 2, "--study", "bench"]
    out1, t1 = run([*tune, "--models-dir", work / "m1"])
    s1 = optuna.load_study(study_name="bench", storage=f"sqlite:///{work / 'm1' / 'tune.db'}")
    done = [t for t in s1.trials if t.state.name == "COMPLETE"]
    pruned = [t for t in s1.trials if t.state.name == "PRUNED"]
    best = s1.best_trial
    hold = [line for line in out1.splitlines() if line.startswith("held-out fold")]
    # what pruning saved: the epochs a pruned trial did not train, at the study's mean epoch time
    import pandas as pd
    logs = [pd.read_csv(p) for p in (work / "m1").glob("*/log_fold*.csv")]
    epoch_s = float(pd.concat(logs)["seconds"].mean())
    saved_epochs = sum(2 * a.epochs - (t.last_step or 0) for t in pruned)
    # two workers on one SQLite study
    t0 = time.time()
    procs = [subprocess.Popen([sys.executable, *map(str, tune), "--models-dir", work / "m2"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate()[0] for p in procs]
    t2 = time.time() - t0
    s2 = optuna.load_study(study_name="bench", storage=f"sqlite:///{work / 'm2' / 'tune.db'}")
    logs2 = {p: len(pd.read_csv(p)) for p in (work / "m2").glob("*/log_fold*.csv")}
    twice = [str(p) for p, n in logs2.items() if n > a.epochs]
    ran = [sum(f"trial {t.number}: lr" in o for o in outs) for t in s2.trials]
    print(f"Fashion-MNIST {a.rows} train rows, 3 folds (2 searched, fold 2 held out), test_resnet 28 px, "
          f"{a.epochs} epochs, space quick, median pruner, {a.trials} trials")
    print(f"default:  CV(0,1) {default_cv:.4f}  held-out fold 2 {default_hold:.4f}  ({t_default:.0f} s, 3 folds)")
    print(f"tuned 1 worker: best CV(0,1) {best.value:.4f} (trial {best.number}: {best.params}); "
          f"{hold[0] if hold else 'no held-out line'}; {len(done)} complete, {len(pruned)} pruned "
          f"(~{saved_epochs} epochs = ~{saved_epochs * epoch_s:.0f} s saved at {epoch_s:.1f} s/epoch); "
          f"wall {t1:.0f} s")
    print(f"tuned 2 workers on one SQLite study: wall {t2:.0f} s ({t2 / t1:.2f} x one worker); "
          f"{len(s2.trials)} trials ({sum(t.state.name == 'PRUNED' for t in s2.trials)} pruned), "
          f"each started by one worker: {all(n <= 1 for n in ran)}, folds trained twice: {twice or 'none'}")


if __name__ == "__main__":
    main()
