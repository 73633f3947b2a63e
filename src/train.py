"""Fine-tune a timm backbone on one fold (or several) of the folds file.

    python src/train.py --fold 0
    python src/train.py --fold all --model efficientnet_b0 --pretrained-file weights.pth --epochs 15
    python src/train.py --config exp.toml --fold 0,1

Trains on the other folds, validates on this one every epoch, keeps the best
epoch by --metric, and writes models/<experiment>/: fold{k}.pt (best, self-
describing), oof_fold{k}.csv, log_fold{k}.csv, curve_fold{k}.png. A killed run
resumes from its last epoch when started again.

More devices (README "More GPUs"):
    torchrun --nproc_per_node 4 src/train.py --fold 0           # one fold, data-parallel (DDP)
    python src/train.py --fold all --devices 0,1,2,3             # one fold per GPU, side by side

Under torchrun --batch-size is the global batch (each process takes its share).

Learning rate (README "Learning rate"): a range test on fold 0 with the same settings, no training:
    python src/train.py --lr-find --model efficientnet_b0 --pretrained-file weights.pth
prints the suggested --lr and writes models/lr_find/<experiment>/lr_find.csv and lr_find.png.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from foldkit import config  # noqa: E402
from foldkit.errors import cli_run  # noqa: E402


def main(argv=None) -> list:
    parser = config.build_parser(["paths", "data", "train"], description=__doc__,
                                 prog="train.py", extra=("seed",))
    args = parser.parse_args(argv)
    return cli_run(lambda: run(config.resolve(args)))


def run(cfg) -> list:
    if cfg.lr_find:
        from foldkit.train.lrfind import lr_find
        result = lr_find(cfg)
        print(result.line())
        print(f"plot: {result.plot} (losses: {result.csv})")
        return [result]
    from foldkit.oof import score_text
    from foldkit.report.html import report_writer
    from foldkit.runtime import distributed
    from foldkit.train.fit import train
    with distributed.rank_in_errors():
        results = train(cfg, report=report_writer(cfg.reports_dir))
    main = distributed.is_main()       # under torchrun, rank 0 alone prints
    distributed.shutdown()
    for r in results if main else []:
        print(f"fold {r['fold']}: best {r['metric']} {score_text(r['value'])} at epoch {r['best_epoch']} "
              f"({r['epochs_run']} epochs, {r['seconds']}s)")
    return results

if __name__ == "__main__":
    main()
