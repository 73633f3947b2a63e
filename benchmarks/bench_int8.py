"""export.py --int8 on this machine: CV of fp32 vs int8 on the OOF rows, their agreement, img/s of ONNX fp32 vs
int8 (and torch, the runtime estimate's measurement), for two competitions trained here:

* digits: the demo (1,437 training digits, 8x8 scans drawn at 32 px, grey), test_resnet from scratch,
  --folds folds x --digits-epochs epochs;
* hymenoptera: ants vs bees photos (../shared/data/hymenoptera, 245 training photos, 153 test), mobilenetv2_100
  from ../shared/weights/mobilenetv2_100_imagenet.pth at 224 px, only its head trained (--freeze-epochs), as
  benchmarks/scenarios/hymenoptera.py does; skipped with a note when the weights are absent.

* bangla: CMATERdb Bangla numerals (../shared/data/cmaterdb/bangla-numerals, numpy arrays, a seeded slice of
  --bangla-rows training and test rows), mobilenetv2_100 from scratch at 64 px, grey, --bangla-epochs epochs.

Each is exported once with --int8 (every figure comes from that one export run, so the ratios compare runs on
the same machine minutes apart), then the int8 bundle's predict_offline.py predicts the test set, pinned to
1 core (taskset -c 0, --threads 1) and on every core (--threads N), with the onnx runner (int8 models) and the
torch runner: each measured run beside the export's estimate for it (manifest `runtime_cpu`).

    python benchmarks/bench_int8.py [--only digits|hymenoptera|bangla] [--keep DIR]
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks" / "scenarios"))

SRC = REPO / "src"


def kit(script, *args, pin=()):
    t = time.time()
    r = subprocess.run([*pin, sys.executable, str(script), *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{script} {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout, time.time() - t


def make_folds(comp: Path, n_folds: int):
    from foldkit import config
    from foldkit.folds.file import make_folds as mf
    mf(config.resolve(input_dir=str(comp / "in"), folds_dir=str(comp / "folds"), models_dir=str(comp / "m"),
                      n_folds=n_folds), log=lambda *a: None)


def case(name: str, comp: Path, train: list[str], export: list[str]) -> dict:
    paths = ["--input-dir", str(comp / "in"), "--folds-dir", str(comp / "folds"), "--models-dir", str(comp / "m")]
    n_folds = pd.read_csv(comp / "folds" / "train_folds.csv")["fold"].nunique()
    if all((comp / "m" / name / f"fold{k}.pt").is_file() for k in range(n_folds)):
        t_train = 0                      # a --keep folder's finished training, reused
    else:
        _, t_train = kit(SRC / "train.py", *paths, *train, "--fold", "all", "--experiment", name, "--no-progress")
    out = comp / "bundle"
    shutil.rmtree(out, ignore_errors=True)   # a --keep folder's earlier bundle
    stdout, t_export = kit(SRC / "export.py", *paths, "--experiments", name, "--out", str(out), "--int8", *export)
    lines = [l for l in stdout.splitlines() if l.startswith(("int8", "runtime estimate", "onnx:"))]
    lines += [l for l in stdout.splitlines() if "test images," in l or l.startswith("probe")]
    man = json.loads((out / "foldkit_bundle.json").read_text())
    runs = offline_runs(out, comp, man["runtime_cpu"])
    return {"case": name, "train_s": round(t_train), "export_s": round(t_export), "lines": lines,
            "int8": man["int8"], "torch_img_per_s": man["estimate"]["img_per_s"], "runtime_cpu": man["runtime_cpu"],
            "offline": runs}


def offline_runs(out: Path, comp: Path, cpu: dict) -> list[dict]:
    """predict_offline.py on 1 core (taskset -c 0, --threads 1) and on all of them, each runner, against the
    export's estimate of its seconds (runtime_cpu: fixed cost + test images / img/s)."""
    n = len(os.sched_getaffinity(0))
    runs = []
    for runner, key in (("onnx", "onnx_int8"), ("torch", "torch")):
        for cores in sorted({1, n}):
            pin = ("taskset", "-c", ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[:cores]))
            off, t_all = kit(out / "predict_offline.py", "--input-dir", str(comp / "in"), "--out",
                             str(comp / f"{runner}{cores}.csv"), "--overwrite", "--runner", runner, "--threads",
                             str(cores), "--workers", "0", "--no-progress", pin=pin)
            dt = float(re.search(r"predicted \d+ images in ([\d.]+)s", off).group(1))
            est = cpu["runners"][key]["cores"][str(cores)]["seconds"]
            runs.append({"runner": key, "cores": cores, "measured_s": dt, "script_s": t_all, "estimated_s": est})
    return runs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", choices=["", "digits", "hymenoptera", "bangla"])
    ap.add_argument("--bangla-rows", type=int, default=1000)
    ap.add_argument("--bangla-epochs", type=int, default=4)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--digits-epochs", type=int, default=6)
    ap.add_argument("--hymenoptera-epochs", type=int, default=3)
    ap.add_argument("--keep", default="", help="work in this folder and keep it (default: a temporary one)")
    a = ap.parse_args()
    work = Path(a.keep or tempfile.mkdtemp(prefix="bench_int8_"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    if a.only in ("", "digits"):
        from foldkit.data.demo import build_demo
        build_demo(work / "digits" / "in")
        make_folds(work / "digits", a.folds)
        results.append(case("digits", work / "digits", [
            "--model", "test_resnet", "--no-pretrained", "--img-size", "32", "--crop-pct", "1.0", "--no-hflip",
            "--epochs", str(a.digits_epochs), "--lr", "3e-3", "--batch-size", "64", "--workers", "0"], []))
    if a.only in ("", "hymenoptera"):
        import hymenoptera
        if not hymenoptera.WEIGHTS_FILE.is_file():
            print(f"note: {hymenoptera.WEIGHTS_FILE} is absent: hymenoptera skipped")
        else:
            hymenoptera.build(REPO.parent / "shared" / "data" / "hymenoptera", work / "hymenoptera" / "in")
            make_folds(work / "hymenoptera", a.folds)
            ep = str(a.hymenoptera_epochs)
            results.append(case("hymenoptera", work / "hymenoptera", [
                "--model", "mobilenetv2_100", "--pretrained-file", str(hymenoptera.WEIGHTS_FILE), "--img-size",
                "224", "--freeze-epochs", ep, "--epochs", ep, "--lr", "3e-2", "--aug", "light", "--batch-size", "16",
                "--workers", "0"], ["--tta", "none"]))
    if a.only in ("", "bangla"):
        import bangla
        bangla.build(REPO.parent / "shared" / "data" / bangla.RAW_SUBDIR, work / "bangla" / "in", limit=a.bangla_rows)
        make_folds(work / "bangla", a.folds)
        results.append(case("bangla", work / "bangla", [
            "--model", "mobilenetv2_100", "--no-pretrained", "--img-size", "64", "--crop-pct", "1.0", "--aug", "none",
            "--no-hflip", "--epochs", str(a.bangla_epochs), "--lr", "3e-3", "--batch-size", "64", "--workers", "0"],
            ["--tta", "none"]))
    for r in results:
        report(r)
    (work / "results.json").write_text(json.dumps(results, indent=1, default=str))


def report(r: dict) -> None:
    q, cpu = r["int8"], r["runtime_cpu"]
    print(f"\n== {r['case']} (trained in {r['train_s']}s, exported in {r['export_s']}s)")
    for line in r["lines"]:
        print("  " + line)
    print(f"  torch (estimate's measurement) {r['torch_img_per_s']:.1f} img/s; settings {q['settings']}")
    n = str(cpu["cores_here"])
    print(f"  img/s on {n} cores, models only, one export run: " + " | ".join(
        f"{k} {v['cores'][n]['models_img_per_s']:.1f}" for k, v in cpu["runners"].items()))
    for o in r["offline"]:
        print(f"  offline {o['runner']} on {o['cores']} core(s): predicted in {o['measured_s']:.1f}s (script "
              f"{o['script_s']:.1f}s); export estimated {o['estimated_s']:.1f}s (measured/estimated "
              f"{o['measured_s'] / o['estimated_s']:.2f})")


if __name__ == "__main__":
    main()
