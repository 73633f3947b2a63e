"""Offline bundle sizes and the runtime estimate against a measured offline run.

Builds the demo competition with its test set enlarged to --test-images (the 360 real test
digits repeated under new ids), makes 5 folds, trains two 5-fold ensembles for one epoch on
--limit rows (the bundle size and the speed do not depend on how well they learned): the demo's
test_resnet and resnet18, both at 32 px. Then, for each ensemble:
  * exports it (fp32 .pt; resnet18 also --half, --safetensors --half and --onnx) and prints
    each bundle's size;
  * compares export's runtime estimate for the test set with predict_offline.py's measured
    prediction time on it (same device, same workers).

    python benchmarks/bench_export.py [--test-images 3600] [--limit 400] [--keep DIR]
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

TRAIN = ["--no-pretrained", "--img-size", "32", "--crop-pct", "1.0", "--no-hflip", "--epochs", "1", "--batch-size",
         "64", "--no-progress", "--workers", "0"]


def kit(script, *args, cwd=None):
    t = time.time()
    r = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=cwd)
    if r.returncode != 0:
        raise SystemExit(f"{script} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout, time.time() - t


def enlarge_test(comp: Path, n: int) -> None:
    """The demo's real test images repeated under new ids until the test set has n rows."""
    sample = pd.read_csv(comp / "sample_submission.csv", dtype=str)
    rows = []
    for k in range(n):
        src = sample.iloc[k % len(sample)]
        new = src["id"] if k < len(sample) else f"{src['id']}r{k // len(sample)}"
        if k >= len(sample):
            shutil.copyfile(comp / "test" / f"{src['id']}.png", comp / "test" / f"{new}.png")
        rows.append({"id": new, "label": src["label"]})
    pd.DataFrame(rows).to_csv(comp / "sample_submission.csv", index=False)
    (comp / "solution.csv").unlink()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--test-images", type=int, default=3600)
    ap.add_argument("--limit", type=int, default=400)
    ap.add_argument("--keep", default="", help="work in this folder and keep it (default: a temporary one)")
    a = ap.parse_args()
    work = Path(a.keep or tempfile.mkdtemp(prefix="bench_export_"))
    work.mkdir(parents=True, exist_ok=True)
    from foldkit import config
    from foldkit.data.demo import build_demo
    from foldkit.folds.file import make_folds
    build_demo(work / "input")
    enlarge_test(work / "input", a.test_images)
    paths = ["--input-dir", str(work / "input"), "--folds-dir", str(work / "folds"), "--models-dir", str(work / "models")]
    make_folds(config.resolve(input_dir=str(work / "input"), folds_dir=str(work / "folds"),
                              models_dir=str(work / "models"), limit=a.limit, n_folds=5), log=lambda *x: None)
    src = REPO / "src"
    for exp, model in (("digits", "test_resnet"), ("resnet18", "resnet18")):
        _, dt = kit(src / "train.py", *paths, *TRAIN, "--model", model, "--fold", "all", "--experiment", exp)
        print(f"trained {exp}: 5 folds x 1 epoch on {a.limit} rows in {dt:.0f}s")
    variants = [("digits", []), ("resnet18", []), ("resnet18", ["--half"]), ("resnet18", ["--safetensors", "--half"]),
                ("resnet18", ["--onnx"])]
    for exp, flags in variants:
        out = work / f"bundle_{exp}{''.join(flags).replace('--', '_')}"
        stdout, dt = kit(src / "export.py", *paths, "--experiments", exp, "--out", str(out), *flags)
        size = re.search(r"^bundle: .*$", stdout, re.M).group(0)
        print(f"export {exp} {' '.join(flags) or '(fp32 .pt)'} in {dt:.0f}s: {size}")
        if not flags:
            est = json.loads((out / "foldkit_bundle.json").read_text())["estimate"]
            print("  " + re.search(r"^runtime estimate: .*$", stdout, re.M).group(0))
            run, dt = kit(out / "predict_offline.py", "--input-dir", str(work / "input"), "--out",
                          str(work / f"sub_{exp}.csv"), cwd=work)
            pred = float(re.search(r"predicted \d+ images in ([\d.]+)s", run).group(1))
            print(f"  measured: predict_offline.py predicted {a.test_images} images in {pred:.1f}s "
                  f"(whole script {dt:.1f}s); estimated {est['seconds_here']:.1f}s "
                  f"(ratio measured/estimated {pred / est['seconds_here']:.2f})")
    print(f"load average (1/5/15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not a.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
