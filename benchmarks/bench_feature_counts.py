"""How many more train/test copies the feature search finds than the hash search on MNIST and
Fashion-MNIST, and what the audit costs at scale.

counts: writes a numpy-layout competition of the first --train training images and the first
--test test images of each set (official idx files of ../shared/data) into a scratch folder and
runs the real audit (foldkit.audit.run.run_audit) with the shared mobilenetv2 weights at the default
size (--size); prints the hash-only and hash-or-feature counts and the seconds taken (first run,
then cached), and keeps audit.html (pairs side by side) in --keep DIR when given. --reuse-cache
FILE starts from an embedding cache made elsewhere (keyed by the pixels: the images it holds are
not embedded again; the first run is then not cold).

scale: the audit of one 100,000-image numpy competition (Fashion-MNIST's 60,000 + 10,000 and
MNIST's first 20,000 training + 10,000 test images; MNIST labels shifted to 10-19), run cold then
cached, each log line stamped with the seconds since the start; before it, the embedding speed of
the old path (eager torch at 128 px) against the audit's (default backend and size) on the same
1,024 images, interleaved, so the ratio holds on shared cores whatever the load.

embed: the embedding throughput alone (two views, decoding excluded), per backend and size,
on real Fashion-MNIST images, the backends interleaved round by round.

index: the neighbour search alone (foldkit.audit.duplicates.feature_pairs) on N random unit vectors of
the backbone's 1280 dimensions: its cost does not depend on the content.

    python benchmarks/bench_feature_counts.py counts [--train 5000] [--test 2000] [--keep DIR] [--sets ...]
    python benchmarks/bench_feature_counts.py scale --keep DIR
    python benchmarks/bench_feature_counts.py index [--n 100000]
    python benchmarks/bench_feature_counts.py embed [--n 1024] [--sizes 64 96 128] [--backends torch onnxruntime]
"""
import argparse
import os
import shutil
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
    from foldkit.audit.run import run_audit
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
                                  embed_weights=str(WEIGHTS), **({"embed_size": a.size} if a.size else {})))
        if a.reuse_cache:
            from foldkit.audit.embed import cache_name
            (keep / name / "reports" / "audit").mkdir(parents=True, exist_ok=True)
            shutil.copy(a.reuse_cache, keep / name / "reports" / "audit" / cache_name(cfg.embed_model, cfg.embed_size))
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
        print(f"  {s['features']['model']} at {s['features']['size']} px; load average {os.getloadavg()}", flush=True)
        print(f"  page: {s['paths']['html']}", flush=True)


