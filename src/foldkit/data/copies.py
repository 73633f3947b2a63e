"""Exact and near-duplicate images of a competition: hashes (cached on disk), pairs, clusters.

Works with the base install (numpy, OpenCV, SciPy):

* **exact**: BLAKE2b of the decoded pixels and shape, whatever the file bytes (a PNG and a
  re-saved PNG of the same pixels are exact copies). Large JPEGs are decoded at reduced size
  (shortest side still >= ``DECODE_MIN_SIDE``), so for them "exact" means identical at that size.
* **near**: a 64-bit perceptual hash (pHash: DCT of the 32x32 grey image, the 8x8 lowest
  frequencies against their median), robust to resizing and JPEG recompression. Two images are
  near duplicates when their hashes differ in at most ``threshold`` bits (default 4) AND their
  16x16 grey thumbnails correlate at >= ``MIN_CORR`` = 0.99 (the second test keeps apart
  distinct but similar-looking images, e.g. two different handwritten 1s of MNIST with close
  hashes). How far a copy may be changed and still be found: benchmarks/RESULTS.md, "Near-duplicate
  hashes". ``--near-threshold`` changes the bits.

pHash is hand-written on ``cv2.resize`` + ``cv2.dct``: it computes the same function as
``imagehash.phash``, faster (benchmarks/RESULTS.md, "Near-duplicate hashes"). Pairs are found
with multi-index hashing (hand-written, no library does it on numpy): the 64 bits are cut into
``threshold + 1`` bands; two hashes within ``threshold`` bits agree exactly on at least one band
(pigeonhole), so only rows sharing a band value are compared, vectorised in numpy. Clusters are
the connected components of the pair graph (``scipy.sparse.csgraph``); `cluster_table` also takes
the audit's feature pairs (foldkit.audit.duplicates). ``method`` in duplicates.csv says which
method paired an image (exact, hash, feature).

Hashes are cached in ``<audit dir>/hash_cache.npz`` keyed by file path + size + mtime (files)
or by the pixel hash (array layouts): a second run decodes nothing. make_folds searches here when
asked to group duplicates without an audit; the audit searches here and adds feature copies.

This module never modifies the competition and never imports torch.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from foldkit.data.images import ImageError, decode_image
from foldkit.io import atomic_write_with

DEFAULT_THRESHOLD = 4          # Hamming bits of the 64-bit pHash; see module doc
MIN_CORR = 0.99                # 16x16 thumbnail correlation a near pair must also reach (see module doc)
DECODE_MIN_SIDE = 256          # large JPEGs are decoded at 1/2, 1/4, 1/8 down to this side
THUMB = 16
CACHE_FILE = "hash_cache.npz"
CLUSTER_COLUMNS = ["cluster", "id", "split", "label", "source", "kind", "distance", "label_conflict", "spans",
                   "similarity", "method"]
METHODS = ("exact", "hash", "feature")
_FIELDS = ("key", "exact", "phash", "thumb", "height", "width", "channels", "mode", "format", "nbytes", "error")


def phash_batch(small: np.ndarray) -> np.ndarray:
    """64-bit perceptual hashes (uint64) of (N, 32, 32) grey images: imagehash.phash's
    definition (2-D DCT-II, the 8x8 lowest frequencies against their median); the median and
    the bits are vectorised over the batch."""
    import cv2
    low = np.stack([cv2.dct(s.astype(np.float32))[:8, :8].ravel() for s in small])
    bits = low > np.median(low, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8")[:, 0].astype(np.uint64)


def phash(grey: np.ndarray) -> np.uint64:
    """64-bit perceptual hash of one grey uint8 image (see phash_batch)."""
    import cv2
    return phash_batch(cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA)[None])[0]


def _pixel_record(img: np.ndarray, with_phash: bool = True) -> dict:
    import cv2
    img = np.ascontiguousarray(img)
    h = hashlib.blake2b(img.tobytes(), digest_size=16)
    h.update(repr(img.shape).encode())
    grey = img[..., 0] if img.ndim == 3 and img.shape[2] == 1 else img
    if grey.ndim == 3:
        grey = cv2.cvtColor(grey, cv2.COLOR_RGB2GRAY)
    thumb = cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA)
    rec = {"exact": h.hexdigest(), "thumb": thumb.ravel(), "small": small}
    if with_phash:
        rec["phash"] = phash_batch(small[None])[0]
    return rec


def _empty_record(key: str) -> dict:
    return {"key": key, "exact": "", "phash": np.uint64(0), "thumb": np.zeros(THUMB * THUMB, np.uint8),
            "height": 0, "width": 0, "channels": 0, "mode": "", "format": "", "nbytes": 0, "error": ""}


def hash_file(path: str, key: str = "") -> dict:
    """Hash record of one image file: exact and perceptual hashes, thumbnail, size, mode, format
    (from the file header, Pillow), or `error` when it cannot be decoded."""
    from PIL import Image

    rec = _empty_record(key or path)
    try:
        rec["nbytes"] = os.path.getsize(path)
        with Image.open(path) as im:        # header only: true size, mode and format
            rec.update(width=im.size[0], height=im.size[1], mode=im.mode, format=im.format or "")
            rec["channels"] = len(im.getbands())
    except Exception as e:  # noqa: BLE001 - recorded; decode_image below says more when it fails too
        rec["error"] = f"{type(e).__name__}: {e}"
    try:
        rec.update(_pixel_record(decode_image(path, min_side=DECODE_MIN_SIDE)))
        del rec["small"]
        rec["error"] = ""
    except ImageError as e:
        rec["error"] = str(e).split(". Fix")[0]
    return rec


def _hash_files(paths: list[str], workers: int) -> list[dict]:
    if workers <= 1 or len(paths) < 64:
        return [hash_file(p) for p in paths]
    chunk = max(16, len(paths) // (workers * 8))
    with ProcessPoolExecutor(workers) as ex:
        return list(ex.map(hash_file, paths, chunksize=chunk))


def _records_frame(recs: list[dict]) -> dict:
    out = {f: [r[f] for r in recs] for f in _FIELDS}
    out["phash"] = np.array(out["phash"], dtype=np.uint64)
    out["thumb"] = np.stack(out["thumb"]) if recs else np.zeros((0, THUMB * THUMB), np.uint8)
    return out


def file_key(path: Path) -> str:
    st = path.stat() if path.exists() else None
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}" if st else f"{path.resolve()}|missing"


class HashCache:
    """Hash records on disk, keyed by 'path|size|mtime' (files) or the pixel hash (arrays)."""
    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.records: dict[str, dict] = {}
        self.dirty = False
        if self.path and self.path.is_file():
            try:
                with np.load(self.path, allow_pickle=False) as z:
                    cols = {f: z[f] for f in _FIELDS}
                for i, key in enumerate(cols["key"].tolist()):
                    self.records[key] = {f: cols[f][i] for f in _FIELDS}
            except (OSError, KeyError, ValueError):
                self.records = {}      # unreadable cache: start again

    def get(self, keys: list[str]) -> list[dict | None]:
        return [self.records.get(k) for k in keys]

    def put(self, recs: list[dict]) -> None:
        for r in recs:
            self.records[r["key"]] = r
        self.dirty = self.dirty or bool(recs)

    def save(self) -> None:
        if not (self.path and self.dirty):
            return
        cols = _records_frame(list(self.records.values()))
        arrays = {f: np.asarray(cols[f]) for f in _FIELDS}
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:      # a file object: np.savez would append .npz to a name
                np.savez(fh, **arrays)
        atomic_write_with(self.path, write)
        self.dirty = False


def split_hashes(comp, split: str, cache: HashCache, workers: int = 0, log=print) -> tuple[pd.DataFrame, np.ndarray]:
    """(one hash record per row of comp.<split>: the columns of _FIELDS but key and thumb;
    the (N, 256) thumbnails). Files are decoded once; cached records are reused."""
    table = comp.train if split == "train" else comp.test
    workers = workers if workers > 0 else max(1, min(os.cpu_count() or 1, 8))
    if comp.source_col == "index":
        pix = comp.pixels(split)
        recs = []
        for i in table["index"].to_numpy():
            img = pix[int(i)]
            rec = _empty_record("")
            rec.update(_pixel_record(img, with_phash=False), height=img.shape[0], width=img.shape[1],
                       channels=img.shape[2], mode="L" if img.shape[2] == 1 else "RGB", format="array",
                       nbytes=img.nbytes)
            recs.append(rec)
        hashes = phash_batch(np.stack([r.pop("small") for r in recs])) if recs else []
        for r, h in zip(recs, hashes):
            r["phash"] = h
    else:
        paths = [Path(comp.root) / p for p in table["path"]]
        keys = [file_key(p) for p in paths]
        recs = cache.get(keys)
        todo = [i for i, r in enumerate(recs) if r is None]
        if todo:
            log(f"hashing {len(todo)} {split} image(s) ({len(recs) - len(todo)} cached)")
            fresh = _hash_files([str(paths[i]) for i in todo], workers)
            for i, r in zip(todo, fresh):
                r["key"] = keys[i]
                recs[i] = r
            cache.put(fresh)
    cols = _records_frame(recs)
    return pd.DataFrame({f: cols[f] for f in _FIELDS if f not in ("thumb", "key")}), cols["thumb"]


def popcount64(x: np.ndarray) -> np.ndarray:
    return np.unpackbits(x.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1).sum(1, dtype=np.int64)


def _band_pairs(band: np.ndarray, max_pairs: int = 2_000_000):
    """Yield (i, j) index arrays of all pairs of rows with equal band values, in chunks."""
    order = np.argsort(band, kind="stable")
    b = band[order]
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    ends = np.r_[starts[1:], len(b)]
    size = ends - starts
    end_of = np.repeat(ends, size)         # end of each sorted position's group
    pos = np.arange(len(b))
    d = 1
    active = pos[end_of - pos > 1]
    while len(active):
        for s in range(0, len(active), max_pairs):
            a = active[s:s + max_pairs]
            yield order[a], order[a + d]
        d += 1
        active = active[end_of[active] - active > d]


def near_pairs(hashes: np.ndarray, thumbs: np.ndarray, threshold: int = DEFAULT_THRESHOLD,
               min_corr: float = MIN_CORR) -> pd.DataFrame:
    """All pairs (i < j) whose pHashes differ in <= threshold bits and whose thumbnails
    correlate >= min_corr: columns i, j, distance, corr."""
    n = len(hashes)
    h = hashes.astype(np.uint64)
    nb = threshold + 1
    edges = np.linspace(0, 64, nb + 1).astype(int)
    found = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        band = (h >> np.uint64(64 - hi)) & np.uint64((1 << (hi - lo)) - 1)
        for i, j in _band_pairs(band):
            dist = popcount64(h[i] ^ h[j])
            keep = dist <= threshold
            if keep.any():
                i, j = np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])
                found.append(np.stack([i, j, dist[keep]], 1))
    if not found or n < 2:
        return pd.DataFrame({"i": [], "j": [], "distance": [], "corr": []}).astype(
            {"i": int, "j": int, "distance": int, "corr": float})
    pairs = np.unique(np.concatenate(found), axis=0)
    t = thumbs.astype(np.float32)
    t = t - t.mean(1, keepdims=True)
    norm = np.linalg.norm(t, axis=1)
    norm[norm == 0] = 1.0
    t /= norm[:, None]
    corr = np.einsum("ij,ij->i", t[pairs[:, 0]], t[pairs[:, 1]])
    flat = (np.linalg.norm(thumbs[pairs[:, 0]].astype(np.float32) - thumbs[pairs[:, 1]], axis=1) == 0)
    keep = (corr >= min_corr) | flat       # two identical flat images have no correlation
    return pd.DataFrame({"i": pairs[keep, 0], "j": pairs[keep, 1], "distance": pairs[keep, 2],
                         "corr": corr[keep]})


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected-component label of each of n nodes given edges (i, j) (scipy.sparse.csgraph)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    g = coo_matrix((np.ones(len(i), np.int8), (np.asarray(i, int), np.asarray(j, int))), shape=(n, n))
    return connected_components(g, directed=False)[1]


def find_duplicates(comp, cache_path: str | Path | None = None, threshold: int = DEFAULT_THRESHOLD,
                    workers: int = 0, log=print) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Duplicate clusters of the competition's train and test images by exact and hash pairs.

    Returns (clusters, hashes, thumbs): clusters has one row per image that has a copy
    (CLUSTER_COLUMNS: cluster, id, split, label, source, kind = exact/near, distance (max pHash
    bits to the cluster's first member), label_conflict, spans = train/test/train+test,
    similarity, method), ordered by cluster; hashes and thumbs as hash_table's."""
    hashes, thumb = hash_table(comp, cache_path, workers, log)
    return cluster_table(hashes, thumb, threshold), hashes, thumb


