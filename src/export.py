"""Write an offline inference bundle of an ensemble for Kaggle code competitions.

    python src/export.py --experiments a,b --out bundle/          # checkpoints, wheel, script, notebook
    python src/export.py --onnx --half --test-images 50000        # + ONNX, fp16 weights, estimate for 50k
    python src/export.py --int8 --max-cv-drop 0.005              # + int8 ONNX for a CPU, scored on the OOF
    python src/export.py --push me/my-bundle --kernel me/my-notebook --competition SLUG   # + onto Kaggle

Every option: python src/export.py --help (the same command as `foldkit export`).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from foldkit.cli import script  # noqa: E402

main = script("export")            # main(argv=None): the command, as `foldkit export` runs it


if __name__ == "__main__":
    main()
