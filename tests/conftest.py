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
    from foldkit.demo import digit_images
    return digit_images(32)
