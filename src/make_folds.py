"""Split the competition's training set into stratified CV folds.

    python src/make_folds.py                      # input/ -> folds/train_folds.csv
    python src/make_folds.py --n-folds 10 --group-col patient_id
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from foldkit import config  # noqa: E402


def main(argv=None) -> dict:
    parser = config.build_parser(["paths", "data", "folds"], description=__doc__.split("\n\n")[0],
                                 prog="make_folds.py")
    cfg = config.resolve(parser.parse_args(argv))
    import pandas as pd

    from foldkit.data import InputError
    from foldkit.folds import FoldsError, make_folds
    try:
        meta = make_folds(cfg)
    except (InputError, FoldsError) as e:
        raise SystemExit(f"error: {e}")
    with pd.option_context("display.max_columns", 30, "display.width", 160):
        print(meta["counts"].to_string())
    where = Path(cfg.folds_dir) / "train_folds.csv"
    print(f"{meta['layout']} layout, {meta['rows']} rows, {len(meta['classes'])} classes, "
          f"{meta['n_folds']} folds ({meta['splitter']}, seed {meta['seed']})"
          + (f", limited from {meta['rows_read']} rows" if cfg.limit else ""))
    print(f"{where}: {meta['status']} (sha256 {meta['sha256'][:12]})")
    return meta


if __name__ == "__main__":
    main()
