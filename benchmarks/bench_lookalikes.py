"""Precision of the audit's feature copies on natural look-alikes, per similarity band.

bench_copies.py calibrated the threshold and margin on planted copies, where every candidate pair is
either a copy or an unrelated image. Natural data is full of near misses: different people's faces,
products photographed alike. Here the real audit (foldkit.audit.run.run_audit, default settings) runs on
numpy-layout competitions of natural images with planted copies added to test:

* utkface: UTKFace faces (../shared/data/utkface/crop_part1, 100x100 RGB), label = gender;
* fashion_mnist: the official training and test images, label = class.

Each test set also holds one planted copy (bench_copies.transform, the kinds in turn) of --planted
random training images: recall per band. Precision is measured by a blind look:

    build   the competitions and the audit (pairs.csv, duplicates.csv) in --keep DIR
    sample  draws, per dataset and band, a random sample of the natural pairs (neither image planted)
            the audit lists with margin >= the calibrated margin, and writes them as numbered
            side-by-side strips (DIR/look/sheet*.png, pairs in a random order, no similarity shown)
            and the key (DIR/look/key.csv)
    score   joins a verdicts file (number,copy with copy 1 = the same photo or the same item, 0 = not)
            with the key: precision per band; and the planted copies' recall per band

    python benchmarks/bench_lookalikes.py build --keep DIR [--train 3000 --test 1000 --planted 110]
    python benchmarks/bench_lookalikes.py sample --keep DIR [--per-band 12]
    python benchmarks/bench_lookalikes.py score --keep DIR --verdicts benchmarks/lookalikes_verdicts.csv
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenetv2_100_imagenet.pth"
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

EDGES = [0.75, 0.80, 0.85, 0.90, 0.95, 1.01]
FACE = 100


def _faces(n_total, seed):
    import cv2

    from foldkit.data.images import decode_image
    files = sorted((DATA / "utkface" / "crop_part1").glob("*.jpg"))
    files = [files[i] for i in np.random.default_rng(seed).choice(len(files), n_total, replace=False)]
    x = np.stack([cv2.resize(decode_image(p), (FACE, FACE), interpolation=cv2.INTER_AREA) for p in files])
    y = np.array([int(p.name.split("_")[1]) for p in files])
    return x, y, [p.name for p in files]


def _fashion(n_train, n_test):
    from bench_copies import _idx
    raw = DATA / "fashion_mnist"
    xt, yt = _idx(raw / "train-images-idx3-ubyte.gz")[:n_train], _idx(raw / "train-labels-idx1-ubyte.gz")[:n_train]
    xs = _idx(raw / "t10k-images-idx3-ubyte.gz")[:n_test]
    return xt, yt.astype(np.int64), xs


def build(a):
    from bench_copies import KINDS, transform

    from foldkit import config
    from foldkit.audit.run import run_audit
    keep = Path(a.keep)
    for name in a.sets:
        root = keep / name / "comp"
        root.mkdir(parents=True, exist_ok=True)
        if name == "utkface":
            x, y, files = _faces(a.train + a.test, 0)
            xt, yt, xs = x[:a.train], y[:a.train], x[a.train:]
            pd.DataFrame({"split": ["train"] * a.train + ["test"] * a.test,
                          "index": list(range(a.train)) + list(range(a.test)), "file": files}).to_csv(
                root.parent / "files.csv", index=False)
        else:
            xt, yt, xs = _fashion(a.train, a.test)
        rng = np.random.default_rng(1)
        orig = rng.choice(len(xt), a.planted, replace=False)
        planted = []
        for k, i in enumerate(orig):
            img = transform(xt[i], KINDS[k % len(KINDS)], rng)
            if img.shape != xt[i].shape:           # resize: back to the array's shape (a smaller copy, upscaled)
                import cv2
                img = cv2.resize(img, xt[i].shape[1::-1], interpolation=cv2.INTER_LINEAR)
            planted.append(img)
        xs = np.concatenate([xs, np.stack(planted)])
        pd.DataFrame({"test_index": len(xs) - a.planted + np.arange(a.planted), "train_index": orig,
                      "kind": [KINDS[k % len(KINDS)] for k in range(a.planted)]}).to_csv(
            root.parent / "planted.csv", index=False)
        np.save(root / "x_train.npy", xt)
        np.save(root / "y_train.npy", yt)
        np.save(root / "x_test.npy", xs)
        cfg = config.resolve(dict(input_dir=str(root), reports_dir=str(keep / name / "reports"),
                                  embed_weights=str(WEIGHTS)))
        t = time.time()
        s = run_audit(cfg, log=print)
        print(f"{name}: {len(xt)} train + {len(xs)} test ({a.planted} planted) audited in {time.time() - t:.0f} s; "
              f"duplicates {s['duplicates']}", flush=True)


def _band(sim):
    return pd.cut(sim, EDGES, right=False, labels=[f"{lo:.2f}-{hi:.2f}" if hi < 1 else f">= {lo:.2f}"
                                                   for lo, hi in zip(EDGES[:-1], EDGES[1:])])


def _pairs(keep, name):
    """pairs.csv of the dataset with its band, and whether it is planted (original <-> its copy),
    involves a planted image otherwise, or is natural."""
    from foldkit.audit.embed import threshold_for
    p = pd.read_csv(keep / name / "reports" / "audit" / "pairs.csv", dtype={"id_a": str, "id_b": str})
    planted = pd.read_csv(keep / name / "planted.csv")
    margin = threshold_for("mobilenetv2_100", 96)[1]
    p = p[p["margin"] >= margin].copy()
    p["band"] = _band(p["similarity"])
    truth = {(str(o), str(c)) for o, c in zip(planted["train_index"], planted["test_index"])}
    key = [(a, b) if sa == "train" else (b, a) for a, b, sa in zip(p["id_a"], p["id_b"], p["split_a"])]
    cross = (p["split_a"] != p["split_b"]).to_numpy()
    p["planted"] = [cross[k] and key[k] in truth for k in range(len(p))]
    pl = set(planted["test_index"].astype(str))
    p["natural"] = [not ((sa == "test" and a in pl) or (sb == "test" and b in pl))
                    for a, sa, b, sb in zip(p["id_a"], p["split_a"], p["id_b"], p["split_b"])]
    return p, planted


def _image(keep, name, split, idx):
    x = np.load(keep / name / "comp" / f"x_{split}.npy", mmap_mode="r")
    return np.asarray(x[int(idx)])


def sample(a):
    import cv2
    keep = Path(a.keep)
    look = keep / "look"
    look.mkdir(exist_ok=True)
    rng = np.random.default_rng(a.seed)
    rows = []
    for name in a.sets:
        p, _ = _pairs(keep, name)
        nat = p[p["natural"]]
        for band, g in nat.groupby("band", observed=True):
            pick = g.iloc[rng.choice(len(g), min(a.per_band, len(g)), replace=False)] if len(g) else g
            for r in pick.itertuples():
                rows.append(dict(dataset=name, band=band, similarity=r.similarity, margin=r.margin,
                                 split_a=r.split_a, id_a=r.id_a, label_a=r.label_a, split_b=r.split_b, id_b=r.id_b,
                                 label_b=r.label_b, band_size=len(g)))
    key = pd.DataFrame(rows).sample(frac=1, random_state=a.seed).reset_index(drop=True)
    key.insert(0, "number", np.arange(1, len(key) + 1))
    key.to_csv(look / "key.csv", index=False)
    side = 112
    for s in range(0, len(key), 10):
        strips = []
        for r in key.iloc[s:s + 10].itertuples():
            tiles = []
            for split, idx in ((r.split_a, r.id_a), (r.split_b, r.id_b)):
                img = _image(keep, r.dataset, split, idx)
                img = np.repeat(img[..., None], 3, 2) if img.ndim == 2 else img
                tiles.append(cv2.resize(np.ascontiguousarray(img), (side, side), interpolation=cv2.INTER_NEAREST
                                        if img.shape[0] < side else cv2.INTER_AREA))
            label = np.full((side, 60, 3), 255, np.uint8)
            cv2.putText(label, str(r.number), (4, 64), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 2)
            gap = np.full((side, 8, 3), 255, np.uint8)
            strips += [np.concatenate([label, tiles[0], gap, tiles[1]], 1), np.full((8, 60 + 2 * side + 8, 3), 255,
                                                                                      np.uint8)]
        sheet = np.concatenate(strips)
        cv2.imwrite(str(look / f"sheet{s // 10:02d}.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"{len(key)} pairs in {look}: sheets of 10, key.csv")


def score(a):
    keep = Path(a.keep)
    key = pd.read_csv(keep / "look" / "key.csv")
    v = pd.read_csv(a.verdicts)
    key = key.merge(v, on="number", how="inner")
    print("| dataset | band (similarity, margin >= 0.06) | natural pairs in the band | looked at | same photo/item | "
          "precision |\n|---|---|---|---|---|---|")
    for (name, band), g in key.groupby(["dataset", "band"], sort=True):
        print(f"| {name} | {band} | {g['band_size'].iloc[0]} | {len(g)} | {int(g['copy'].sum())} | "
              f"{g['copy'].mean():.2f} |")
    for band, g in key.groupby("band", sort=True):
        print(f"| both | {band} | {g.groupby('dataset')['band_size'].first().sum()} | {len(g)} | "
              f"{int(g['copy'].sum())} | {g['copy'].mean():.2f} |")
    from foldkit.audit.embed import threshold_for
    thr = threshold_for("mobilenetv2_100", 96)[0]
    print(f"\nplanted copies (original in train, copy in test) found by the audit with copies from similarity "
          f"{thr:.2f} (exact, hash, or a feature pair >= {thr:.2f}), and the band of their feature pair:\n"
          "| dataset | planted | found | "
          + " | ".join(f"feature pair in {b}" for b in _band(pd.Series(EDGES[:-1])).astype(str))
          + " |\n|---|---|---|---|---|---|---|---|")
    for name in a.sets:
        p, planted = _pairs(keep, name)
        dup = pd.read_csv(keep / name / "reports" / "audit" / "duplicates.csv", dtype={"id": str})
        by_hash = {(s, i) for s, i, m in zip(dup["split"], dup["id"], dup["method"]) if "exact" in m or "hash" in m}
        pp = p[p["planted"]]
        feat = {(a if sa == "test" else b) for a, sa, b, sim in zip(pp["id_a"], pp["split_a"], pp["id_b"],
                                                                     pp["similarity"]) if sim >= thr}
        found = sum(("test", str(c)) in by_hash or str(c) in feat for c in planted["test_index"])
        per = pp["band"].value_counts()
        print(f"| {name} | {len(planted)} | {found} | "
              + " | ".join(str(int(per.get(b, 0))) for b in per.index.categories) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["build", "sample", "score"])
    ap.add_argument("--keep", required=True)
    ap.add_argument("--sets", nargs="+", default=["utkface", "fashion_mnist"])
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--planted", type=int, default=110)
    ap.add_argument("--per-band", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verdicts", default=str(REPO / "benchmarks" / "lookalikes_verdicts.csv"))
    a = ap.parse_args()
    {"build": build, "sample": sample, "score": score}[a.what](a)


if __name__ == "__main__":
    main()
