"""Split the competition's training set into stratified CV folds.

    python src/make_folds.py                      # input/ -> folds/train_folds.csv
    python src/make_folds.py --n-folds 10 --group-col patient_id
    python src/make_folds.py --test-like-fold      # fold 0 = the most test-like rows (after audit.py)

Every option: python src/make_folds.py --help (the same command as `foldkit make_folds`).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from foldkit.cli import script  # noqa: E402

main = script("make_folds")            # main(argv=None): the command, as `foldkit make_folds` runs it


if __name__ == "__main__":
    main()
