"""Audit the competition before any training: duplicates, train/test copies, image statistics.

    python src/audit.py                       # input/ -> reports/audit/audit.html + CSVs + PNGs
    python src/audit.py --near-threshold 6    # looser near-duplicate matching
    python src/audit.py --embed-weights mobilenetv2_100.pth   # + mirrored/cropped/recoloured copies, shift

Never modifies the competition and never downloads (unless --embed-weights hub). Hashes and
embeddings are cached in the audit folder, so a second run is quick; make_folds.py then keeps
every duplicate cluster inside one fold.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from foldkit import config  # noqa: E402
from foldkit.errors import cli_run  # noqa: E402


def main(argv=None) -> dict:
    parser = config.build_parser(["paths", "data", "audit"], description=__doc__.split("\n\n")[0],
                                 prog="audit.py")
    args = parser.parse_args(argv)
    return cli_run(lambda: run(config.resolve(args)))


def run(cfg) -> dict:
    import time

    from foldkit.audit.run import run_audit, summary_text
    t0 = time.time()
    summary = run_audit(cfg)
    print(summary_text(summary))
    print(f"{summary['paths']['html']} ({time.time() - t0:.1f} s)")
    return summary

if __name__ == "__main__":
    main()
