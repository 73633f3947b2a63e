"""Input pipeline on CPU: decode + augment img/s per core, the kit's dataset against
torchvision.datasets.ImageFolder + PIL with the same transforms, in one run.

Both read the hymenoptera JPEGs (sizes 193x130 to 2592x1944) from disk every
pass (no cache), apply RandomResizedCrop(224) + horizontal flip + normalise, on
one core (torch threads 1, no workers). The kit decodes with OpenCV, asking
libjpeg for a reduced-size decode when the photo is much larger than needed,
and augments uint8 tensors with transforms.v2; ImageFolder decodes full size
with PIL and augments PIL images.

    python benchmarks/bench_input.py [--data ../shared/data/hymenoptera/train] [--passes 3]
"""
import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "hymenoptera" / "train"))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--passes", type=int, default=3)
    args = ap.parse_args()
    data = Path(args.data)
    if not data.is_dir():
        raise SystemExit(f"{data} not found: point --data at a folder of class subfolders of photos")
    torch.set_num_threads(1)
    import cv2
    cv2.setNumThreads(1)
    from torchvision import datasets
    from torchvision import transforms as T

    from foldkit.data.augment import train_transform
    from foldkit.data.reading import read_competition
    from foldkit.data.dataset import ImageDataset, ImageSource, cache_side

    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    ref_tf = T.Compose([T.RandomResizedCrop(args.size, scale=(0.35, 1.0)), T.RandomHorizontalFlip(),
                        T.ToTensor(), T.Normalize(mean, std)])
    ref = datasets.ImageFolder(str(data), transform=ref_tf)

    # the kit reads the same folder as a folder-per-class competition
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "train").symlink_to(data.resolve())
        comp = read_competition(tmp)
        dcfg = {"input_size": [3, args.size, args.size], "mean": mean, "std": std, "interpolation": "bilinear",
                "crop_pct": 0.875}
        max_side = cache_side(dcfg)      # what training uses
        src = ImageSource(comp, comp.train, "train", cache="off", max_side=max_side, progress=False)
        kit = ImageDataset(src, None, train_transform(dcfg, "light"))

        def rate(ds):
            n, t0 = 0, time.perf_counter()
            for _ in range(args.passes):
                for i in range(len(ds)):
                    x = ds[i][0]
                    n += 1
            assert x.shape[-1] == args.size
            return n / (time.perf_counter() - t0)

        rate(kit), rate(ref)      # warm the page cache and the libraries
        r_kit, r_ref = rate(kit), rate(ref)
    print(f"{len(ref)} photos of {data.name}/ at {args.size}px, {args.passes} passes, 1 core")
    print(f"ImageFolder + PIL      : {r_ref:7.1f} img/s per core")
    print(f"foldkit ImageDataset   : {r_kit:7.1f} img/s per core  ({r_kit / r_ref:.2f}x)")


if __name__ == "__main__":
    main()
