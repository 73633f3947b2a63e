"""The data audit: duplicate clusters (exact, near, train<->test), leak-proof folds, label errors.

The competition is real MNIST (a few hundred images written as PNG) with injected copies:
re-encoded files with identical pixels (exact), upscaled + JPEG-recompressed copies (near), copies
carrying another label (label conflict) and copies placed in test/ (train<->test leak).
"""
import hashlib
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, need_shared, write_png
from foldkit import config
from foldkit.data.copies import cluster_groups, near_pairs

N_TRAIN = 240


def _mnist(n):
    sys.path.insert(0, str(REPO / "benchmarks" / "scenarios"))
    from common import read_idx
    raw = need_shared("data", "mnist")
    x = read_idx(raw / "train-images-idx3-ubyte.gz")[:n]
    y = read_idx(raw / "train-labels-idx1-ubyte.gz")[:n]
    return x, y.astype(int)


def _near_copy(img, size=56, quality=75):
    import cv2
    big = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
    return cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def _write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture(scope="module")
def comp(tmp_path_factory):
    """csv_images competition: N_TRAIN MNIST digits + injected copies. Returns (root, expected)
    with expected = list of (kind, set of ids that must share a cluster)."""
    import cv2
    x, y = _mnist(N_TRAIN + 40)
    root = tmp_path_factory.mktemp("audit") / "comp"
    rows, expected = [], []
    for i in range(N_TRAIN):
        write_png(root / "train" / f"d{i}.png", x[i])
        rows.append((f"d{i}.png", y[i]))
    for i in range(0, 6):            # exact: same pixels, other file bytes (PNG compression 0, BMP)
        ext, data = (".png", cv2.imencode(".png", x[i], [cv2.IMWRITE_PNG_COMPRESSION, 0])[1].tobytes()) \
            if i % 2 else (".bmp", cv2.imencode(".bmp", x[i])[1].tobytes())
        _write(root / "train" / f"exact{i}{ext}", data)
        rows.append((f"exact{i}{ext}", y[i]))
        expected.append(("exact", {f"d{i}.png", f"exact{i}{ext}"}))
    for i in range(10, 22):          # near: upscaled + JPEG, half of them with another label
        _write(root / "train" / f"near{i}.jpg", _near_copy(x[i], size=40 + 2 * i))
        rows.append((f"near{i}.jpg", y[i] if i % 2 else (y[i] + 1) % 10))
        expected.append(("near", {f"d{i}.png", f"near{i}.jpg"}))
    pd.DataFrame(rows, columns=["id", "label"]).to_csv(root / "train.csv", index=False)
    for j in range(30):              # test: new digits + 4 copies of train images
        write_png(root / "test" / f"t{j}.png", x[N_TRAIN + j])
    for i in (30, 31):
        write_png(root / "test" / f"leak{i}.png", x[i])
        _write(root / "test" / f"leakjpg{i}.jpg", _near_copy(x[i + 10], size=64, quality=80))
        expected += [("exact", {f"d{i}.png", f"leak{i}"}), ("near", {f"d{i + 10}.png", f"leakjpg{i}"})]
    return root, expected