def hash_table(comp, cache_path: str | Path | None = None, workers: int = 0,
               log=print) -> tuple[pd.DataFrame, np.ndarray]:
    """(hashes: one row per image of train then test (split, id, label, source, hash record
    columns); thumbs: the (N, 256) grey thumbnails of those rows). Cached."""
    cache = HashCache(cache_path)
    parts, thumbs = [], []
    for split in ("train", "test"):
        table = comp.train if split == "train" else comp.test
        if table is None or not len(table):
            continue
        h, th = split_hashes(comp, split, cache, workers, log)
        h.insert(0, "split", split)
        h.insert(1, "id", table["id"].astype(str).to_numpy())
        h.insert(2, "label", table["label"].to_numpy() if "label" in table else None)
        h.insert(3, "source", table[comp.source_col].astype(str).to_numpy())
        thumbs.append(th)
        parts.append(h)
    cache.save()
    hashes = pd.concat(parts, ignore_index=True)
    return hashes, np.concatenate(thumbs) if thumbs else np.zeros((0, THUMB * THUMB), np.uint8)


def cluster_table(hashes: pd.DataFrame, thumb: np.ndarray, threshold: int = DEFAULT_THRESHOLD,
                  emb: np.ndarray | None = None, feature: pd.DataFrame | None = None) -> pd.DataFrame:
    """Clusters = connected components of the exact, hash (pHash + thumbnail) and feature pairs.

    emb: unit embeddings of the rows of `hashes` (or None); feature: pairs (i, j) of rows whose
    embeddings are copies (feature_pairs that pass the threshold and the margin)."""
    ok = (hashes["error"] == "").to_numpy()
    rows = np.flatnonzero(ok)
    n = len(hashes)
    near = near_pairs(hashes["phash"].to_numpy()[rows], thumb[rows], threshold)
    ex = hashes.loc[ok, "exact"]
    codes = pd.factorize(ex)[0]
    first_of_code = ex.index.to_numpy()[np.unique(codes, return_index=True)[1]]
    ei, ej = first_of_code[codes], ex.index.to_numpy()
    keep = ei != ej
    fi = np.zeros(0, int) if feature is None else feature["i"].to_numpy(int)
    fj = np.zeros(0, int) if feature is None else feature["j"].to_numpy(int)
    edges = pd.DataFrame({"i": np.r_[ei[keep], rows[near["i"].to_numpy(int)], fi],
                          "j": np.r_[ej[keep], rows[near["j"].to_numpy(int)], fj],
                          "method": ["exact"] * int(keep.sum()) + ["hash"] * len(near) + ["feature"] * len(fi)})
    comp_id = components(n, edges["i"].to_numpy(int), edges["j"].to_numpy(int))
    sizes = np.bincount(comp_id, minlength=n)
    member = ok & (sizes[comp_id] > 1)
    if not member.any():
        return pd.DataFrame(columns=CLUSTER_COLUMNS)
    df = hashes.loc[member, ["id", "split", "label", "source", "exact", "phash"]].copy()
    df["comp"] = comp_id[member]
    # clusters numbered by their first row (train before test, input order)
    df["cluster"] = pd.factorize(df["comp"])[0]
    g = df.groupby("cluster", sort=False)
    df["kind"] = np.where(g["exact"].transform("nunique") == 1, "exact", "near")
    head = g["phash"].transform("first").to_numpy(np.uint64)
    df["distance"] = popcount64(df["phash"].to_numpy(np.uint64) ^ head)
    df["distance"] = df.groupby("cluster")["distance"].transform("max")
    train_labels = df["label"].where(df["split"] == "train")
    df["label_conflict"] = train_labels.groupby(df["cluster"]).transform("nunique") > 1
    sp = g["split"].transform(lambda s: "+".join(sorted(set(s), key=["train", "test"].index)))
    df["spans"] = sp
    df["similarity"], df["method"] = _row_edges(edges, emb, df.index.to_numpy())
    return df[CLUSTER_COLUMNS].reset_index(drop=True)


