"""The data audit (src/audit.py): what will distort CV, before any GPU time.

Reads the competition (any layout), never modifies it, and writes ``reports/audit/``:

    audit.html        self-contained page: counts, image statistics, duplicates, verdict
    audit.json        summary (input_dir, settings, counts, features, shift); make_folds reads it with
                      duplicates.csv
    duplicates.csv    cluster, id, split, label, source, kind, distance, label_conflict, spans, similarity,
                      method
    pairs.csv         feature pairs by similarity: copies, those to check (0.80 up to the copy threshold:
                      more often look-alikes) and the borderline ones, with their band's expected precision
    adversarial.csv   training images by p_test (adversarial validation), test_like
    embed_cache_*.npz embeddings (a second run embeds nothing)
    images.csv        one row per image: split, id, label, width, height, channels, mode, format,
                      nbytes, error
    class_counts.csv  train rows per class
    *.png             class counts, image sizes train vs test, contact sheet, duplicate clusters
    hash_cache.npz    hashes of every image (a second run decodes nothing)

Duplicates come from foldkit.audit.duplicates (hash and feature pairs), embeddings from foldkit.audit.embed,
the train/test shift from foldkit.audit.shift; figures, tables and the page's pieces from foldkit.report.page. Each
image is decoded once (at reduced size for large JPEGs).
"""
from __future__ import annotations

import dataclasses
import html
from pathlib import Path

import numpy as np
import pandas as pd

from foldkit import figures
from foldkit.audit import duplicates as dup
from foldkit.audit import shift as adv
from foldkit.audit import embed
from foldkit.data.copies import CACHE_FILE, MIN_CORR, cluster_table, hash_table, popcount64
from foldkit.data.images import decode_image
from foldkit.data.reading import open_competition
from foldkit.folds.audit_files import ADVERSARIAL_CSV, DUPLICATES_CSV, audit_dir
from foldkit.io import atomic_write_bytes, atomic_write_text, atomic_write_with
from foldkit.report import page

TINY_SIDE = 16        # shortest side below this: "tiny"
HUGE_SIDE = 4096      # longest side above this: "huge" (slow to decode, resized anyway)
GALLERY_CLUSTERS = 24
BORDER = 0.03         # pairs.csv lists feature pairs down to this much below the copy margin (and 0.05
                      # below the threshold): the borderline ones
CALIBRATED_NOTE = "calibrated on planted copies and natural look-alikes"
GALLERY_PAIRS = 8     # pairs shown per group (strongest train<->test copies, weakest copies, strongest non-copies)
GALLERY_TEST_LIKE = 16
SHEET_PER_CLASS = 8


def image_loader(comp):
    """load(split, source) -> uint8 image, for the galleries."""

    def load(split: str, source: str) -> np.ndarray:
        if comp.source_col == "index":
            return comp.pixels(split)[int(source)]
        return decode_image(Path(comp.root) / source, min_side=128)
    return load


def image_table(hashes: pd.DataFrame, bad_files: list) -> pd.DataFrame:
    """One row per image with its size, mode, format and read error, plus files the reader could
    not find (missing)."""
    cols = ["split", "id", "label", "source", "width", "height", "channels", "mode", "format", "nbytes", "error"]
    t = hashes[cols].copy()
    missing = [{"split": s, "id": "", "label": None, "source": p, "error": why} for s, _, p, why in bad_files]
    if missing:
        t = pd.concat([t, pd.DataFrame(missing)], ignore_index=True)
    return t


def image_stats(images: pd.DataFrame) -> dict:
    ok = images[images["error"].fillna("") == ""]
    side_min = ok[["width", "height"]].min(axis=1)
    side_max = ok[["width", "height"]].max(axis=1)
    return {
        "unreadable": int((images["error"].fillna("") != "").sum()),
        "tiny": int((side_min < TINY_SIDE).sum()), "huge": int((side_max > HUGE_SIDE).sum()),
        "modes": ok.groupby(["split", "mode"]).size().unstack(fill_value=0),
        "formats": ok.groupby(["split", "format"]).size().unstack(fill_value=0),
        "sizes": ok.groupby("split")[["width", "height"]].describe().round(1),
    }


