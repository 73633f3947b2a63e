"""--aug-device cpu against device, side by side through the real train.py (input path + training step).

Two cases, one run of each setting, the training img/s of each epoch read from log_fold0.csv (the kit's
own figure: the loader, the augmentation, the forward/backward and the optimizer step):

* digits: the demo competition (real 32 px digits), test_resnet, 32 px, batch 64, --aug light, 3 epochs
* hymenoptera: ants vs bees photos (../shared/data/hymenoptera), the ImageNet mobilenetv2_100 of
  ../shared/weights, 128 px, batch 32, --aug light, 1 epoch (6 batches of fold 0's training part)

    OMP_NUM_THREADS=1 python benchmarks/bench_batchaug.py            # CPU, minutes
    python benchmarks/bench_batchaug.py --device cuda
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks" / "scenarios"))


def train(comp: Path, models: Path, aug_device: str, args: list[str]) -> pd.DataFrame:
    cmd = [sys.executable, str(REPO / "src" / "train.py"), "--input-dir", str(comp / "in"), "--folds-dir",
           str(comp / "folds"), "--models-dir", str(models), "--experiment", aug_device, "--fold", "0",
           "--no-progress", "--aug", "light", "--aug-device", aug_device, *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr)
    return pd.read_csv(models / aug_device / "log_fold0.csv")


def make_folds(comp: Path, limit: int = 0) -> None:
    subprocess.run([sys.executable, str(REPO / "src" / "make_folds.py"), "--input-dir", str(comp / "in"),
                    "--folds-dir", str(comp / "folds"), "--models-dir", str(comp / "m0"),
                    *(["--limit", str(limit)] if limit else [])], check=True, capture_output=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    from foldkit.data.demo import build_demo
    import hymenoptera
    cases = {"digits": ["--model", "test_resnet", "--no-pretrained", "--img-size", "32", "--crop-pct", "1.0",
                        "--no-hflip", "--batch-size", "64", "--epochs", "3", "--workers", "0"],
             "hymenoptera": ["--model", "mobilenetv2_100", "--pretrained-file", str(hymenoptera.WEIGHTS_FILE),
                             "--img-size", "128", "--batch-size", "32", "--epochs", "1", "--workers", "0"]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_demo(tmp / "digits" / "in")
        make_folds(tmp / "digits")
        hymenoptera.build(REPO.parent / "shared" / "data" / "hymenoptera", tmp / "hymenoptera" / "in")
        make_folds(tmp / "hymenoptera")
        for name, extra in cases.items():
            for aug_device in ("cpu", "device"):
                log = train(tmp / name, tmp / name / "m", aug_device, extra + ["--device", args.device])
                print(f"{name:12s} --aug-device {aug_device:6s}: img/s per epoch {log['img_per_s'].tolist()}, "
                      f"valid accuracy {log['valid_accuracy'].round(4).tolist()}", flush=True)


if __name__ == "__main__":
    main()
