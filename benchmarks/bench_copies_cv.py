"""The CV effect of the copies each search finds: a competition with planted copies, scored by a
1-nearest-neighbour classifier on folds grouped by the feature clusters, by the hash clusters, by
the true sources (the honest reference) and ungrouped.

The competition: --originals hymenoptera training photos (ants/bees folders), and for a random
half of them one planted copy of a random kind of benchmarks/bench_copies.py (mirror, crops,
shift, brightness, contrast, colour, JPEG, resizing, rotation, all at once), all in train. The
audit's own code finds the clusters (foldkit.audit.duplicates hash pairs; foldkit.audit.embed features at the
calibrated threshold); folds come from foldkit.folds.file.assign_folds with the clusters as groups, as
make_folds makes them. The 1-NN classifier works on the same embeddings (a copy in the training
part of a fold is then its own nearest neighbour: the leak grouped folds remove).

    python benchmarks/bench_copies_cv.py [--originals 240] [--seeds 5]
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))


def build(root: Path, n: int, seed: int = 0) -> pd.DataFrame:
    """Write the competition; returns the truth table (id, label, source_photo, kind)."""
    import cv2

    import bench_copies as bc
    from foldkit.data.images import decode_image
    rng = np.random.default_rng(seed)
    photos = sorted(p for p in (bc.DATA / "hymenoptera" / "train").glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg"))
    photos = [photos[i] for i in sorted(rng.choice(len(photos), min(n, len(photos)), replace=False))]
    rows = []
    for k, p in enumerate(photos):
        img = decode_image(p, min_side=256)
        out = root / "train" / p.parent.name
        out.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / f"p{k}.jpg"), img[..., ::-1])
        rows.append((f"{p.parent.name}/p{k}.jpg", p.parent.name, k, "original"))
        if rng.random() < 0.5:
            kind = bc.KINDS[int(rng.integers(len(bc.KINDS)))]
            cv2.imwrite(str(out / f"p{k}_{kind}.jpg"), np.ascontiguousarray(bc.transform(img, kind, rng)[..., ::-1]))
            rows.append((f"{p.parent.name}/p{k}_{kind}.jpg", p.parent.name, k, kind))
    return pd.DataFrame(rows, columns=["id", "label", "source_photo", "kind"])


def one_nn_cv(emb, labels, folds):
    hits = 0
    for f in np.unique(folds):
        va, tr = folds == f, folds != f
        nn = np.argmax(emb[va] @ emb[tr].T, axis=1)
        hits += int((labels[tr][nn] == labels[va]).sum())
    return hits / len(labels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--originals", type=int, default=240)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--weights", default=str(REPO.parent / "shared" / "weights" / "mobilenetv2_100_imagenet.pth"))
    a = ap.parse_args()
    import torch
    torch.set_num_threads(2)
    from foldkit.audit import duplicates as dup
    from foldkit.audit import embed
    from foldkit.data import copies
    from foldkit.folds.split import assign_folds
    from foldkit.data.reading import read_competition
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "comp"
        truth = build(root, a.originals)
        comp = read_competition(root)
        t = time.time()
        hashes, thumb = copies.hash_table(comp, None, log=lambda *x: None)
        thr, margin, _ = embed.threshold_for(embed.DEFAULT_MODEL, embed.DEFAULT_SIZE)
        emb = embed.competition_embeddings(comp, hashes, None, embed.DEFAULT_MODEL, a.weights, embed.DEFAULT_SIZE,
                                           log=lambda *x: None)
        pairs = dup.feature_pairs(emb, thr)
        pairs = pairs[pairs["margin"] >= margin]
        print(f"{len(hashes)} training images ({int((truth['kind'] != 'original').sum())} planted copies), "
              f"hashed and embedded in {time.time() - t:.0f} s; feature threshold {thr}, margin {margin}")
        table = comp.train.reset_index(drop=True)
        t_of = truth.set_index("id").loc[table["id"]]
        labels = table["label"].astype(str).to_numpy()
        clusters = {"hash": copies.cluster_table(hashes, thumb), "feature (hash or feature)":
                    copies.cluster_table(hashes, thumb, emb=emb, feature=pairs)}
        groups = {name: copies.cluster_groups(table, c)[0] for name, c in clusters.items()}
        groups["true sources (honest)"] = t_of["source_photo"].to_numpy()
        groups["ungrouped"] = None
        copies = t_of["kind"].to_numpy() != "original"
        for name, c in clusters.items():
            found = set(c["id"])
            print(f"{name}: {c['cluster'].nunique()} clusters; planted copies found "
                  f"{sum(i in found for i in table['id'][copies])} of {int(copies.sum())}")
        print("\n| folds grouped by | 1-NN CV accuracy (mean of seeds) | min | max |\n|---|---|---|---|")
        for name, g in groups.items():
            accs = [one_nn_cv(emb, labels, assign_folds(table, 5, seed, groups=g)) for seed in range(a.seeds)]
            print(f"| {name} | {np.mean(accs):.4f} | {np.min(accs):.4f} | {np.max(accs):.4f} |")


if __name__ == "__main__":
    main()
