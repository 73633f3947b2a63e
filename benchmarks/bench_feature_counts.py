"""How many more train/test copies the feature search finds than the hash search on MNIST and
Fashion-MNIST, and what the audit costs at scale.

counts: writes a numpy-layout competition of the first --train training images and the first
--test test images of each set (official idx files of ../shared/data) into a scratch folder and
runs the real audit (foldkit.audit.run_audit) with the shared mobilenetv2 weights; prints the
hash-only and hash-or-feature counts and the seconds taken (cold, then cached), and keeps
audit.html (pairs side by side) in --keep DIR when given.

embed: the embedding throughput alone (two views, decoding excluded).

index: the neighbour search alone (foldkit.duplicates.feature_pairs) on N random unit vectors of
the backbone's 1280 dimensions: its cost does not depend on the content.

    python benchmarks/bench_feature_counts.py counts [--train 5000] [--test 2000] [--keep DIR] [--sets ...]
    python benchmarks/bench_feature_counts.py index [--n 100000]
    python benchmarks/bench_feature_counts.py embed [--n 1024] [--sizes 64 128]
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenetv2_100_imagenet.pth"
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))


HEADER = ("| set (train + test) | test images with a train copy: hash | hash or feature | train images in "
          "clusters: hash | hash or feature | clusters found by features only | label conflicts | "
          "adversarial AUC | audit cold / cached |\n|---|---|---|---|---|---|---|---|---|")


def counts(a):
    import torch
    torch.set_num_threads(2)
    from bench_copies import _idx
    from foldkit import config
    from foldkit.audit import run_audit
    keep = Path(a.keep) if a.keep else Path(tempfile.mkdtemp())
    print(HEADER)
    for name in a.sets:
        root = keep / name / "comp"
        root.mkdir(parents=True, exist_ok=True)
        raw = DATA / name
        np.save(root / "x_train.npy", _idx(raw / "train-images-idx3-ubyte.gz")[:a.train])
        np.save(root / "y_train.npy", _idx(raw / "train-labels-idx1-ubyte.gz")[:a.train])
        np.save(root / "x_test.npy", _idx(raw / "t10k-images-idx3-ubyte.gz")[:a.test])
        cfg = config.resolve(dict(input_dir=str(root), reports_dir=str(keep / name / "reports"),
                                  embed_weights=str(WEIGHTS)))
        took = {}
        for run in ("cold", "cached"):
            t = time.time()
            s = run_audit(cfg, log=lambda *m: None)
            took[run] = time.time() - t
        h, d = s["duplicates_hash_only"], s["duplicates"]
        print(f"| {name} ({a.train:,} + {a.test:,}) | {h['test_images_with_train_copy']} | "
              f"{d['test_images_with_train_copy']} | {h['train_images_in_clusters']} | "
              f"{d['train_images_in_clusters']} | {d['feature_only_clusters']} | {d['label_conflicts']} | "
              f"{s['shift'].get('auc')} | {took['cold']:.0f} s / {took['cached']:.0f} s |", flush=True)
        print(f"  page: {s['paths']['html']}", flush=True)


def index(a):
    from foldkit.duplicates import feature_pairs
    rng = np.random.default_rng(0)
    e = rng.normal(size=(a.n, 1280)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    t = time.time()
    p = feature_pairs(e, 0.92)
    print(f"feature_pairs on {a.n:,} x 1280 unit vectors: {time.time() - t:.1f} s ({len(p)} pairs >= 0.92)")


def embed_speed(a):
    """Images per second of foldkit.embed.Embedder (two views each) on uint8 256x256 images (the
    content does not change the cost), per input size; decoding not included."""
    import torch
    torch.set_num_threads(2)
    from foldkit.embed import Embedder
    imgs = np.random.default_rng(0).integers(0, 256, (a.n, 256, 256, 3), dtype=np.uint8)
    for size in a.sizes:
        e = Embedder("mobilenetv2_100", str(WEIGHTS), size)
        e.embed(imgs[:64])
        t = time.time()
        e.embed(imgs)
        dt = time.time() - t
        print(f"embedding at {size} px on {e.device}: {a.n / dt:.0f} img/s (two views each); "
              f"100,000 images: {100000 / (a.n / dt) / 60:.0f} min")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("counts")
    c.add_argument("--train", type=int, default=5000)
    c.add_argument("--test", type=int, default=2000)
    c.add_argument("--keep", default="")
    c.add_argument("--sets", nargs="+", default=["mnist", "fashion_mnist"])
    i = sub.add_parser("index")
    i.add_argument("--n", type=int, default=100000)
    e = sub.add_parser("embed")
    e.add_argument("--n", type=int, default=1024)
    e.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    a = ap.parse_args()
    {"counts": counts, "index": index, "embed": embed_speed}[a.what](a)


if __name__ == "__main__":
    main()