# --------------------------------------------------------------------------- plots

def plot_class_counts(counts: pd.Series, path: Path) -> Path:
    n = len(counts)
    fig = figures.figure(max(6, min(20, 0.35 * n + 3)), 3.5)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar([str(c) for c in counts.index], counts.to_numpy(), color="tab:blue")
    ax.set_title(f"train rows per class ({n} classes, {int(counts.sum())} rows)")
    if n > 12:
        ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    return figures.save_png(fig, path)


def plot_sizes(images: pd.DataFrame, path: Path) -> Path:
    ok = images[images["error"].fillna("") == ""]
    fig = figures.figure(12, 3.3)
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    for split, color in (("train", "tab:blue"), ("test", "tab:orange")):
        s = ok[ok["split"] == split]
        if s.empty:
            continue
        for ax, values, name in ((axes[0], s["width"], "width"), (axes[1], s["height"], "height"),
                                 (axes[2], s["width"] / s["height"].clip(lower=1), "aspect ratio w/h")):
            ax.hist(values, bins=30, alpha=0.55, color=color, label=f"{split} ({len(s)})", density=True)
            ax.set_title(name)
    axes[0].legend()
    return figures.save_png(fig, path)


TILE = 72


def _tile(img: np.ndarray) -> np.ndarray:
    """An image as a TILE x TILE RGB tile (aspect kept, grey padding)."""
    import cv2
    img = np.asarray(img)
    if img.ndim == 2 or img.shape[2] == 1:
        img = np.repeat(img.reshape(img.shape[0], img.shape[1], 1), 3, axis=2)
    h, w = img.shape[:2]
    f = TILE / max(h, w)
    img = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))),
                     interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_NEAREST)
    out = np.full((TILE, TILE, 3), 200, np.uint8)
    y, x = (TILE - img.shape[0]) // 2, (TILE - img.shape[1]) // 2
    out[y:y + img.shape[0], x:x + img.shape[1]] = img
    return out


def mosaic_row(items: list[tuple[str, str]], load, ncols: int) -> np.ndarray:
    """(split, source) images side by side (a red tile where one cannot be loaded).
    Hand-written with numpy: a matplotlib grid of hundreds of axes takes tens of seconds."""
    tiles = []
    for split, source in items[:ncols]:
        try:
            tiles.append(_tile(load(split, source)))
        except Exception:  # noqa: BLE001 - the audit goes on; images.csv names the error
            tiles.append(np.full((TILE, TILE, 3), (220, 60, 60), np.uint8))
    tiles += [np.full((TILE, TILE, 3), 255, np.uint8)] * (ncols - len(tiles))
    pad = np.full((TILE, 4, 3), 255, np.uint8)
    return np.concatenate([x for t in tiles for x in (t, pad)], axis=1)


def png_bytes(rgb: np.ndarray) -> bytes:
    import cv2
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return buf.tobytes()


def write_mosaic(rows: list[np.ndarray], path: Path) -> Path:
    gap = [np.full((4, rows[0].shape[1], 3), 255, np.uint8)] if rows else []
    img = np.concatenate([x for r in rows for x in [r] + gap]) if rows else np.full((8, 8, 3), 255, np.uint8)
    atomic_write_bytes(path, png_bytes(img))
    return path


def contact_sheet(hashes: pd.DataFrame, load, seed: int = 0) -> tuple[list[str], list[np.ndarray]]:
    """(class names, one mosaic row of up to SHEET_PER_CLASS random train images each)."""
    tr = hashes[(hashes["split"] == "train") & (hashes["error"] == "")]
    names, rows = [], []
    for label, g in list(tr.groupby("label", sort=True))[:40]:
        pick = g.sample(min(SHEET_PER_CLASS, len(g)), random_state=seed)
        names.append(str(label))
        rows.append(mosaic_row(list(zip(pick["split"], pick["source"])), load, SHEET_PER_CLASS))
    return names, rows


