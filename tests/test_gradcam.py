"""Grad-CAM heatmaps beside the report's gallery images (foldkit.gradcam, optional grad-cam)."""
import builtins
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from foldkit import config
from foldkit.predicting import run_predict

pytest.importorskip("torch")
FAST = ["--model", "test_resnet", "--img-size", "32", "--crop-pct", "1.0", "--no-hflip", "--epochs", "1",
        "--batch-size", "32", "--no-progress", "--workers", "0"]


@pytest.fixture(scope="module")
def trained(digits150, tmp_path_factory):
    """test_resnet trained one epoch on fold 0 of the 150-digit competition (its own models dir)."""
    models = tmp_path_factory.mktemp("gradcam_models")
    paths = {"input_dir": str(digits150 / "in"), "folds_dir": str(digits150 / "folds"), "models_dir": str(models)}
    r = subprocess.run([sys.executable, str(REPO / "src" / "train.py"), "--input-dir", paths["input_dir"],
                        "--folds-dir", paths["folds_dir"], "--models-dir", paths["models_dir"], *FAST,
                        "--fold", "0", "--experiment", "cam"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return paths


def report(paths, tmp_path):
    cfg = config.resolve({**paths, "experiment": "cam", "reports_dir": str(tmp_path / "reports"),
                          "submissions_dir": str(tmp_path / "subs")})
    run_predict(cfg, log=lambda *_: None)
    rep = tmp_path / "reports" / "cam"
    return (rep / "report.html").read_text(), Image.open(rep / "worst_errors.png").size


def test_the_galleries_carry_a_heatmap_beside_each_image(trained, tmp_path):
    pytest.importorskip("pytorch_grad_cam")
    html, (w, h) = report(trained, tmp_path)
    assert "Grad-CAM heatmap of the predicted class" in html
    assert "No class-activation heatmaps" not in html and "foldkit[gradcam]" not in html
    assert w > 1.5 * h   # 4 tiles a row, each image with its heatmap: twice as wide as without


def test_heatmap_is_the_model_input_view_with_a_colour_map(trained):
    pytest.importorskip("pytorch_grad_cam")
    import pandas as pd
    from foldkit.gradcam import heatmapper
    exp = Path(trained["models_dir"]) / "cam"
    row = next(pd.read_csv(next(exp.glob("oof*0*.csv"))).itertuples(index=False))
    heat, note = heatmapper(exp,
                            lambda i, grey, side: np.full((40, 40, 1 if grey else 3), 128, np.uint8))
    assert note is None
    cam = heat(row)
    assert cam.dtype == np.uint8 and cam.shape == (32, 32, 3)


def test_without_grad_cam_the_page_says_how_to_get_it(trained, tmp_path, monkeypatch):
    real = builtins.__import__

    def no_gradcam(name, *a, **kw):
        if name.startswith("pytorch_grad_cam"):
            raise ImportError(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_gradcam)
    html, (w, h) = report(trained, tmp_path)
    assert "pip install &#x27;foldkit[gradcam]&#x27;" in html
    assert "Grad-CAM heatmap of the predicted class" not in html
    assert w < 1.5 * h   # the galleries as they were
