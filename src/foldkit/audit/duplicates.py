"""Feature copies for the audit, and the audit's duplicate files.

The exact and hash search is foldkit.data.copies' (make_folds runs it too). Here:

* **feature** (when embedding weights are available): cosine similarity of learned embeddings
  (foldkit.audit.embed) >= a threshold and standing a margin above both images' background similarity,
  both calibrated per model; pairs come from `feature_pairs` (an index: scikit-learn NearestNeighbors,
  or faiss when installed). Finds the mirrored, cropped and recoloured copies the hash misses;
  foldkit.data.copies.cluster_table joins them with the hash pairs into clusters.
* `summarize` counts the clusters; `write_clusters` writes duplicates.csv and audit.json, which
  make_folds reads back (foldkit.folds.audit_files).

This module never modifies the competition and never imports torch.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from foldkit.data.copies import MIN_CORR
from foldkit.folds.audit_files import AUDIT_JSON, DUPLICATES_CSV
from foldkit.io import atomic_write_text, atomic_write_with

PAIRS_CSV = "pairs.csv"
FEATURE_NEIGHBOURS = 10        # neighbours per image searched for feature copies
PROJECT_ABOVE = 20000          # more images than this: neighbours searched on a PCA projection
PROJECT_DIM = 128
# Expected precision of a feature pair (margin >= the calibrated margin) by similarity band, lowest
# edge first: the share of same photos / same items in a blind look at a random sample of the pairs the
# audit lists on natural data (UTKFace faces, Fashion-MNIST products; mobilenetv2_100 at 96 px), not the
# top of the ranking: benchmarks/RESULTS.md "Feature copies on natural look-alikes". Other sizes and
# models show the same figures (not measured for them).
BANDS = ((0.80, 0.17), (0.85, 0.33), (0.90, 0.54), (0.95, 0.75))


def feature_pairs(emb: np.ndarray, floor: float, k: int = FEATURE_NEIGHBOURS) -> pd.DataFrame:
    """Pairs (i < j) of rows whose unit embeddings have cosine similarity >= floor, among each
    row's k nearest neighbours: columns i, j, similarity (highest first) and margin. Rows of
    zeros (unread images) take no part.

    margin = similarity - the higher of the two images' background similarity, the similarity to
    their r-th nearest neighbour (r = 1% of the images, from 2 to k): how far the pair stands out
    from what the dataset's images usually look like to each other. A copy of a photo stands far
    above its neighbours; two MNIST digits that merely look alike do not (a digit has ten
    neighbours almost as close).

    Neighbours come from an index, never all pairs in Python: faiss (IndexFlatIP) when installed
    (pip install -e ".[faiss]"), else scikit-learn's NearestNeighbors (brute force, BLAS). Above
    PROJECT_ABOVE rows the search runs on a PCA projection to PROJECT_DIM dimensions (the cost
    is n^2 x dim) and the candidates' similarity is then recomputed on the full embeddings."""
    valid = np.flatnonzero(np.linalg.norm(emb, axis=1) > 0) if len(emb) else np.zeros(0, int)
    if len(valid) < 2:
        return pd.DataFrame({"i": [], "j": [], "similarity": [], "margin": []}).astype(
            {"i": int, "j": int, "similarity": float, "margin": float})
    x = np.ascontiguousarray(emb[valid], dtype=np.float32)
    if len(x) > PROJECT_ABOVE and x.shape[1] > PROJECT_DIM:
        from sklearn.decomposition import PCA
        sample = x[np.random.default_rng(0).choice(len(x), min(len(x), 20000), replace=False)]
        q = PCA(PROJECT_DIM, svd_solver="randomized", random_state=0).fit(sample).transform(x)
        q = np.ascontiguousarray(q / np.linalg.norm(q, axis=1, keepdims=True).clip(1e-12), dtype=np.float32)
    else:
        q = x
    k = min(k + 1, len(x))
    nbr = _knn(q, k)
    rows = np.arange(len(x))[:, None]
    near = np.einsum("nd,nkd->nk", x, x[nbr.clip(0)])            # exact similarity to each neighbour
    near[(nbr == rows) | (nbr < 0)] = -np.inf
    # the background: the similarity to the r-th nearest neighbour, r = 1% of the images (the share
    # the calibration used: 10 of ~1,100), from 2 (the 1st is the copy itself) to k
    r = int(np.clip(len(x) // 100, 2, k - 1)) if k > 2 else 1
    background = -np.sort(-near, axis=1)[:, r - 1]
    background[~np.isfinite(background)] = 0.0
    i = np.repeat(rows[:, 0], k)
    j = nbr.ravel()
    keep = (j >= 0) & (i != j)
    i, j = np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])
    pairs = np.unique(np.stack([i, j], 1), axis=0)
    sim = np.einsum("ij,ij->i", x[pairs[:, 0]], x[pairs[:, 1]])
    margin = sim - np.maximum(background[pairs[:, 0]], background[pairs[:, 1]])
    keep = sim >= floor
    out = pd.DataFrame({"i": valid[pairs[keep, 0]], "j": valid[pairs[keep, 1]], "similarity": sim[keep],
                        "margin": margin[keep]})
    return out.sort_values("similarity", ascending=False, kind="stable").reset_index(drop=True)