def cluster_gallery(clusters: pd.DataFrame, load) -> tuple[list[str], list[np.ndarray]]:
    """(caption, mosaic row) per cluster, label conflicts and train<->test clusters first."""
    order = clusters.groupby("cluster").agg(conflict=("label_conflict", "first"), spans=("spans", "first"))
    order = order.assign(tt=order["spans"] == "train+test").sort_values(["conflict", "tt"], ascending=False,
                                                                        kind="stable")
    captions, rows = [], []
    for cid in order.index[:GALLERY_CLUSTERS]:
        m = clusters[clusters["cluster"] == cid]
        members = ", ".join(f"{s} {i}" + (f" ({lab})" if s == "train" else "")
                            for s, i, lab in zip(m["split"], m["id"], m["label"]))
        captions.append(f"cluster {cid}: {m['kind'].iloc[0]}, {m['spans'].iloc[0]}"
                        + (", LABEL CONFLICT" if m["label_conflict"].iloc[0] else "") + f": {members}")
        rows.append(mosaic_row(list(zip(m["split"], m["source"])), load, 8))
    return captions, rows


# --------------------------------------------------------------------------- learned features

def feature_plan(cfg) -> dict:
    """What the feature search will do (audit.json's `features`), checked before any image is read:
    model, size, threshold, margin, weights or why there are none. Bad settings: EmbedError."""
    if cfg.embed_size < embed.MIN_SIZE:
        raise embed.EmbedError(f"--embed-size {cfg.embed_size}: the backbone needs at least {embed.MIN_SIZE} px "
                               f"(default {embed.DEFAULT_SIZE}; calibrated: "
                               f"{', '.join(str(z) for m, z in sorted(embed.CALIBRATED) if m == cfg.embed_model)})")
    thr, margin, calibrated = embed.threshold_for(cfg.embed_model, cfg.embed_size, cfg.embed_threshold)
    edges = [lo for lo, _ in dup.BANDS]
    source, why = embed.weights_source(cfg.embed_model, cfg.embed_weights)
    if source:
        embed.check_model(cfg.embed_model)
    return {"model": cfg.embed_model, "size": cfg.embed_size, "threshold": thr, "margin": margin,
            "check_from": embed.check_from(thr), "calibrated": calibrated,
            "bands": [{"from": lo, "to": hi, "expected_precision": prec}
                      for (lo, prec), hi in zip(dup.BANDS, edges[1:] + [1.0])],
            "weights": source or None, "searched": bool(source), "not_searched": why}


def feature_search(cfg, comp, hashes: pd.DataFrame, out_dir: Path, plan: dict, log=print) -> tuple:
    """(unit embeddings of the rows of `hashes`, candidate feature pairs: the copies, those to check
    and the borderline ones, down to BORDER below the margin and 0.05 below the lowest similarity
    listed, with their band, expected precision, verdict (copy, to check, '') and `copy` flag).
    Without weights (plan["searched"] False): (None, None)."""
    if not plan["searched"]:
        return None, None
    emb = embed.competition_embeddings(comp, hashes, out_dir / embed.cache_name(cfg.embed_model, cfg.embed_size),
                                       cfg.embed_model, plan["weights"], cfg.embed_size, log, cfg.audit_workers)
    pairs = dup.feature_pairs(emb, floor=plan["check_from"] - 0.05)
    pairs = pairs[pairs["margin"] >= plan["margin"] - BORDER].reset_index(drop=True)
    pairs["band"], pairs["expected_precision"] = dup.band_of(pairs["similarity"])
    listed = pairs["margin"] >= plan["margin"]
    pairs["copy"] = listed & (pairs["similarity"] >= plan["threshold"])
    to_check = listed & ~pairs["copy"] & (pairs["similarity"] >= plan["check_from"])
    pairs["verdict"] = np.where(pairs["copy"], "copy", np.where(to_check, "to check", ""))
    plan["candidate_pairs"] = int(len(pairs))
    return emb, pairs


