"""Run the whole kit on the embedded demo competition (scikit-learn's real digits).

    python src/demo.py

Builds input/demo/ (a competition of its own: your data in input/ is never
touched), then runs the pipeline with settings sized for a laptop CPU. All of
the demo's outputs live in demo/ subfolders of folds/, models/, submissions/
and reports/.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from foldkit.config import ROOT  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(ROOT), help="folder holding input/, folds/, models/, "
                   "submissions/, reports/ (default: the repository)")
    args = p.parse_args(argv)
    root = Path(args.root)
    paths = {"input_dir": root / "input" / "demo", "folds_dir": root / "folds" / "demo",
             "models_dir": root / "models" / "demo", "submissions_dir": root / "submissions" / "demo",
             "reports_dir": root / "reports" / "demo"}
    flags = [a for k, v in paths.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    t0 = time.time()

    from foldkit.demo import build_demo
    print(f"[1/2] building the demo competition in {paths['input_dir']}")
    info = build_demo(paths["input_dir"])
    print(f"      {info['train']} train + {info['test']} test images (32x32 PNG), "
          f"{info['written']} file(s) written")

    import make_folds
    print(f"[2/2] making folds -> {paths['folds_dir']}")
    meta = make_folds.main(flags[:6] + ["--n-folds", "5", "--seed", "42"])
    print(f"demo done in {time.time() - t0:.1f}s. Outputs: {paths['folds_dir']}")
    return {"paths": paths, "folds": meta}


if __name__ == "__main__":
    main()
