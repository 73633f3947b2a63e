"""Download a list of image URLs into a competition folder the kit reads unchanged.

    python src/download.py urls.csv --out input/birds
    python src/download.py urls/ --out input/birds --layout folders

Every option: python src/download.py --help (the same command as `foldkit download`).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from foldkit.cli import script  # noqa: E402

main = script("download")         # main(argv=None): the command, as `foldkit download` runs it


if __name__ == "__main__":
    main()