def pairs_table(pairs: pd.DataFrame, hashes: pd.DataFrame) -> pd.DataFrame:
    """pairs.csv: feature pairs by similarity, with their margin over the images' background
    similarity, copy (both at or above the calibrated values), verdict (copy, to check: below the copy
    threshold, more often a look-alike than a copy; '' for the borderline ones), similarity band and its
    expected precision, both images' id, split, label, source and the pHash bits between them."""
    cols = ["id", "split", "label", "source"]
    a = hashes.iloc[pairs["i"].to_numpy(int)][cols].reset_index(drop=True).add_suffix("_a")
    b = hashes.iloc[pairs["j"].to_numpy(int)][cols].reset_index(drop=True).add_suffix("_b")
    ph = hashes["phash"].to_numpy(np.uint64)
    bits = popcount64(ph[pairs["i"].to_numpy(int)] ^ ph[pairs["j"].to_numpy(int)])
    t = pd.concat([pd.DataFrame({"rank": np.arange(1, len(pairs) + 1),
                                 "similarity": pairs["similarity"].round(4).to_numpy(),
                                 "margin": pairs["margin"].round(4).to_numpy(),
                                 "copy": pairs["copy"].to_numpy(), "verdict": pairs["verdict"].to_numpy(),
                                 "band": pairs["band"].to_numpy(),
                                 "expected_precision": pairs["expected_precision"].to_numpy()}), a, b], axis=1)
    t["hash_bits"] = bits
    return t


def _named(split, id_, label) -> str:
    return f"{split} {id_}" + (f" ({label})" if pd.notna(label) and str(label) != "" else "")


def pair_gallery(table: pd.DataFrame, load) -> tuple[list[str], list[np.ndarray]]:
    """(caption, the two images side by side) for the strongest train<->test copies, the weakest
    pairs called copies, a random sample of the pairs to check (not the top of their ranking: what
    the band looks like) and the strongest not called copies."""
    tt = table[(table["split_a"] != table["split_b"]) & table["copy"]].head(GALLERY_PAIRS)
    above = table[table["copy"]].sort_values("margin", kind="stable").head(GALLERY_PAIRS)
    check = table[table["verdict"] == "to check"]
    check = check.sample(min(GALLERY_PAIRS, len(check)), random_state=0).sort_values("similarity", ascending=False)
    below = table[table["verdict"] == ""].sort_values("margin", ascending=False, kind="stable").head(GALLERY_PAIRS)
    captions, rows = [], []
    for name, part in (("train<->test copy", tt), ("weakest called a copy", above),
                       ("to check (a random sample)", check), ("strongest NOT called a copy", below)):
        for r in part.itertuples():
            prec = "" if pd.isna(r.expected_precision) else f", expected precision {r.expected_precision:.2f}"
            captions.append(f"{name}: similarity {r.similarity:.3f}{prec}, margin {r.margin:.3f} "
                            f"({r.hash_bits} pHash bits): "
                            f"{_named(r.split_a, r.id_a, r.label_a)} | {_named(r.split_b, r.id_b, r.label_b)}")
            rows.append(mosaic_row([(r.split_a, r.source_a), (r.split_b, r.source_b)], load, 2))
    return captions, rows


def train_test_shift(comp, hashes: pd.DataFrame, emb: np.ndarray) -> tuple[dict, pd.DataFrame | None]:
    """(summary["shift"], adversarial.csv's table) from the embeddings; ({}, None) without test."""
    ok = (hashes["error"] == "").to_numpy()
    tr, te = ok & (hashes["split"] == "train").to_numpy(), ok & (hashes["split"] == "test").to_numpy()
    if tr.sum() < adv.FOLDS or te.sum() < adv.FOLDS:
        return {}, None
    info, p_test = adv.adversarial_validation(emb[tr], emb[te])
    table = adv.test_like_table(hashes[tr], p_test)
    test_labels = comp.test["label"] if comp.test is not None and "label" in comp.test else None
    priors = adv.class_priors(comp.train["label"], test_labels)
    info["class_priors"] = None if priors is None else priors.to_dict(orient="index")
    info["verdict"] = adv.shift_verdict(info, priors)
    return info, table


