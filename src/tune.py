"""Search learning settings on the folds with Optuna: every trial is a normal experiment in models/.

    python src/tune.py --n-trials 20                       # --space quick: lr, weight decay, augmentation
    python src/tune.py --config search.toml                # a [search_space] table of ranges

Every option: python src/tune.py --help (the same command as `foldkit tune`).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from foldkit.cli import script  # noqa: E402

main = script("tune")            # main(argv=None): the command, as `foldkit tune` runs it


if __name__ == "__main__":
    main()
