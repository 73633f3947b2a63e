"""Grad-CAM heatmaps beside the report's gallery images (foldkit.report.gradcam, hand-written on torch hooks)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from foldkit import config
from foldkit.predict.predicting import run_predict
from foldkit.report.predicted import write_reports

pytest.importorskip("torch")
FAST = ["--model", "test_resnet", "--img-size", "32", "--crop-pct", "1.0", "--no-hflip", "--epochs", "1",
        "--no-pretrained", "--batch-size", "32", "--no-progress", "--workers", "0"]


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
    run_predict(cfg, log=lambda *_: None, reports=write_reports)
    rep = tmp_path / "reports" / "cam"
    return (rep / "report.html").read_text(), Image.open(rep / "worst_errors.png").size


def test_the_galleries_carry_a_heatmap_beside_each_image(trained, tmp_path):
    html, (w, h) = report(trained, tmp_path)
    assert "Grad-CAM heatmap of the predicted class" in html
    assert "No class-activation heatmaps" not in html and "foldkit[gradcam]" not in html
    assert w > 1.5 * h   # 4 tiles a row, each image with its heatmap: twice as wide as without


def test_heatmap_is_the_model_input_view_with_a_colour_map(trained):
    import pandas as pd
    from foldkit.report.gradcam import heatmapper
    exp = Path(trained["models_dir"]) / "cam"
    row = next(pd.read_csv(next(exp.glob("oof*0*.csv"))).itertuples(index=False))
    heat, note = heatmapper(exp,
                            lambda i, grey, side: np.full((40, 40, 1 if grey else 3), 128, np.uint8))
    assert note is None
    cam = heat(row)
    assert cam.dtype == np.uint8 and cam.shape == (32, 32, 3)


def test_grad_cam_points_at_the_evidence_of_the_class():
    """A conv model whose channel 0 sees bright pixels and channel 1 nothing in particular; class 1 is
    scored on channel 0, class 0 on channel 1. On an image with one bright square, the map of class 1
    lies on the square; the overlay keeps the image size."""
    import torch
    from foldkit.report.gradcam import grad_cam, overlay, target_layer

    class TwoChannels(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
            with torch.no_grad():
                self.conv.weight.zero_()
                self.conv.weight[0, 0, 1, 1] = 1.0       # channel 0: the pixel itself
                self.conv.bias.copy_(torch.tensor([0.0, 1.0]))   # channel 1: constant

        def forward(self, x):
            f = torch.relu(self.conv(x))
            return torch.stack([f[:, 1].sum((1, 2)), f[:, 0].sum((1, 2))], 1)

    model = TwoChannels().eval()
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 4:8, 2:6] = 1.0
    layer = target_layer(model, x)
    assert layer is model.conv
    cam = grad_cam(model, layer, x, 1)
    assert cam.shape == (16, 16) and cam.min() >= 0 and cam.max() == 1
    assert cam[4:8, 2:6].mean() > 0.9 and cam[10:, 10:].max() < 0.1
    img = overlay(np.full((16, 16, 3), 0.5, np.float32), cam)
    assert img.dtype == np.uint8 and img.shape == (16, 16, 3)