def _tree_digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def run(script, *args):
    return subprocess.run([sys.executable, str(REPO / "src" / script), *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def audited(comp, tmp_path_factory):
    root, expected = comp
    reports = tmp_path_factory.mktemp("reports")
    before = _tree_digest(root)
    r = run("audit.py", "--input-dir", str(root), "--reports-dir", str(reports))
    assert r.returncode == 0, r.stderr
    assert _tree_digest(root) == before, "the audit must never modify the competition"
    return root, expected, reports, r.stdout


def test_audit_finds_injected_exact_near_and_train_test_copies(audited):
    root, expected, reports, out = audited
    dups = pd.read_csv(reports / "audit" / "duplicates.csv", dtype={"id": str})
    cluster_of = dict(zip(dups["id"], dups["cluster"]))
    for kind, ids in expected:
        clusters = {cluster_of.get(i) for i in ids}
        assert len(clusters) == 1 and None not in clusters, (kind, ids, clusters)
        if kind == "exact":
            assert (dups.loc[dups["cluster"] == clusters.pop(), "kind"] == "exact").all(), ids
    conflicts = set(dups.loc[dups["label_conflict"], "id"])
    assert {f"near{i}.jpg" for i in range(10, 22, 2)} <= conflicts      # relabelled copies are called out
    assert not {f"near{i}.jpg" for i in range(11, 22, 2)} & conflicts
    leaks = dups[dups["spans"] == "train+test"]
    assert {"leak30", "leak31", "leakjpg30", "leakjpg31"} <= set(leaks["id"])
    assert not dups["id"].str.startswith("t").any()                    # new test digits have no copy
    page = (reports / "audit" / "audit.html").read_text()
    assert "Verdict" in page and "LABEL CONFLICT" in page and "src='http" not in page
    assert "test image(s) with a train copy" in out
    images = pd.read_csv(reports / "audit" / "images.csv")
    assert len(images) == N_TRAIN + 6 + 12 + 34 and (images["error"].isna()).all()


def test_second_audit_uses_the_hash_cache(audited):
    root, _, reports, _ = audited
    r = run("audit.py", "--input-dir", str(root), "--reports-dir", str(reports))
    assert r.returncode == 0, r.stderr
    assert "hashing" not in r.stdout          # nothing decoded again for the hashes


def test_make_folds_keeps_audited_clusters_in_one_fold(audited, tmp_path):
    root, expected, reports, _ = audited
    common = ["--input-dir", str(root), "--reports-dir", str(reports), "--n-folds", "4"]
    r = run("make_folds.py", *common, "--folds-dir", str(tmp_path / "grouped"))
    assert r.returncode == 0, r.stderr
    assert "duplicate clusters kept inside one fold" in r.stdout
    grouped = pd.read_csv(tmp_path / "grouped" / "train_folds.csv", dtype={"id": str})
    meta = json.loads((tmp_path / "grouped" / "folds_meta.json").read_text())
    assert meta["duplicates"]["clusters_grouped"] >= 18 and meta["splitter"] == "StratifiedGroupKFold"
    fold_of = dict(zip(grouped["id"], grouped["fold"]))
    for _, ids in expected:
        assert len({fold_of[i] for i in ids if i in fold_of}) == 1, ids
    r = run("make_folds.py", *common, "--folds-dir", str(tmp_path / "plain"), "--no-group-duplicates")
    assert r.returncode == 0 and "duplicates not grouped" in r.stdout


def test_grouped_folds_give_an_honest_cv(tmp_path):
    """120 MNIST digits, each with an upscaled JPEG copy: a 1-nearest-neighbour classifier scored
    on folds that split the copies looks much better than on folds that keep them together."""
    import cv2
    from sklearn.neighbors import KNeighborsClassifier

    from foldkit.data.images import decode_image
    x, y = _mnist(120)
    root = tmp_path / "comp"
    rows = []
    for i in range(120):
        write_png(root / "train" / f"d{i}.png", x[i])
        _write(root / "train" / f"c{i}.jpg", _near_copy(x[i], size=48, quality=80))
        rows += [(f"d{i}.png", y[i]), (f"c{i}.jpg", y[i])]
    pd.DataFrame(rows, columns=["id", "label"]).to_csv(root / "train.csv", index=False)
    common = ["--input-dir", str(root), "--reports-dir", str(tmp_path / "rep"), "--n-folds", "4"]
    folds = {}
    for name, flag in (("grouped", "--group-duplicates"), ("plain", "--no-group-duplicates")):
        r = run("make_folds.py", *common, "--folds-dir", str(tmp_path / name), flag)
        assert r.returncode == 0, r.stderr
        folds[name] = pd.read_csv(tmp_path / name / "train_folds.csv", dtype={"id": str})
    t = folds["grouped"]
    feats = np.stack([cv2.resize(decode_image(root / p, grey=True), (28, 28), interpolation=cv2.INTER_AREA)
                      .astype(np.float32).ravel() for p in t["path"]])

    def cv(fold):
        hits = 0
        for k in range(4):
            va = fold == k
            knn = KNeighborsClassifier(1).fit(feats[~va], t["label"][~va])
            hits += int((knn.predict(feats[va]) == t["label"][va]).sum())
        return hits / len(fold)
    assert (t.groupby(t["id"].str[1:].str.split(".").str[0])["fold"].nunique() == 1).all()
    honest, leaky = cv(t["fold"].to_numpy()), cv(folds["plain"]["fold"].to_numpy())
    assert honest < leaky - 0.05, (honest, leaky)


def test_group_duplicates_without_audit_searches_them(comp, tmp_path):
    root, _ = comp
    r = run("make_folds.py", "--input-dir", str(root), "--reports-dir", str(tmp_path / "rep"),
            "--folds-dir", str(tmp_path / "f"), "--n-folds", "3", "--group-duplicates")
    assert r.returncode == 0, r.stderr
    assert "searching duplicates now" in r.stdout and "kept inside one fold" in r.stdout


def test_clusters_join_group_column_groups():
    table = pd.DataFrame({"id": list("abcdef"), "patient": ["p1", "p1", "p2", "p3", "p3", "p4"]})
    clusters = pd.DataFrame({"cluster": [0, 0, 1, 1], "id": ["b", "c", "f", "x"],
                             "split": ["train", "train", "train", "test"]})
    groups, n = cluster_groups(table, clusters, "patient")
    assert n == 1                                     # cluster 1 has one train row here
    assert groups[0] == groups[1] == groups[2]        # a-b share p1, b-c a cluster
    assert groups[3] == groups[4] != groups[0] and groups[5] not in groups[:5]


def test_near_pairs_match_brute_force():
    rng = np.random.default_rng(0)
    h = rng.integers(0, 2**63, 3000, dtype=np.int64).astype(np.uint64)
    flips = rng.integers(0, 64, (300, 3))
    for k, bits in enumerate(flips):                  # 300 planted neighbours at 1..3 bits
        v = h[k]
        for b in bits[: 1 + k % 3]:
            v ^= np.uint64(1) << np.uint64(int(b))
        h[1000 + k] = v
    thumbs = np.tile(rng.integers(0, 255, (1, 256)), (3000, 1)).astype(np.uint8)
    got = near_pairs(h, thumbs, threshold=4)
    bits = np.unpackbits((h[:, None] ^ h[None, :]).astype(">u8").view(np.uint8).reshape(3000, 3000, 8),
                         axis=2).sum(2)
    i, j = np.nonzero(np.triu(bits <= 4, 1))
    assert set(zip(got["i"], got["j"])) == set(zip(i, j)) and len(i) >= 300


@pytest.mark.parametrize("layout", ["numpy", "class_folders", "pixel_csv"])
def test_audit_runs_on_every_layout(layout, tmp_path):
    from foldkit.audit.run import run_audit
    x, y = _mnist(60)
    x = x.copy()
    x[50] = x[3]                                     # one exact copy inside train
    root = tmp_path / layout
    root.mkdir()
    if layout == "numpy":
        np.save(root / "x_train.npy", x[:50 + 1])
        np.save(root / "y_train.npy", y[:51])
        np.save(root / "x_test.npy", x[[51, 52, 7]])   # x[7] is also in train: a leak
    elif layout == "class_folders":
        for i in range(51):
            write_png(root / "train" / str(y[i]) / f"{i}.png", x[i])
        for i in (51, 52, 7):
            write_png(root / "test" / f"t{i}.png", x[i])
    else:
        cols = [f"pixel{k}" for k in range(784)]
        df = pd.DataFrame(x[:51].reshape(51, -1), columns=cols)
        df.insert(0, "label", y[:51])
        df.to_csv(root / "train.csv", index=False)
        pd.DataFrame(x[[51, 52, 7]].reshape(3, -1), columns=cols).to_csv(root / "test.csv", index=False)
    cfg = config.resolve(dict(input_dir=str(root), reports_dir=str(tmp_path / "rep")))
    s = run_audit(cfg, log=lambda *a: None)
    d = s["duplicates"]
    assert s["layout"] == layout and d["exact_clusters"] >= 1 and d["train_clusters"] >= 1
    assert d["test_images_with_train_copy"] == 1
    assert (tmp_path / "rep" / "audit" / "audit.html").is_file()
