"""Class-activation heatmaps (Grad-CAM) for the report's image galleries.

The worst errors and the suspected label errors are drawn with a Grad-CAM heatmap beside each
image: the checkpoint of the image's own OOF fold (the model that predicted it without seeing
it), the image prepared exactly as predict prepares it (images.prepare_image / preparation, then
augment.eval_transform), the map of the predicted class (multi-label: the tag the row is shown for)
overlaid on the model's input view. Any error becomes a one-line note on the page, never a failed predict.

Grad-CAM itself (`grad_cam`, `overlay`) is hand-written (Selvaraju et al. 2017: the target layer's
activations weighted by the spatial mean of their gradients, ReLU, upsampled): the grad-cam package
would do it, but it requires opencv-python-headless, which installs the same `cv2` module as the
opencv-python the kit requires, so the two cannot be installed side by side.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from foldkit.data.augment import eval_transform
from foldkit.data.images import preparation
from foldkit.experiment import Experiment
from foldkit.runtime.model import load_checkpoint, model_from_checkpoint


class HeatmapError(Exception):
    pass


def target_layer(model, x):
    """The module whose output is the model's last 4-D (N, C, H, W) activation on input x.

    Found by running x once with a forward hook on every module, not by name: timm's families
    name their last feature stage differently (layer4, stages, blocks, conv_head, features...),
    while the last module to produce a spatial map is always the final feature map Grad-CAM
    weighs; anything after it (global pool, head) is 2-D. None when there is no such module
    (a transformer's tokens are 3-D), so the caller can say so instead of drawing noise."""
    import torch

    last = []
    hooks = [m.register_forward_hook(lambda mod, _i, out: last.append(mod)
                                     if torch.is_tensor(out) and out.ndim == 4 else None)
             for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return last[-1] if last else None


def grad_cam(model, layer, x, k: int) -> np.ndarray:
    """The (H, W) Grad-CAM map in [0, 1] of output k for the one image of batch x, at x's size."""
    import cv2
    import torch

    seen = {}

    def keep(_mod, _inp, out):
        seen["act"] = out
        out.register_hook(lambda g: seen.__setitem__("grad", g))

    hook = layer.register_forward_hook(keep)
    try:
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            model(x.clone().requires_grad_(True))[0, k].backward()
    finally:
        hook.remove()
    act, grad = seen["act"][0].detach(), seen["grad"][0].detach()
    cam = torch.relu((grad.mean((1, 2))[:, None, None] * act).sum(0)).float().numpy()
    cam = cv2.resize(cam, (x.shape[-1], x.shape[-2]), interpolation=cv2.INTER_LINEAR)
    span = cam.max() - cam.min()
    return (cam - cam.min()) / span if span > 0 else np.zeros_like(cam)


def overlay(view: np.ndarray, mask: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """An RGB view in [0, 1] with the map drawn over it in the JET colour map, as uint8."""
    import cv2
    heat = cv2.applyColorMap(np.uint8(255 * mask), cv2.COLORMAP_JET)[:, :, ::-1].astype(np.float32) / 255
    out = (1 - image_weight) * heat + image_weight * view
    return np.uint8(255 * out / out.max())


def heatmapper(exp_dir: str | Path, prepare: Callable) -> tuple[Callable | None, str | None]:
    """(heatmap, note): heatmap(row) -> HxWx3 uint8 overlay for a gallery row (id, fold, pred),
    prepare(id, grey, side) -> the image as predict prepares it. The note is for a model whose map
    cannot be drawn. One model per fold is loaded on first use (CPU) and kept."""
    import torch

    exp, models = Experiment(exp_dir), {}

    def fold_model(fold: int):
        if fold not in models:
            ckpt = load_checkpoint(exp.checkpoint(fold))
            model = model_from_checkpoint(ckpt).eval()
            dc = ckpt["data_config"]
            models[fold] = (model, ckpt, preparation(ckpt["in_chans"], dc), eval_transform(dc), None)
        return models[fold]

    def heatmap(row) -> np.ndarray:
        model, ckpt, (grey, side), tf, layer = fold_model(int(row.fold))
        img = np.asarray(prepare(row.id, grey, side))
        if img.ndim == 2:
            img = img[:, :, None]
        x = tf(torch.from_numpy(np.array(img)).permute(2, 0, 1))[None].float()   # a writable copy
        if layer is None:
            layer = target_layer(model, x)
            if layer is None:
                raise HeatmapError(f"{ckpt['model_name']} has no convolutional feature map for Grad-CAM "
                                   "(its last features are not 4-D)")
            models[int(row.fold)] = (model, ckpt, (grey, side), tf, layer)
        classes = [str(c) for c in ckpt["classes"]]
        mask = grad_cam(model, layer, x, classes.index(str(row.pred)) if classes else 0)
        dc = ckpt["data_config"]
        mean = np.asarray(dc.get("mean", (0.0,)), dtype=np.float32)
        std = np.asarray(dc.get("std", (1.0,)), dtype=np.float32)
        view = np.clip(x[0].permute(1, 2, 0).numpy() * std + mean, 0, 1)     # the model's input, back to [0, 1]
        if view.shape[2] == 1:
            view = np.repeat(view, 3, axis=2)
        return overlay(view.astype(np.float32), mask)

    return heatmap, None