def test_like_gallery(table: pd.DataFrame, load) -> tuple[list[str], list[np.ndarray]]:
    top = table.head(GALLERY_TEST_LIKE)
    caption = "most test-like training images: " + ", ".join(f"{i} ({p:.2f})" for i, p in
                                                              zip(top["id"], top["p_test"]))
    return [caption], [mosaic_row(list(zip(["train"] * len(top), top["source"])), load, GALLERY_TEST_LIKE)]


# --------------------------------------------------------------------------- verdict + page

def verdict(summary: dict, stats: dict, n_train: int) -> list[str]:
    """What will distort CV, and what to do (one sentence each)."""
    d = summary["duplicates"]
    out = []
    if d["train_clusters"]:
        share = d["train_images_in_clusters"] / max(1, n_train)
        out.append(f"{d['train_clusters']} duplicate cluster(s) inside train ({d['train_images_in_clusters']} "
                   f"images, {share:.1%}): random folds put copies on both sides and inflate CV. "
                   "make_folds.py now keeps each cluster inside one fold (its default once this audit exists).")
    bands = summary.get("feature_bands") or []
    if d["train_test_clusters"]:
        out.append(f"{d['test_images_with_train_copy']} test image(s) have a copy in train "
                   f"({d['train_test_clusters']} cluster(s)): a leak; the public score on them says little "
                   "about new images, and their train labels can be looked up." + _precision_note(bands))
    h, f = summary.get("duplicates_hash_only"), summary.get("features", {})
    if h and (d["test_images_with_train_copy"] > h["test_images_with_train_copy"]
              or d["train_images_in_clusters"] > h["train_images_in_clusters"]):
        out.append(f"of these, the feature search found what the hash misses (mirrored, cropped, recoloured "
                   f"copies): {d['test_images_with_train_copy'] - h['test_images_with_train_copy']} more test "
                   f"image(s) with a train copy and {d['train_images_in_clusters'] - h['train_images_in_clusters']} "
                   "more train images in clusters; check the borderline pairs on the page (pairs.csv).")
    if d["label_conflicts"]:
        out.append(f"{d['label_conflicts']} cluster(s) carry different labels for copies of one image: "
                   "label noise; check them in duplicates.csv (label_conflict) and fix or drop.")
    check = [b for b in bands if b["verdict"] == "to check"]
    if check:
        n = sum(b["pairs"] for b in check)
        out.append(f"{n} more feature pair(s) ({sum(b['train_test_pairs'] for b in check)} train/test) with "
                   f"similarity {f['check_from']:.2f}-{f['threshold']:.2f} are to check, not counted as copies: "
                   f"in this band a blind look found more look-alikes than copies (expected precision "
                   f"{_precisions(check)}); they are kept out of the leak and label-conflict counts (make_folds still "
                   "keeps each pair in one fold). Look at them on the page (pairs.csv, verdict 'to check'); to count "
                   f"them as copies, run the audit with --embed-threshold {f['check_from']:.2f}.")
    if stats["unreadable"]:
        out.append(f"{stats['unreadable']} unreadable image(s) (images.csv, column error): "
                   "fix them or train with --skip-bad-images.")
    counts = summary["class_counts"]
    if counts and max(counts.values()) > 10 * max(1, min(counts.values())):
        out.append("classes are strongly imbalanced (>10x): consider --balance and a metric such as f1_macro.")
    if not f.get("searched", True):
        out.append(f"not searched: copies that are mirrored, cropped, shifted or recoloured (a perceptual "
                   f"hash misses them) and train/test shift; {f.get('not_searched', '')}.")
    out += summary.get("shift", {}).get("verdict", [])
    if not out:
        out.append("nothing found that would distort CV: no duplicates, no train/test copies, no unreadable files.")
    return out


