"""How far the bundle's onnx runner is from its torch runner, step by step: the preprocessed inputs, the
network on the same inputs, the per-member predictions (docs/export.md, "A stacked experiment").

    python benchmarks/bundle_onnx_check.py BUNDLE_DIR COMPETITION_DIR
"""
import sys
from pathlib import Path

import numpy as np
import torch

from foldkit import config
from foldkit.data.augment import eval_transform
from foldkit.export import bundle
from foldkit.export.stacks import image_entries


def main(b: Path, comp_dir: Path) -> None:
    import onnxruntime as ort
    man = bundle.read_manifest(b)
    comp, _ = bundle.open_test_set(man, comp_dir)
    cfg = config.resolve(device="cpu", workers=0, progress=False)
    e, m = image_entries(man)[0], bundle.load_bundle_members(b, man)[0]
    prep, dc = bundle.member_preparation(e), e["checkpoint"]["data_config"]
    images = [im[prep] for im in bundle.table_images(comp, comp.test, "test", [prep])]
    tf = eval_transform(dc)
    xt = np.stack([tf(torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)).numpy() for im in images])
    xo = np.stack([bundle.eval_preprocess(im, dc) for im in images])
    print(f"{len(images)} test images, data_config {dc}")
    print(f"inputs: max |x_onnx - x_torch| = {np.abs(xo - xt).max():.3g}")
    with torch.no_grad():
        yt = m.model.eval()(torch.from_numpy(xt)).numpy()
    yo = ort.InferenceSession(str(b / e["onnx"]), providers=["CPUExecutionProvider"]).run(None, {"image": xt})[0]
    print(f"network on the same inputs: max |y_onnx - y_torch| = {np.abs(yo - yt).max():.3g} (max |y| {np.abs(yt).max():.3g})")
    for k, (t, o) in enumerate(zip(bundle.predict_torch(b, man, comp, cfg), bundle.predict_onnx(b, man, comp, cfg))):
        print(f"member {k}: max |p_onnx - p_torch| = {np.abs(o - t).max():.3g}, relative {np.abs(o / t - 1).max():.3g}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
