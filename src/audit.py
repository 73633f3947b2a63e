"""Audit the competition before any training: duplicates, train/test copies, image statistics.

    python src/audit.py                       # input/ -> reports/audit/audit.html + CSVs + PNGs
    python src/audit.py --near-threshold 6    # looser near-duplicate matching
    python src/audit.py --embed-weights mobilenetv2_100.pth   # + mirrored/cropped/recoloured copies, shift

Never modifies the competition and never downloads (unless --embed-weights hub). Hashes and
embeddings are cached in the audit folder, so a second run is quick; make_folds.py then keeps
every duplicate cluster inside one fold.

Every option: python src/audit.py --help (the same command as `foldkit audit`).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from foldkit.cli import script  # noqa: E402

main = script("audit")            # main(argv=None): the command, as `foldkit audit` runs it


if __name__ == "__main__":
    main()
