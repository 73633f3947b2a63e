"""One table of every experiment under models/, best CV first: what to check after every run.

    python src/leaderboard.py                     # print the table
    python src/leaderboard.py --csv board.csv     # also write it as CSV

Every option: python src/leaderboard.py --help (the same command as `foldkit leaderboard`).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from foldkit.cli import script  # noqa: E402

main = script("leaderboard")            # main(argv=None): the command, as `foldkit leaderboard` runs it


if __name__ == "__main__":
    main()
