"""One table of every experiment under models/, best CV first: what to check after every run.

    python src/leaderboard.py                     # print the table
    python src/leaderboard.py --csv board.csv     # also write it as CSV

Columns: experiment, model, image size, the settings that differ between experiments, folds
finished, CV on all OOF rows (and mean ± std across folds) in each experiment's metric, training
time, and the submissions made from the experiment (file and CV).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from foldkit import config  # noqa: E402
from foldkit.errors import cli_run  # noqa: E402


def main(argv=None):
    parser = config.build_parser(["paths", "leaderboard"], description=__doc__, prog="leaderboard.py")
    args = parser.parse_args(argv)
    return cli_run(lambda: run(config.resolve(args)))


def run(cfg):
    from foldkit.io import atomic_write_with
    from foldkit.search.leaderboard import format_table, leaderboard
    df = leaderboard(cfg.models_dir, cfg.submissions_dir)
    print(format_table(df))
    if cfg.csv:
        atomic_write_with(Path(cfg.csv), lambda tmp: df.to_csv(tmp, index=False, lineterminator="\n"))
        print(f"written: {cfg.csv}")
    return df

if __name__ == "__main__":
    main()