def index(a):
    from foldkit.audit.duplicates import feature_pairs
    rng = np.random.default_rng(0)
    e = rng.normal(size=(a.n, 1280)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    t = time.time()
    p = feature_pairs(e, 0.92)
    print(f"feature_pairs on {a.n:,} x 1280 unit vectors: {time.time() - t:.1f} s ({len(p)} pairs >= 0.92)")


def _speeds(images, variants, rounds=2):
    """img/s of each (backend, size) Embedder on `images`, the variants interleaved round by round
    (best round each): on shared cores the ratios hold whatever the load."""
    from foldkit.audit.embed import Embedder
    emb = {v: Embedder("mobilenetv2_100", str(WEIGHTS), v[1], backend=v[0]) for v in variants}
    best = dict.fromkeys(variants, 0.0)
    for e in emb.values():
        e.embed(images[:64])
    for _ in range(rounds):
        for v, e in emb.items():
            t = time.time()
            e.embed(images)
            best[v] = max(best[v], len(images) / (time.time() - t))
    return {v: (emb[v].backend_name, best[v]) for v in variants}


def embed_speed(a):
    """Images per second of foldkit.audit.embed.Embedder (two views each) on real 28 px Fashion-MNIST
    images (resized to the input size: the cost is the backbone's), per backend and input size."""
    from bench_copies import _idx
    imgs = _idx(DATA / "fashion_mnist" / "t10k-images-idx3-ubyte.gz")[:a.n]
    print(f"load average before: {os.getloadavg()}")
    got = _speeds(imgs, [(b, s) for s in a.sizes for b in a.backends])
    base = got[(a.backends[0], a.sizes[-1])][1]
    for (b, size), (name, speed) in got.items():
        print(f"embedding at {size} px with {name}: {speed:.0f} img/s (two views each; {speed / base:.2f}x "
              f"{a.backends[0]} at {a.sizes[-1]} px); 100,000 images: {100000 / speed / 60:.1f} min")
    print(f"load average after: {os.getloadavg()}")


def scale(a):
    """The audit on 100,000 real images, cold then cached (see the module doc)."""
    from bench_copies import _idx
    from foldkit import config
    from foldkit.audit.run import run_audit
    from foldkit.audit.embed import DEFAULT_SIZE
    root = Path(a.keep) / "comp100k"
    root.mkdir(parents=True, exist_ok=True)
    f, m = DATA / "fashion_mnist", DATA / "mnist"
    x_tr = np.concatenate([_idx(f / "train-images-idx3-ubyte.gz"), _idx(m / "train-images-idx3-ubyte.gz")[:20000]])
    y_tr = np.concatenate([_idx(f / "train-labels-idx1-ubyte.gz"), _idx(m / "train-labels-idx1-ubyte.gz")[:20000] + 10])
    x_te = np.concatenate([_idx(f / "t10k-images-idx3-ubyte.gz"), _idx(m / "t10k-images-idx3-ubyte.gz")])
    np.save(root / "x_train.npy", x_tr)
    np.save(root / "y_train.npy", y_tr.astype(np.int64))
    np.save(root / "x_test.npy", x_te)
    print(f"{len(x_tr):,} train + {len(x_te):,} test images; {os.cpu_count()} cores; load average {os.getloadavg()}")
    sample = x_tr[np.random.default_rng(0).choice(len(x_tr), 1024, replace=False)]
    got = _speeds(sample, [("torch", 128), ("auto", DEFAULT_SIZE)])
    (old_name, old), (new_name, new) = got[("torch", 128)], got[("auto", DEFAULT_SIZE)]
    print(f"same 1,024 images, interleaved: before ({old_name}, 128 px) {old:.0f} img/s, now ({new_name}, "
          f"{DEFAULT_SIZE} px) {new:.0f} img/s: {new / old:.2f}x; load average {os.getloadavg()}", flush=True)
    cfg = config.resolve(dict(input_dir=str(root), reports_dir=str(Path(a.keep) / "reports"),
                              embed_weights=str(WEIGHTS)))
    for run in ("cold", "cached"):
        t = time.time()
        s = run_audit(cfg, log=lambda *msg: print(f"  [{time.time() - t:6.0f} s] " + " ".join(map(str, msg)),
                                                  flush=True))
        took = time.time() - t
        d, h = s["duplicates"], s["duplicates_hash_only"]
        print(f"{run}: {took:.0f} s ({took / 60:.1f} min) for {len(x_tr) + len(x_te):,} images; load average "
              f"{os.getloadavg()}; test images with a train copy: hash {h['test_images_with_train_copy']}, "
              f"hash or feature {d['test_images_with_train_copy']}", flush=True)
    print(f"page: {s['paths']['html']}")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("counts")
    c.add_argument("--train", type=int, default=5000)
    c.add_argument("--test", type=int, default=2000)
    c.add_argument("--keep", default="")
    c.add_argument("--sets", nargs="+", default=["mnist", "fashion_mnist"])
    c.add_argument("--size", type=int, default=0, help="embedding size (0 = the audit's default)")
    c.add_argument("--reuse-cache", default="", help="an embedding cache file to start from")
    sc = sub.add_parser("scale")
    sc.add_argument("--keep", required=True)
    i = sub.add_parser("index")
    i.add_argument("--n", type=int, default=100000)
    e = sub.add_parser("embed")
    e.add_argument("--n", type=int, default=1024)
    e.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128])
    e.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"])
    a = ap.parse_args()
    {"counts": counts, "index": index, "embed": embed_speed, "scale": scale}[a.what](a)


if __name__ == "__main__":
    main()
