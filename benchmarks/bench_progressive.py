"""Progressive resizing (--img-size-schedule) against training at one size, side by side in one run,
through the real CLIs: hymenoptera photos (folder per class, 245 training photos, the 153 validation
photos as a labelled test set), the ImageNet mobilenetv2_100 of ../shared/weights fine-tuned at
--img-size, fold 0 of 5, the same seed; one run per schedule given.

    python benchmarks/bench_progressive.py --img-size 128 --epochs 6 --schedules "" "64:3" "64:2,96:2"

Prints per run: the fold's training seconds (fold0.json), the best validation accuracy (fold 0), the
test accuracy of fold 0's checkpoint (predict.py on the labelled test folder) and the ratio of seconds
to the one-size run.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks" / "scenarios"))
SHARED = REPO.parent / "shared"


def sh(*cmd) -> str:
    r = subprocess.run([sys.executable, *map(str, cmd)], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stderr[-3000:]}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--img-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--schedules", nargs="*", default=["", "64:3"])
    a = ap.parse_args()
    import hymenoptera
    weights = SHARED / "weights" / "mobilenetv2_100_imagenet.pth"
    root = Path(tempfile.mkdtemp(prefix="foldkit-progressive-"))
    comp = hymenoptera.build(SHARED / "data" / "hymenoptera", root / "input")
    dirs = ["--input-dir", comp, "--folds-dir", root / "folds", "--models-dir", root / "models",
            "--cache-dir", root / "cache", "--submissions-dir", root / "subs", "--reports-dir", root / "reports"]
    sh(REPO / "src" / "make_folds.py", *dirs)
    recipe = ["--model", "mobilenetv2_100", "--pretrained-file", weights, "--img-size", a.img_size, "--epochs",
              a.epochs, "--lr", "1e-3", "--batch-size", "32", "--no-progress", "--fold", "0"]
    sh(REPO / "src" / "train.py", *dirs, *recipe, "--epochs", 1, "--experiment", "warm")   # builds the store
    base = None
    print(f"hymenoptera fold 0, mobilenetv2_100 (ImageNet) at {a.img_size} px, {a.epochs} epochs")
    for i, schedule in enumerate(a.schedules):
        name = f"p{i}"
        extra = ["--img-size-schedule", schedule] if schedule else []
        t0 = time.perf_counter()
        sh(REPO / "src" / "train.py", *dirs, *recipe, *extra, "--experiment", name)
        wall = time.perf_counter() - t0
        info = json.loads((root / "models" / name / "fold0.json").read_text())
        out = sh(REPO / "src" / "predict.py", *dirs, "--experiments", name, "--no-progress")
        test = next((ln for ln in out.splitlines() if "test" in ln.lower() and "accuracy" in ln.lower()), "")
        base = base or info["seconds"]
        print(f"schedule {schedule or '(one size)':12s}: {info['seconds']:6.1f} s in the fold "
              f"({info['seconds'] / base:.2f}x), {wall:6.1f} s wall; valid accuracy {info['value']:.4f}; {test.strip()}")


if __name__ == "__main__":
    main()
