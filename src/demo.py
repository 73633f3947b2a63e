"""Run the whole kit on the embedded demo competition (scikit-learn's real digits).

    python src/demo.py

Builds input/demo/ (a competition of its own: your data in input/ is never
touched), then runs the pipeline with settings sized for a laptop CPU. All of
the demo's outputs live in demo/ subfolders of folds/, models/, cache/, submissions/
and reports/.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from foldkit.config import ROOT  # noqa: E402


# Sized for a laptop CPU: a tiny timm ResNet on the 32x32 grey digits, the Keras augmentation
# recipe without flips (a flipped 2 is not a 2), 30 epochs: about 2.5 minutes on 2 cores.
DEMO_EXPERIMENT = "digits-test_resnet"
DEMO_TRAIN = ["--model", "test_resnet", "--img-size", "32", "--crop-pct", "1.0", "--aug", "medium",
              "--no-hflip", "--epochs", "30", "--lr", "3e-3", "--batch-size", "64"]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(ROOT), help="folder holding input/, folds/, models/, cache/, "
                   "submissions/, reports/ (default: the repository)")
    args = p.parse_args(argv)
    root = Path(args.root)
    paths = {"input_dir": root / "input" / "demo", "folds_dir": root / "folds" / "demo",
             "models_dir": root / "models" / "demo", "cache_dir": root / "cache" / "demo",
             "submissions_dir": root / "submissions" / "demo",
             "reports_dir": root / "reports" / "demo"}
    flags = [a for k, v in paths.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    t0 = time.time()

    from foldkit.data.demo import build_demo
    print(f"[1/4] building the demo competition in {paths['input_dir']}")
    info = build_demo(paths["input_dir"])
    print(f"      {info['train']} train + {info['test']} test images (32x32 PNG), "
          f"{info['written']} file(s) written")

    import make_folds
    print(f"[2/4] making folds -> {paths['folds_dir']}")
    meta = make_folds.main(flags[:6] + ["--n-folds", "5", "--seed", "42"])

    import train
    print(f"[3/4] training 5 folds -> {paths['models_dir'] / DEMO_EXPERIMENT}")
    t1 = time.time()
    folds = train.main(flags[:8] + DEMO_TRAIN + ["--experiment", DEMO_EXPERIMENT, "--fold", "all"])
    t_train = time.time() - t1
    import numpy as np
    mean = np.mean([f["value"] for f in folds])
    print(f"trained 5 folds in {t_train:.0f}s; fold accuracy {mean:.4f} (mean)")

    import predict
    print(f"[4/4] fold ensemble -> {paths['submissions_dir']}, report -> {paths['reports_dir'] / DEMO_EXPERIMENT}")
    pred = predict.main(flags + ["--experiments", DEMO_EXPERIMENT])
    print(f"\ndemo done in {time.time() - t0:.1f}s")
    print(f"  CV accuracy (out-of-fold, 5 folds): {pred['cv']:.4f}")
    print(f"  demo test accuracy (fold ensemble, {pred['test_rows']} held-out images): {pred['test_accuracy']:.4f}")
    print(f"  submission: {pred['submission']}")
    print(f"  report:     {paths['reports_dir'] / DEMO_EXPERIMENT / 'report.html'}")
    return {"paths": paths, "folds": meta, "train": folds, "train_seconds": t_train, "predict": pred}


if __name__ == "__main__":
    main()
