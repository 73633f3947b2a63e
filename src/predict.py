"""Ensemble the finished folds of an experiment into a validated submission and a CV report.

    python src/predict.py                          # latest experiment -> submissions/, reports/
    python src/predict.py --experiments a,b        # cross-model ensemble
    python src/predict.py --image photo.jpg        # top-k classes of one image (path or URL)
    python src/predict.py --submit COMPETITION     # also upload with the kaggle CLI

Models are rebuilt from their checkpoints alone (no network, no config file),
each test image is decoded once for all folds and TTA views, and the
submission takes the exact shape of sample_submission.csv. Its file name
carries the experiment and CV score; an existing file is never overwritten.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from foldkit import config  # noqa: E402
from foldkit.errors import cli_run  # noqa: E402


def main(argv=None):
    parser = config.build_parser(["paths", "data", "predict"], description=__doc__, prog="predict.py",
                                 extra=("batch_size", "device", "amp", "channels_last", "workers", "progress"))
    args = parser.parse_args(argv)
    return cli_run(lambda: run(config.resolve(args)))


def run(cfg):
    from foldkit.predict.predicting import predict_image, run_predict
    if cfg.image:
        return predict_image(cfg)
    from foldkit.report.predicted import write_reports
    return run_predict(cfg, reports=write_reports)

if __name__ == "__main__":
    main()
