"""Blends fitted on OOF and post-processing, measured on a real competition: singles vs blends.

Builds a competition (the demo digits, or CMATERdb Bangla from ../shared/data/), makes folds,
trains a few experiments that differ in model settings with the real train.py, then runs the
real predict.py for each experiment alone and for the `mean`, `hill` (Caruana ensemble selection) and
`optimize` (scipy weights on the simplex) blends of all of them, and prints one table: CV (in-sample
and nested, from the reports' cv_scores.json) and the test score of each submission (the kit scores
it with the competition's test labels). Trained experiments in --root are reused (train.py skips
finished folds), so a second run with the same --root only predicts.

    python benchmarks/bench_blend.py --data demo
    python benchmarks/bench_blend.py --data bangla --limit 2000 --epochs 4
    python benchmarks/bench_blend.py --data demo --metric logloss --calibrate   # temperature off/on

With --calibrate each experiment is predicted with --calibrate off and on (the test log loss
with and without temperature scaling fitted on OOF). Nothing here imports torch.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks" / "scenarios"))

PLAIN = ["--no-pretrained", "--crop-pct", "1.0", "--aug", "none", "--no-hflip", "--batch-size", "64", "--lr", "3e-3"]
# name: train.py arguments (experiments that differ in model, image size and label smoothing)
EXPERIMENTS = {
    "res32": ["--model", "test_resnet", "--img-size", "32", *PLAIN],
    "res24": ["--model", "test_resnet", "--img-size", "24", *PLAIN],
    "res32_ls0": ["--model", "test_resnet", "--img-size", "32", "--label-smoothing", "0", *PLAIN],
}


def kit(script: str, *args: str) -> str:
    r = subprocess.run([sys.executable, str(REPO / "src" / script), *args], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{script} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout


def build(data: str, root: Path, limit: int) -> Path:
    if data == "demo":
        from foldkit.data.demo import build_demo
        build_demo(root / "input")
    else:
        import bangla
        import common
        bangla.build(common.DATA / bangla.RAW_SUBDIR, root / "input", limit)
    return root / "input"


def scores(reports: Path, exp: str) -> dict:
    return json.loads((reports / exp / "cv_scores.json").read_text())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=["demo", "bangla"], default="demo")
    ap.add_argument("--limit", type=int, default=0, help="training and test rows (bangla)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--metric", default="accuracy")
    ap.add_argument("--experiments", default=",".join(EXPERIMENTS))
    ap.add_argument("--calibrate", action="store_true", help="also predict each experiment with --calibrate off/on")
    ap.add_argument("--root", default="", help="scratch folder (default: a temporary one)")
    a = ap.parse_args(argv)
    t0 = time.time()
    root = Path(a.root or tempfile.mkdtemp(prefix="foldkit-blend-"))
    from foldkit import config
    from foldkit.folds.file import make_folds
    comp = build(a.data, root, a.limit)
    paths = ["--input-dir", str(comp), "--folds-dir", str(root / "folds"), "--models-dir", str(root / "models"),
             "--submissions-dir", str(root / "subs"), "--reports-dir", str(root / "reports")]
    make_folds(config.resolve(input_dir=str(comp), folds_dir=str(root / "folds"), models_dir=str(root / "models"),
                              n_folds=a.folds), log=lambda *x: None)
    names = a.experiments.split(",")
    for n in names:
        t = time.time()
        kit("train.py", *paths, *EXPERIMENTS[n], "--epochs", str(a.epochs), "--metric", a.metric, "--fold", "all",
            "--experiment", n, "--no-progress", "--workers", "0")
        print(f"trained {n} in {time.time() - t:.0f}s", flush=True)
    rows = []
    for n in names:
        modes = ("off", "on") if a.calibrate else ("auto",)
        for mode in modes:
            kit("predict.py", *paths, "--experiments", n, "--calibrate", mode, "--no-progress", "--workers", "0")
            s = scores(root / "reports", n)
            ex = s.get("extra", {})
            rows.append((f"{n} (calibrate {mode})" if a.calibrate else n, s["cv"], ex.get("cv_final_in_sample"),
                         ex.get("cv_final_nested"), ex.get("test_score_before_postprocessing"), s.get("test_score"),
                         json.dumps(ex.get("plan", {}))))
    if len(names) > 1:
        for blend in ("mean", "hill", "optimize"):
            out = kit("predict.py", *paths, "--experiments", ",".join(names), "--blend", blend, "--no-progress",
                      "--workers", "0")
            s = scores(root / "reports", "+".join(names))   # the blend's own report
            ex = s["extra"]
            rows.append((f"{blend} blend", None, ex["cv_final_in_sample"], ex["cv_final_nested"],
                         ex.get("test_score_before_postprocessing"), s.get("test_score"), json.dumps(ex["plan"])))
            print("\n".join(line for line in out.splitlines() if line.startswith("note:")))
    print(f"\n{a.data}, metric {a.metric}, {a.folds} folds, {a.epochs} epochs, wall {time.time() - t0:.0f}s\n")
    print("| submission | CV (raw OOF) | CV in-sample | CV nested | test without post-processing | test | fitted |")
    print("|---|---|---|---|---|---|---|")
    f = lambda x: "" if x is None else f"{x:.5f}"  # noqa: E731
    for r in rows:
        print(f"| {r[0]} | {f(r[1])} | {f(r[2])} | {f(r[3])} | {f(r[4])} | {f(r[5])} | `{r[6]}` |")


if __name__ == "__main__":
    main()