def _precisions(bands: list[dict]) -> str:
    return ", ".join(f"{b['expected_precision']:.2f} at {b['band']}" for b in bands)


def _precision_note(bands: list[dict]) -> str:
    """How many of the test images' feature copies sit in each similarity band, with the band's
    expected precision (exact and hash copies are sure)."""
    copies = [b for b in bands if b["verdict"] == "copy" and b["test_images"]]
    if not copies:
        return ""
    return (" Of them, by their most similar feature pair (expected precision from a blind look at natural "
            "look-alikes; exact and hash copies are sure): "
            + ", ".join(f"{b['test_images']} at {b['band']} ({b['expected_precision']:.2f})" for b in copies) + ".")


def _rows_html(captions: list[str], rows: list[np.ndarray]) -> str:
    e = html.escape
    return "".join(f"<div class='muted'>{e(c)}</div><img alt='{e(c[:40])}' src='{page.png_uri(png_bytes(r))}'>"
                   for c, r in zip(captions, rows))


def _features_html(summary: dict, galleries: dict) -> list[str]:
    """The page's feature-copy part: what was searched, the counts against the hash alone, pairs."""
    e = html.escape
    f = summary["features"]
    if not f["searched"]:
        return [f"<div class='warn'>Not searched: mirrored, cropped, shifted or recoloured copies and "
                f"train/test shift ({e(f['not_searched'])}).</div>"]
    out = [f"<p class='muted'>feature: {e(f['model'])} ImageNet features at {f['size']} px (image + mirror), "
           f"cosine similarity &ge; {f['threshold']:.3f} and &ge; {f['margin']:.2f} above both images' "
           "similarity to their r-th nearest neighbour (r = 1% of the images, 2 to 10); pairs from "
           f"{f['check_from']:.2f} to {f['threshold']:.2f} are <b>to check</b>, not counted as copies "
           f"({CALIBRATED_NOTE if f['calibrated'] else 'NOT calibrated for this model/size'}). "
           "All candidate pairs, ranked: pairs.csv</p>"]
    bands = summary.get("feature_bands") or []
    if bands:
        out.append("<h3>feature pairs by similarity band</h3><p class='muted'>expected precision: the share of "
                   "same photos or items in a blind look at random pairs of each band on natural look-alikes "
                   "(faces, products); below the copy threshold the pairs are more often look-alikes than copies.</p>"
                   + page.table(pd.DataFrame(bands).drop(columns="lowest_similarity"), index=False))
    h = summary.get("duplicates_hash_only")
    if h:
        d = summary["duplicates"]
        out.append(f"<p>hash search alone: {h['test_images_with_train_copy']} test image(s) with a train copy, "
                   f"{h['train_images_in_clusters']} train images in clusters; with features: "
                   f"{d['test_images_with_train_copy']} and {d['train_images_in_clusters']}.</p>")
    if galleries.get("pairs", ([],))[0]:
        out.append("<h3>pairs by similarity (check the borderline ones)</h3>" + _rows_html(*galleries["pairs"]))
    return out


def _shift_html(summary: dict, galleries: dict) -> list[str]:
    """The page's train/test shift part (adversarial validation, class priors, test-like images)."""
    e = html.escape
    out = []
    sh = summary.get("shift") or {}
    if sh:
        out.append("<h2>Train/test shift (adversarial validation)</h2>"
                   + "".join(f"<div class='warn'>{e(page.sentence(v))}</div>" for v in sh["verdict"])
                   + f"<p>ROC AUC {sh['auc']:.3f} &plusmn; {sh['auc_std']:.3f} ({sh['folds']}-fold "
                   f"{e(sh['classifier'])} on the embeddings; 0.5 = no detectable shift). Every training "
                   "image's p_test: adversarial.csv (test_like marks the most test-like 20%).</p>")
        if sh.get("class_priors"):
            out.append("<h3>class priors</h3>" + page.table(pd.DataFrame(sh["class_priors"]).T))
        if galleries.get("test_like"):
            out.append(_rows_html(*galleries["test_like"]))
    return out