def band_of(similarity) -> tuple[np.ndarray, np.ndarray]:
    """(band name, expected precision) of each similarity: the BANDS row it falls in ("0.80-0.85",
    ">= 0.95"); "below 0.80" and NaN below the lowest band."""
    sim = np.asarray(similarity, float)
    edges = [lo for lo, _ in BANDS]
    names = [f"{lo:.2f}-{hi:.2f}" for lo, hi in zip(edges, edges[1:])] + [f">= {edges[-1]:.2f}"]
    k = np.searchsorted(edges, sim + 1e-9, side="right") - 1     # 1e-9: 0.85 stored as 0.84999.. is in 0.85-
    name = np.array([f"below {edges[0]:.2f}"] + names, dtype=object)[k + 1]
    precision = np.array([np.nan] + [p for _, p in BANDS])[k + 1]
    return name, precision


def band_counts(pairs: pd.DataFrame, hashes: pd.DataFrame) -> list[dict]:
    """Per band of the feature pairs the audit lists as copies or to check (pairs with `verdict`,
    `band`, `expected_precision`): verdict, expected precision, pairs, train/test pairs, test images
    whose most similar train partner falls in the band, train pairs with different labels."""
    p = pairs[pairs["verdict"] != ""]
    if p.empty:
        return []
    split = hashes["split"].to_numpy()
    label = hashes["label"].astype(str).to_numpy()
    i, j = p["i"].to_numpy(int), p["j"].to_numpy(int)
    cross = split[i] != split[j]
    both_train = (split[i] == "train") & (split[j] == "train")
    test_row = np.where(split[i] == "test", i, j)
    best = pd.Series(p["similarity"].to_numpy()[cross], index=test_row[cross]).groupby(level=0).max()
    best_band = pd.Series(band_of(best.to_numpy())[0], index=best.index)
    out = []
    for (band, verdict), g in p.groupby(["band", "verdict"], sort=False):
        m = ((p["band"] == band) & (p["verdict"] == verdict)).to_numpy()
        tests = best_band.index.isin(test_row[m & cross]) & (best_band == band).to_numpy()
        out.append({"band": band, "verdict": verdict, "expected_precision": float(g["expected_precision"].iloc[0]),
                    "pairs": int(m.sum()), "train_test_pairs": int((m & cross).sum()), "test_images": int(tests.sum()),
                    "train_pairs_different_labels": int((m & both_train & (label[i] != label[j])).sum()),
                    "lowest_similarity": float(g["similarity"].min())})
    return sorted(out, key=lambda r: -r["lowest_similarity"])


def _knn(q: np.ndarray, k: int) -> np.ndarray:
    """Indices (n, k) of each row's k nearest rows (inner product of unit vectors)."""
    try:
        import faiss
    except ImportError:
        from sklearn.neighbors import NearestNeighbors
        return NearestNeighbors(n_neighbors=k, algorithm="brute").fit(q).kneighbors(q, return_distance=False)
    index = faiss.IndexFlatIP(q.shape[1])
    index.add(q)
    return index.search(q, k)[1]


def summarize(clusters: pd.DataFrame) -> dict:
    """Counts: clusters and images within train, across train/test, label conflicts, exact/near."""
    if clusters.empty:
        return {"clusters": 0, "train_clusters": 0, "train_images_in_clusters": 0, "train_extra_copies": 0,
                "train_test_clusters": 0, "test_images_with_train_copy": 0, "label_conflicts": 0,
                "exact_clusters": 0, "near_clusters": 0, "feature_only_clusters": 0}
    c = clusters
    per = c.groupby("cluster").agg(n_train=("split", lambda s: int((s == "train").sum())),
                                   n_test=("split", lambda s: int((s == "test").sum())),
                                   kind=("kind", "first"), conflict=("label_conflict", "first"))
    method = c["method"] if "method" in c else pd.Series("", index=c.index)
    per["feature_only"] = (method.fillna("") == "feature").groupby(c["cluster"]).all()
    tr = per[per["n_train"] >= 2]
    tt = per[(per["n_train"] >= 1) & (per["n_test"] >= 1)]
    return {"clusters": int(len(per)), "train_clusters": int(len(tr)),
            "train_images_in_clusters": int(tr["n_train"].sum()),
            "train_extra_copies": int((tr["n_train"] - 1).sum()),
            "train_test_clusters": int(len(tt)), "test_images_with_train_copy": int(tt["n_test"].sum()),
            "label_conflicts": int(per["conflict"].sum()),
            "exact_clusters": int((per["kind"] == "exact").sum()),
            "near_clusters": int((per["kind"] == "near").sum()),
            "feature_only_clusters": int(per["feature_only"].sum())}


# --------------------------------------------------------------------------- the audit's files


def write_clusters(clusters: pd.DataFrame, out_dir: str | Path, input_dir: str | Path, threshold: int,
                   summary: dict) -> Path:
    """duplicates.csv + audit.json (the summary, and which competition and settings it describes)."""
    out_dir = Path(out_dir)
    atomic_write_with(out_dir / DUPLICATES_CSV, lambda tmp: clusters.to_csv(tmp, index=False, lineterminator="\n"))
    info = {**summary, "input_dir": str(Path(input_dir).resolve()), "threshold": threshold, "min_corr": MIN_CORR}
    atomic_write_text(out_dir / AUDIT_JSON, json.dumps(info, indent=2, sort_keys=True) + "\n")
    return out_dir / DUPLICATES_CSV


