"""The strongest honest submission within a time budget, every step a normal experiment.

    python src/auto.py --hours 2
    python src/auto.py --hours 8 --portfolio convnext_tiny,efficientnet_b2,resnet50 --pretrained

Measures each --portfolio backbone's training speed on this device, keeps those whose time on every
fold fits the budget (in order; fewer epochs for the first when none fits at --epochs), trains them on
all folds, then runs predict.py's path on them: blend fitted on the OOF (nested CV), submission, report.
A budget too small for one epoch of the fastest candidate on every fold stops at once with one line
saying the hours it needs. 20% of the budget is kept for prediction.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from foldkit import config  # noqa: E402
from foldkit.errors import cli_run  # noqa: E402


def main(argv=None):
    parser = config.build_parser(["paths", "data", "train", "auto"], description=__doc__, prog="auto.py",
                                 extra=("seed", "tta", "ensemble", "submission_mode", "calibrate", "thresholds",
                                        "report", "submit"))
    args = parser.parse_args(argv)
    return cli_run(lambda: run(config.resolve(args)))


def run(cfg):
    from foldkit.search.auto import run_auto
    return run_auto(cfg)


if __name__ == "__main__":
    main()