def write_page(out_dir: Path, summary: dict, stats: dict, clusters: pd.DataFrame, pngs: dict,
               sheet: tuple, gallery: tuple, galleries: dict | None = None) -> Path:
    e = html.escape
    d = summary["duplicates"]
    parts = ["<h1>Data audit</h1>",
             f"<div class='muted'>{e(summary['input_dir'])} ({e(summary['layout'])} layout)</div>",
             "<h2>Verdict</h2>" + "".join(f"<div class='warn'>{e(page.sentence(v))}</div>"
                                          for v in summary["verdict"]),
             f"<p><b>{summary['train_rows']}</b> training images, <b>{summary['test_rows']}</b> test images, "
             f"<b>{len(summary['class_counts'])}</b> classes.</p>",
             page.img(pngs["class_counts.png"], "class counts"),
             "<h2>Images</h2>",
             f"<p>unreadable: {stats['unreadable']}, tiny (shortest side &lt; {TINY_SIDE} px): {stats['tiny']}, "
             f"huge (longest side &gt; {HUGE_SIDE} px): {stats['huge']}</p>",
             page.img(pngs["sizes.png"], "image sizes"),
             "<h3>sizes</h3>" + page.table(stats["sizes"]), "<h3>modes</h3>" + page.table(stats["modes"]),
             "<h3>formats</h3>" + page.table(stats["formats"]),
             "<h3>contact sheet</h3>", _rows_html(*sheet),
             "<h2>Duplicates</h2>",
             f"<p class='muted'>exact: same decoded pixels; near: 64-bit pHash within {summary['threshold']} "
             f"bits and 16x16 thumbnails correlating &ge; {MIN_CORR}. All clusters: "
             f"{page.links(['duplicates.csv'])}, every image: {page.links(['images.csv'])}</p>",
             *_features_html(summary, galleries or {}),
             page.table(pd.DataFrame([d]), index=False)]
    if gallery[0]:
        parts.append(f"<h3>clusters side by side (first {len(gallery[0])})</h3>" + _rows_html(*gallery))
        parts.append(f"<p class='muted'>the first 20 rows; all in {page.links(['duplicates.csv'])}</p>"
                     + page.table(clusters.head(20), index=False))
    parts += _shift_html(summary, galleries or {})
    text = page.document("Data audit", parts)
    path = out_dir / "audit.html"
    atomic_write_text(path, text)
    return path


