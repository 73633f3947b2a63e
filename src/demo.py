"""Run the whole kit on the embedded demo competition (scikit-learn's real digits).

    python src/demo.py

Its outputs live in demo/ subfolders of folds/, models/, cache/, submissions/ and reports/.

Every option: python src/demo.py --help (the same command as `foldkit demo`).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from foldkit.cli import script  # noqa: E402

main = script("demo")            # main(argv=None): the command, as `foldkit demo` runs it


if __name__ == "__main__":
    main()