def _row_edges(edges: pd.DataFrame, emb: np.ndarray | None, rows: np.ndarray) -> tuple[np.ndarray, list]:
    """Per row: the highest embedding similarity to a cluster mate it is paired with (NaN without
    embeddings) and the methods that paired it (exact, hash, feature; '+'-joined)."""
    both = pd.concat([edges, edges.rename(columns={"i": "j", "j": "i"})], ignore_index=True)
    if emb is not None and len(both):
        both["sim"] = np.einsum("ij,ij->i", emb[both["i"].to_numpy(int)], emb[both["j"].to_numpy(int)])
    else:
        both["sim"] = np.nan
    g = both.groupby("i")
    sim = g["sim"].max().reindex(rows).round(4).to_numpy()
    order = {m: k for k, m in enumerate(METHODS)}
    meth = g["method"].agg(lambda m: "+".join(sorted(set(m), key=order.get))).reindex(rows)
    return sim, meth.fillna("").tolist()


def cluster_groups(table: pd.DataFrame, clusters: pd.DataFrame, group_col: str = "") -> tuple[np.ndarray, int]:
    """(group label per row, number of clusters with >= 2 rows of `table`): rows of one duplicate
    cluster share a group; with group_col a cluster joins its members' groups (union of both)."""
    n = len(table)
    ids = table["id"].astype(str).to_numpy()
    pos = pd.Series(np.arange(n), index=ids)
    c = clusters[(clusters["split"] == "train") & clusters["id"].astype(str).isin(pos.index)]
    rows = pos.loc[c["id"].astype(str)].to_numpy()
    cl = c["cluster"].to_numpy()
    multi = pd.Series(cl).map(pd.Series(cl).value_counts()).to_numpy() >= 2
    rows, cl = rows[multi], cl[multi]
    n_clusters = int(len(np.unique(cl)))
    first = pd.Series(rows).groupby(cl).transform("first").to_numpy()
    i, j = list(first), list(rows)
    if group_col:
        g = table[group_col].astype(str)
        gfirst = pd.Series(np.arange(n)).groupby(g.to_numpy()).transform("first").to_numpy()
        i, j = i + list(gfirst), j + list(range(n))
    return components(n, np.asarray(i, int), np.asarray(j, int)), n_clusters

