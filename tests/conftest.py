import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
sys.path.insert(0, str(SRC))
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
WEIGHTS = SHARED / "weights"

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")   # the suite never downloads: a run that needs the hub says so in one line


def need_shared(*parts: str) -> Path:
    """Path under the shared data folder, or skip the test with the reason."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data {'/'.join(parts)} not present beside the repository")
    return p


def write_png(path: Path, img: np.ndarray) -> Path:
    import cv2
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix or ".png", img)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


@pytest.fixture
def digits_32():
    from foldkit.data.demo import digit_images
    return digit_images(32)


@pytest.fixture(scope="session")
def digits150(tmp_path_factory):
    """150 real digits of the demo competition in the CSV layout (train, test images, sample submission),
    3 stratified folds: the small competition tune, cluster and auto tests train on (never written to)."""
    from foldkit import config
    from foldkit.data.demo import build_demo
    from foldkit.folds.file import make_folds
    root = tmp_path_factory.mktemp("digits150")
    build_demo(root / "in")
    make_folds(config.resolve({"input_dir": str(root / "in"), "folds_dir": str(root / "folds"),
                               "models_dir": str(root / "m0"), "limit": 150, "n_folds": 3}), log=lambda *_: None)
    return root
