"""Search learning settings on the folds with Optuna: every trial is a normal experiment in models/.

    python src/tune.py --n-trials 20                       # --space quick: lr, weight decay, augmentation
    python src/tune.py --space standard --tune-folds 0,1,2 --holdout-fold 4 --epochs 8
    python src/tune.py --config search.toml                # a [search_space] table of ranges
    python src/tune.py --storage postgresql+psycopg://user:pw@host/db   # the same command on many machines

A trial trains the first --tune-folds fold reporting each epoch's metric (the pruner stops bad trials
there), then the others; its value is the CV on them. The study lives in models/tune.db (SQLite) unless
--storage says otherwise: start the command again (or on another machine with a shared --storage) and it
continues. optuna-dashboard sqlite:///models/tune.db shows it. Needs the `tune` extra (pip install
-e '.[tune]'; '.[postgres]' adds the PostgreSQL driver).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from foldkit import config  # noqa: E402
from foldkit.errors import cli_run  # noqa: E402


def main(argv=None):
    parser = config.build_parser(["paths", "data", "train", "tune"], description=__doc__, prog="tune.py",
                                 extra=("seed",))
    args = parser.parse_args(argv)
    return cli_run(lambda: run(args))


def run(args):
    try:
        import optuna  # noqa: F401
    except ImportError:
        from foldkit.search.tune import TuneError
        raise TuneError("tune.py needs Optuna: pip install -e '.[tune]'") from None
    from foldkit.search.tune import read_space_table, tune
    table = read_space_table(getattr(args, "config", None))
    return tune(config.resolve(args), space_table=table)


if __name__ == "__main__":
    main()
