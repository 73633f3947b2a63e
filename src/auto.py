"""The strongest honest submission within a time budget, every step a normal experiment.

    python src/auto.py --hours 2
    python src/auto.py --hours 8 --portfolio convnext_tiny,efficientnet_b2,resnet50 --pretrained

Every option: python src/auto.py --help (the same command as `foldkit auto`).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from foldkit.cli import script  # noqa: E402

main = script("auto")            # main(argv=None): the command, as `foldkit auto` runs it


if __name__ == "__main__":
    main()
