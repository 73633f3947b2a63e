"""Split the competition's training set into stratified CV folds.

    python src/make_folds.py                      # input/ -> folds/train_folds.csv
    python src/make_folds.py --n-folds 10 --group-col patient_id
    python src/make_folds.py --test-like-fold      # fold 0 = the most test-like rows (after audit.py)
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from foldkit import config  # noqa: E402
from foldkit.errors import cli_run  # noqa: E402


def main(argv=None) -> dict:
    parser = config.build_parser(["paths", "data", "folds"], description=__doc__.split("\n\n")[0],
                                 prog="make_folds.py", extra=("audit_dir", "near_threshold"))
    args = parser.parse_args(argv)
    return cli_run(lambda: run(config.resolve(args)))


def run(cfg) -> dict:
    from foldkit.folds.file import make_folds
    meta = make_folds(cfg)
    print(meta["counts_text"])
    where = Path(cfg.folds_dir) / "train_folds.csv"
    kind = {"single": f"{len(meta['classes'])} classes",
            "multilabel": f"multi-label, {len(meta['classes'])} labels (tags separated by {meta.get('label_sep')!r})",
            "regression": "regression target"}[meta["task"]]
    print(f"{meta['layout']} layout, {meta['rows']} rows, {kind}, "
          f"{meta['n_folds']} folds ({meta['splitter']}, seed {meta['seed']})"
          + (f", limited from {meta['rows_read']} rows" if cfg.limit else ""))
    dup = meta.get("duplicates") or {}
    print(f"duplicate clusters kept inside one fold: {dup['clusters_grouped']} ({dup['source']})"
          if dup.get("grouped") else f"duplicates not grouped: {dup.get('reason', 'off')}")
    if tl := meta.get("test_like"):
        print(f"fold 0 is test-like: the {tl['rows']} most test-like training rows (mean p_test {tl['mean_p_test']:.3f}, "
              f"other folds {tl['mean_p_test_other_folds']:.3f}; adversarial AUC {tl['adversarial_auc']:.3f}, "
              f"{tl['source']}); train.py --fold 0 scores a test-like validation set")
    print(f"{where}: {meta['status']} (sha256 {meta['sha256'][:12]})")
    return meta

if __name__ == "__main__":
    main()