def run_audit(cfg, log=print) -> dict:
    """Audit cfg.input_dir into the audit folder; returns the summary (also in audit.json)."""


    # unreadable files are reported, not fatal: the audit is where the user learns about them
    comp, _ = open_competition(dataclasses.replace(cfg, skip_bad_images=True))
    features = feature_plan(cfg)
    out_dir = audit_dir(cfg)
    hashes, thumb = hash_table(comp, out_dir / CACHE_FILE, cfg.audit_workers, log)
    emb, pairs = feature_search(cfg, comp, hashes, out_dir, features, log)
    copies = None if pairs is None else pairs[pairs["copy"]]
    clusters = cluster_table(hashes, thumb, cfg.near_threshold, emb, copies)
    counts = comp.train["label"].value_counts().sort_index()
    images = image_table(hashes, comp.bad_files)
    stats = image_stats(images)
    summary = {"input_dir": str(Path(cfg.input_dir).resolve()), "layout": comp.layout,
               "train_rows": len(comp.train), "test_rows": 0 if comp.test is None else len(comp.test),
               "class_counts": {str(k): int(v) for k, v in counts.items()},
               "threshold": cfg.near_threshold, "duplicates": dup.summarize(clusters),
               "features": features, "shift": {},
               "unreadable": stats["unreadable"], "tiny": stats["tiny"], "huge": stats["huge"]}
    galleries = {}
    load = image_loader(comp)
    if emb is not None:
        summary["duplicates_hash_only"] = dup.summarize(cluster_table(hashes, thumb, cfg.near_threshold))
        summary["feature_bands"] = dup.band_counts(pairs, hashes)
        ptable = pairs_table(pairs, hashes)
        atomic_write_with(out_dir / dup.PAIRS_CSV, lambda t: ptable.to_csv(t, index=False, lineterminator="\n"))
        galleries["pairs"] = pair_gallery(ptable, load)
        summary["shift"], test_like = train_test_shift(comp, hashes, emb)
        if test_like is not None:
            atomic_write_with(out_dir / ADVERSARIAL_CSV,
                              lambda t: test_like.to_csv(t, index=False, lineterminator="\n"))
            galleries["test_like"] = test_like_gallery(test_like, load)
    summary["verdict"] = verdict(summary, stats, len(comp.train))
    dup.write_clusters(clusters, out_dir, cfg.input_dir, cfg.near_threshold, summary)
    atomic_write_with(out_dir / "images.csv", lambda t: images.to_csv(t, index=False, lineterminator="\n"))
    atomic_write_with(out_dir / "class_counts.csv",
                      lambda t: counts.rename("count").to_csv(t, index_label="label", lineterminator="\n"))
    pngs = {"class_counts.png": plot_class_counts(counts, out_dir / "class_counts.png"),
            "sizes.png": plot_sizes(images, out_dir / "sizes.png")}
    sheet = contact_sheet(hashes, load)
    write_mosaic(sheet[1], out_dir / "contact_sheet.png")
    gallery = cluster_gallery(clusters, load) if len(clusters) else ([], [])
    if gallery[0]:
        write_mosaic(gallery[1], out_dir / "duplicates.png")
    summary["paths"] = {"html": str(write_page(out_dir, summary, stats, clusters, pngs, sheet, gallery, galleries)),
                        "duplicates": str(out_dir / DUPLICATES_CSV)}
    return summary


def summary_text(s: dict) -> str:
    d = s["duplicates"]
    f = s.get("features", {})
    how = f"pHash <= {s['threshold']} bits" + (f" or {f['model']} features: similarity >= {f['threshold']:.2f}, "
                                                f"margin >= {f['margin']:.2f}" if f.get("searched") else "")
    lines = [f"{s['layout']} layout: {s['train_rows']} train rows, {s['test_rows']} test rows, "
             f"{len(s['class_counts'])} classes; {s['unreadable']} unreadable, {s['tiny']} tiny, {s['huge']} huge",
             f"duplicates ({how}): {d['train_clusters']} cluster(s) in train "
             f"({d['train_images_in_clusters']} images, {d['exact_clusters']} exact / {d['near_clusters']} near "
             f"clusters overall), {d['test_images_with_train_copy']} test image(s) with a train copy, "
             f"{d['label_conflicts']} label conflict(s)"]
    h = s.get("duplicates_hash_only")
    if h:
        lines.append(f"hash search alone: {h['train_images_in_clusters']} train images in clusters, "
                     f"{h['test_images_with_train_copy']} test image(s) with a train copy")
    for b in s.get("feature_bands") or []:
        lines.append(f"feature pairs at {b['band']}: {b['pairs']} ({b['train_test_pairs']} train/test, "
                     f"{b['test_images']} test image(s)), expected precision {b['expected_precision']:.2f}: "
                     f"{b['verdict']}")
    if s.get("shift"):
        lines.append(f"train/test shift: adversarial validation AUC {s['shift']['auc']:.3f}")
    lines += [f"verdict: {v}" for v in s["verdict"]]
    return "\n".join(lines)
