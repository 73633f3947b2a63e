"""Stack image experiments' OOF predictions with the table's columns in gradient-boosted trees.

    python src/stack.py                                 # every experiment trained on all folds + every column
    python src/stack.py --experiments a,b --features area,zipcode:cat --seeds 3

Every option: python src/stack.py --help (the same command as `foldkit stack`).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from foldkit.cli import script  # noqa: E402

main = script("stack")            # main(argv=None): the command, as `foldkit stack` runs it


if __name__ == "__main__":
    main()
