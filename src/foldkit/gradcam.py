"""Class-activation heatmaps (Grad-CAM) for the report's image galleries.

The worst errors and the suspected label errors are drawn with a Grad-CAM heatmap beside each
image: the checkpoint of the image's own OOF fold (the model that predicted it without seeing
it), the image prepared exactly as predict prepares it (images.prepare_image / preparation, then
augment.eval_transform), the map of the predicted class overlaid on the model's input view.
``grad-cam`` (pytorch_grad_cam) is an optional extra: ``pip install 'foldkit[gradcam]'``. Without
it `heatmapper` returns no function and a sentence for the page; any later error becomes a note.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

INSTALL_HINT = "pip install 'foldkit[gradcam]'"
MISSING = f"Class-activation heatmaps need the grad-cam package: {INSTALL_HINT}"


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


def heatmapper(exp_dir: str | Path, prepare: Callable) -> tuple[Callable | None, str | None]:
    """(heatmap, note): heatmap(row) -> HxWx3 uint8 overlay for a gallery row (id, fold, pred),
    prepare(id, grey, side) -> the image as predict prepares it. Without grad-cam: (None, MISSING).
    One model per fold is loaded on first use (CPU) and kept."""
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.image import show_cam_on_image
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        return None, MISSING
    import torch

    from foldkit.augment import eval_transform
    from foldkit.experiment import Experiment
    from foldkit.images import preparation
    from foldkit.model import load_checkpoint, model_from_checkpoint

    exp, models = Experiment(exp_dir), {}

    def fold_model(fold: int):
        if fold not in models:
            ckpt = load_checkpoint(exp.checkpoint(fold))
            model = model_from_checkpoint(ckpt)
            dc = ckpt["data_config"]
            models[fold] = (model, ckpt, preparation(ckpt["in_chans"], dc), eval_transform(dc), None)
        return models[fold]

    def heatmap(row) -> np.ndarray:
        model, ckpt, (grey, side), tf, layer = fold_model(int(row.fold))
        img = np.asarray(prepare(row.id, grey, side))
        if img.ndim == 2:
            img = img[:, :, None]
        x = tf(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))[None].float()
        if layer is None:
            layer = target_layer(model, x)
            if layer is None:
                raise HeatmapError(f"{ckpt['model_name']} has no convolutional feature map for Grad-CAM "
                                   "(its last features are not 4-D)")
            models[int(row.fold)] = (model, ckpt, (grey, side), tf, layer)
        classes = [str(c) for c in ckpt["classes"]]
        k = classes.index(str(row.pred))
        with GradCAM(model=model, target_layers=[layer]) as cam:
            mask = cam(input_tensor=x, targets=[ClassifierOutputTarget(k)])[0]
        dc = ckpt["data_config"]
        mean = np.asarray(dc.get("mean", (0.0,)), dtype=np.float32)
        std = np.asarray(dc.get("std", (1.0,)), dtype=np.float32)
        view = x[0].permute(1, 2, 0).numpy() * std + mean     # the model's input, back to [0, 1]
        view = np.clip(view, 0, 1)
        if view.shape[2] == 1:
            view = np.repeat(view, 3, axis=2)
        return show_cam_on_image(view.astype(np.float32), mask, use_rgb=True)

    return heatmap, None
