"""Fine-tune a timm backbone on one fold (or several) of the folds file.

    python src/train.py --fold 0
    python src/train.py --fold all --model efficientnet_b0 --pretrained-file weights.pth --epochs 15
    python src/train.py --config exp.toml --fold 0,1
    torchrun --nproc_per_node 4 src/train.py --fold 0           # one fold, data-parallel (DDP)
    python src/train.py --lr-find --model efficientnet_b0 --pretrained-file weights.pth

Every option: python src/train.py --help (the same command as `foldkit train`).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from foldkit.cli import script  # noqa: E402

main = script("train")            # main(argv=None): the command, as `foldkit train` runs it


if __name__ == "__main__":
    main()
