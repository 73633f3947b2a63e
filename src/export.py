"""Write an offline inference bundle of an ensemble for Kaggle code competitions.

    python src/export.py --experiments a,b --out bundle/          # checkpoints, wheel, script, notebook
    python src/export.py --onnx --half --test-images 50000        # + ONNX, fp16 weights, estimate for 50k
    kaggle datasets create -p bundle/ --dir-mode tar              # then upload it as a Kaggle dataset

The bundle applies the plan predict.py submits with for the same flags (--ensemble, --blend,
--calibrate, --thresholds, --clip, --tta, --submission-mode). It holds everything inference needs with no network (predict_offline.py finds the
competition under /kaggle/input and writes a validated submission.csv) and a runtime estimate
measured on this device; --time-budget warns when the ensemble will not fit.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from foldkit import config  # noqa: E402
from foldkit.errors import cli_run  # noqa: E402


def main(argv=None):
    parser = config.build_parser(["paths", "data", "export"], description=__doc__, prog="export.py",
                                 extra=("experiments", "tta", "ensemble", "submission_mode", "blend", "calibrate",
                                        "thresholds", "clip", "batch_size", "device", "amp", "channels_last", "workers"))
    args = parser.parse_args(argv)
    return cli_run(lambda: run(config.resolve(args)))


def run(cfg):
    from foldkit.export.build import export_bundle
    return export_bundle(cfg)

if __name__ == "__main__":
    main()
