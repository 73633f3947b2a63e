"""Ensemble the finished folds of an experiment into a validated submission and a CV report.

    python src/predict.py                          # latest experiment -> submissions/, reports/
    python src/predict.py --experiments a,b        # cross-model ensemble
    python src/predict.py --image photo.jpg        # top-k classes of one image (path or URL)
    python src/predict.py --submit COMPETITION     # also upload with the kaggle CLI

Every option: python src/predict.py --help (the same command as `foldkit predict`).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from foldkit.cli import script  # noqa: E402

main = script("predict")            # main(argv=None): the command, as `foldkit predict` runs it


if __name__ == "__main__":
    main()
