"""The audit's learned-feature copy search and adversarial validation, on real photos.

A small folder-per-class competition of hymenoptera photos with planted copies that a perceptual
hash misses (a mirror, a crop, a colour shift) must come out as duplicate clusters found by the
feature method, and a different photo of the same class must not; make_folds keeps the clusters in
one fold. Adversarial validation tells a planted train/test shift from none. The real ImageNet
mobilenetv2 weights of ../shared/weights are used at the default 128 px (a few seconds on 2 cores).
"""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, need_shared, write_png
from foldkit import config

SIDE = 160


def _weights():
    return need_shared("weights", "mobilenetv2_100_imagenet.pth")


def _photos(cls, n):
    import cv2

    from foldkit.data.images import decode_image
    folder = need_shared("data", "hymenoptera", "train", cls)
    out = []
    for p in sorted(folder.glob("*.jpg"))[:n]:
        img = decode_image(p, min_side=SIDE)
        f = SIDE / max(img.shape[:2])
        out.append(cv2.resize(img, (round(img.shape[1] * f), round(img.shape[0] * f)), interpolation=cv2.INTER_AREA))
    return out


def _crop(img, frac):
    """The centre `frac` of each side, resized back to the photo's size."""
    import cv2
    h, w = img.shape[:2]
    ch, cw = round(h * frac), round(w * frac)
    y, x = (h - ch) // 2, (w - cw) // 2
    return cv2.resize(img[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_LINEAR)


def _hue(img, shift=8):
    """Hue turned by 2 * shift degrees (OpenCV's hue runs 0..180)."""
    import cv2
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0].astype(int) + shift) % 180
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _bgr(img):
    return np.ascontiguousarray(img[..., ::-1])


@pytest.fixture(scope="module")
def photo_comp(tmp_path_factory):
    """train/ants (6 + a mirrored copy of ants0), train/bees (6), test/: a mirror, a crop and a
    colour shift of train photos, and a different ant photo that has no copy."""
    ants, bees = _photos("ants", 8), _photos("bees", 6)
    root = tmp_path_factory.mktemp("photos") / "comp"
    for k in range(6):
        write_png(root / "train" / "ants" / f"ants{k}.jpg", _bgr(ants[k]))
        write_png(root / "train" / "bees" / f"bees{k}.jpg", _bgr(bees[k]))
    write_png(root / "train" / "ants" / "ants0_mirror.jpg", _bgr(ants[0][:, ::-1]))
    write_png(root / "test" / "t_mirror.jpg", _bgr(bees[0][:, ::-1]))
    write_png(root / "test" / "t_crop.jpg", _bgr(_crop(ants[1], 0.9)))
    write_png(root / "test" / "t_colour.jpg", _bgr(_hue(bees[1])))
    write_png(root / "test" / "t_new.jpg", _bgr(ants[7]))
    return root


def _cfg(root, reports, **kw):
    return config.resolve(dict(input_dir=str(root), reports_dir=str(reports), **kw))


@pytest.fixture(scope="module")
def photo_audit(photo_comp, tmp_path_factory):
    from foldkit.audit.run import run_audit
    reports = tmp_path_factory.mktemp("rep")
    logs = []
    s = run_audit(_cfg(photo_comp, reports, embed_weights=str(_weights())), log=logs.append)
    return photo_comp, reports, s, logs


def test_feature_search_finds_mirrored_cropped_recoloured_copies(photo_audit):
    root, reports, s, _ = photo_audit
    dups = pd.read_csv(reports / "audit" / "duplicates.csv", dtype={"id": str}, keep_default_na=False)
    assert {"similarity", "method", "kind", "distance", "spans"} <= set(dups.columns)
    cluster = {i.split("/")[-1].split(".")[0]: c for i, c in zip(dups["id"], dups["cluster"])}
    for a, b in (("ants0", "ants0_mirror"), ("bees0", "t_mirror"), ("ants1", "t_crop"), ("bees1", "t_colour")):
        assert a in cluster and cluster.get(a) == cluster.get(b), (a, b, dups[["id", "similarity", "method"]])
    assert "t_new" not in cluster                       # a different photo of the same class
    found = dups[dups["id"].str.contains("mirror|t_crop|t_colour")]
    assert (found["similarity"].astype(float) >= 0.8).all()
    assert found.loc[found["id"].str.contains("mirror|t_crop"), "method"].str.contains("feature").all()
    assert s["duplicates"]["test_images_with_train_copy"] == 3
    assert s["duplicates_hash_only"]["test_images_with_train_copy"] <= 1     # the mirror and the crop: missed
    pairs = pd.read_csv(reports / "audit" / "pairs.csv")
    assert pairs["similarity"].is_monotonic_decreasing and pairs["copy"].sum() == 4
    assert {"margin", "id_a", "id_b", "hash_bits"} <= set(pairs.columns)
    assert "pairs by similarity" in (reports / "audit" / "audit.html").read_text()


def test_borderline_pairs_are_listed_and_shown(photo_audit):
    """With a stricter --embed-threshold the crop (similarity ~0.93) is no longer called a copy,
    but pairs.csv still lists it, to check, and the page shows it among the pairs to check."""
    from foldkit.audit.run import run_audit
    root, reports, _, _ = photo_audit
    s = run_audit(_cfg(root, reports, embed_weights=str(_weights()), embed_threshold=0.95), log=lambda *a: None)
    assert s["features"]["threshold"] == 0.95 and s["features"]["calibrated"] is False
    pairs = pd.read_csv(reports / "audit" / "pairs.csv")
    crop = pairs[(pairs["id_b"] == "t_crop") | (pairs["id_a"] == "t_crop")]
    assert len(crop) == 1 and not crop["copy"].iloc[0] and crop["verdict"].iloc[0] == "to check"
    page = (reports / "audit" / "audit.html").read_text()
    assert "to check (a random sample)" in page and "NOT calibrated" in page


def folds_grouping_one_cluster(root, reports, tmp_path, n_folds: int) -> dict:
    """make_folds after the audit: it groups exactly one cluster; {file name: fold}."""
    from foldkit.folds.file import make_folds
    cfg = config.resolve(dict(input_dir=str(root), reports_dir=str(reports), folds_dir=str(tmp_path / "f"),
                              n_folds=n_folds))
    meta = make_folds(cfg, log=lambda *a: None)
    assert meta["duplicates"]["grouped"] and meta["duplicates"]["clusters_grouped"] == 1
    folds = pd.read_csv(tmp_path / "f" / "train_folds.csv")
    return dict(zip(folds["id"].str.split("/").str[-1], folds["fold"]))


def test_make_folds_keeps_feature_clusters_in_one_fold(photo_audit, tmp_path):
    root, reports, _, _ = photo_audit
    fold = folds_grouping_one_cluster(root, reports, tmp_path, 3)
    assert fold["ants0.jpg"] == fold["ants0_mirror.jpg"]


def test_second_audit_embeds_nothing(photo_audit):
    from foldkit.audit.run import run_audit
    root, reports, first, _ = photo_audit
    logs = []
    again = run_audit(_cfg(root, reports, embed_weights=str(_weights())), log=logs.append)
    assert not any("embedding" in str(m) for m in logs), logs
    assert again["duplicates"] == first["duplicates"]


def test_without_weights_the_audit_says_what_it_did_not_search(photo_comp, tmp_path):
    from foldkit.audit.run import run_audit, summary_text
    s = run_audit(_cfg(photo_comp, tmp_path, embed_weights="none"), log=lambda *a: None)
    assert s["features"]["searched"] is False and "duplicates_hash_only" not in s
    assert any(v.startswith("not searched: copies that are mirrored") for v in s["verdict"])
    assert "Not searched" in (tmp_path / "audit" / "audit.html").read_text()
    assert "not searched" in summary_text(s)


@pytest.mark.parametrize("flags, says", [(["--embed-weights", "nope.pth"], "error: --embed-weights"),
                                         (["--embed-size", "8"], "error: --embed-size 8"),
                                         (["--embed-model", "nosuchnet", "--embed-weights", "WEIGHTS"],
                                          "error: embedding backbone: unknown timm model 'nosuchnet'")])
def test_bad_embedding_settings_are_one_clear_error(photo_comp, tmp_path, flags, says):
    flags = [str(_weights()) if f == "WEIGHTS" else str(tmp_path / f) if f.endswith(".pth") else f for f in flags]
    r = subprocess.run([sys.executable, str(REPO / "src" / "audit.py"), "--input-dir", str(photo_comp),
                        "--reports-dir", str(tmp_path), *flags], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith(says) and "Traceback" not in r.stderr, r.stderr


FACES = "data", "utkface", "crop_part1"
# two pairs of different people who look alike (similarity 0.82-0.83 at the default 96 px, margin
# > 0.2 in this small set): a boy and a girl, two men; and faces with planted copies (a mirror; mirror +
# crop + brightness + JPEG)
LOOKALIKES = (("3_0_2_20161219190020899", "3_1_2_20161219142723433"),
              ("60_0_0_20170111205328800", "59_0_0_20170111195403793"))
FACE_FILLERS = ("62_0_0_20170111193832899", "48_0_0_20170104210544269", "32_1_0_20170103163347255",
                "12_0_0_20170110225257257", "36_1_4_20170105001244316", "61_1_0_20170103184132186",
                "4_1_4_20161221195434215", "23_1_4_20170103223618431")


def _face(name):
    from foldkit.data.images import decode_image
    return decode_image(need_shared(*FACES, f"{name}.jpg.chip.jpg"))


@pytest.fixture(scope="module")
def face_audit(tmp_path_factory):
    """UTKFace faces, folder per gender (UTKFace's second name field: 0 male, 1 female): the boy and
    the girl who look alike both in train, one of the two look-alike men in train and the other in
    test, and two planted copies of train faces in test (a mirror; mirror + crop + brightness + JPEG)."""
    import shutil
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_copies import transform
    from foldkit.audit.run import run_audit
    root = tmp_path_factory.mktemp("faces") / "comp"
    gender = {"0": "male", "1": "female"}
    for name in (*LOOKALIKES[0], LOOKALIKES[1][0], *FACE_FILLERS):
        dest = root / "train" / gender[name.split("_")[1]] / f"{name}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(need_shared(*FACES, f"{name}.jpg.chip.jpg"), dest)
    (root / "test").mkdir()
    shutil.copy(need_shared(*FACES, f"{LOOKALIKES[1][1]}.jpg.chip.jpg"), root / "test" / "lookalike.jpg")
    write_png(root / "test" / "planted_combo.png",
              _bgr(transform(_face(FACE_FILLERS[0]), "combo", np.random.default_rng(0))))
    write_png(root / "test" / "planted_mirror.png", _bgr(_face(FACE_FILLERS[1])[:, ::-1]))
    reports = tmp_path_factory.mktemp("rep")
    s = run_audit(_cfg(root, reports, embed_weights=str(_weights())), log=lambda *a: None)
    return reports / "audit", s, root, reports


def test_lookalike_faces_are_to_check_not_leaks_or_label_conflicts(face_audit):
    """Two different people who look alike score 0.82-0.83, in the band where a blind look at natural
    look-alikes found mostly different people: listed "to check" with the band's expected precision,
    never a leak or a label conflict (not in duplicates.csv)."""
    from foldkit.audit.run import summary_text
    audit, s, _, _ = face_audit
    d = s["duplicates"]
    assert d["label_conflicts"] == 0 and d["test_images_with_train_copy"] == 2, d
    from foldkit.audit.duplicates import BANDS
    pairs = pd.read_csv(audit / "pairs.csv", dtype={"id_a": str, "id_b": str})
    names = pairs["source_a"] + "|" + pairs["source_b"]
    for a, b in ((f"{LOOKALIKES[0][0]}.jpg", f"{LOOKALIKES[0][1]}.jpg"),
                 (f"{LOOKALIKES[1][0]}.jpg", "lookalike.jpg")):
        row = pairs[names.str.contains(a, regex=False) & names.str.contains(b, regex=False)]
        assert len(row) == 1, pairs[["id_a", "id_b", "similarity", "verdict"]]
        r = row.iloc[0]
        assert r["verdict"] == "to check" and not r["copy"] and 0.80 <= r["similarity"] < 0.85, r
        assert r["band"] == "0.80-0.85" and r["expected_precision"] == BANDS[0][1] < 0.5
    dups = pd.read_csv(audit / "duplicates.csv", dtype={"id": str})
    assert not dups["id"].str.contains("lookalike|3_0_2|3_1_2|60_0_0").any(), dups
    check = [b for b in s["feature_bands"] if b["verdict"] == "to check"]
    assert sum(b["pairs"] for b in check) == 2 and sum(b["train_test_pairs"] for b in check) == 1
    assert any("are to check, not counted as copies" in v for v in s["verdict"]), s["verdict"]
    assert not any("label noise" in v for v in s["verdict"])
    assert "expected precision" in summary_text(s)
    page = (audit / "audit.html").read_text()
    assert "to check (a random sample)" in page and "feature pairs by similarity band" in page


def test_planted_face_copies_are_still_leaks(face_audit):
    """The planted copies (a mirror, mirror + crop + brightness + JPEG) of train faces are copies in
    the confident band: leaks, counted with the band's expected precision."""
    audit, s, _, _ = face_audit
    assert s["duplicates"]["test_images_with_train_copy"] == 2 and s["duplicates"]["label_conflicts"] == 0
    pairs = pd.read_csv(audit / "pairs.csv", dtype={"id_a": str, "id_b": str})
    planted = pairs[pairs["id_a"].str.contains("planted") | pairs["id_b"].str.contains("planted")]
    planted = planted[planted["verdict"] == "copy"]
    assert len(planted) == 2 and (planted["similarity"] >= 0.9).all() and planted["copy"].all(), planted
    dups = pd.read_csv(audit / "duplicates.csv", dtype={"id": str})
    assert dups["id"].str.contains("planted").sum() == 2 and (dups["spans"] == "train+test").all()
    leak = next(v for v in s["verdict"] if "a leak" in v)
    assert leak.startswith("2 test image(s) have a copy in train") and "expected precision" in leak, leak
    copies = [b for b in s["feature_bands"] if b["verdict"] == "copy"]
    assert sum(b["test_images"] for b in copies) == 2 and all(b["expected_precision"] > 0.5 for b in copies)


def test_make_folds_keeps_a_pair_to_check_in_one_fold(face_audit, tmp_path):
    """A pair to check is no label conflict, but make_folds still keeps it in one fold: splitting a
    copy inflates CV, grouping two look-alikes costs nothing."""
    _, _, root, reports = face_audit
    fold = folds_grouping_one_cluster(root, reports, tmp_path, 2)
    assert fold[f"{LOOKALIKES[0][0]}.jpg"] == fold[f"{LOOKALIKES[0][1]}.jpg"]


def _fashion(n, offset):
    sys.path.insert(0, str(REPO / "benchmarks" / "scenarios"))
    from common import read_idx
    raw = need_shared("data", "fashion_mnist")
    x = read_idx(raw / "t10k-images-idx3-ubyte.gz")[offset:offset + n]
    y = read_idx(raw / "t10k-labels-idx1-ubyte.gz")[offset:offset + n]
    return x, y.astype(int)


@pytest.mark.parametrize("shifted", [False, True])
def test_adversarial_validation_tells_a_planted_shift_from_none(shifted, tmp_path):
    """Train and test drawn from the same Fashion-MNIST images; the shifted test set is blurred
    and brightened. AUC near 0.5 without the shift, high with it, and the verdict says so."""
    import cv2

    from foldkit.audit.run import run_audit
    x, y = _fashion(240, 0)
    xt, yt = x[120:], y[120:]
    if shifted:
        xt = np.stack([np.clip(cv2.GaussianBlur(im, (5, 5), 1.5).astype(int) + 60, 0, 255).astype(np.uint8)
                       for im in xt])
    root = tmp_path / "comp"
    root.mkdir()
    np.save(root / "x_train.npy", x[:120])
    np.save(root / "y_train.npy", y[:120])
    np.save(root / "x_test.npy", xt)
    np.save(root / "y_test.npy", yt)
    s = run_audit(_cfg(root, tmp_path / "rep", embed_weights=str(_weights()), embed_size=64), log=lambda *a: None)
    sh = s["shift"]
    if shifted:
        assert sh["auc"] > 0.9 and "strong shift" in sh["verdict"][0], sh
    else:
        assert sh["auc"] < 0.65 and "no detectable shift" in sh["verdict"][0], sh
    adv = pd.read_csv(tmp_path / "rep" / "audit" / "adversarial.csv")
    assert len(adv) == 120 and adv["p_test"].is_monotonic_decreasing and adv["test_like"].sum() == 24
    assert set(sh["class_priors"]) == {str(c) for c in set(y[:120]) | set(yt)}


@pytest.mark.parametrize("index", ["sklearn", "faiss"])
def test_feature_pairs_index_matches_all_pairs(monkeypatch, index):
    """The index (scikit-learn's, or faiss's when installed; and the PCA-projected path for large
    sets) finds the same copy pairs as comparing all pairs."""
    if index == "faiss":
        pytest.importorskip("faiss", reason="the faiss extra is not installed")
    else:
        monkeypatch.setitem(sys.modules, "faiss", None)            # import faiss -> ImportError
    from foldkit.audit import duplicates
    from foldkit.audit.duplicates import feature_pairs
    rng = np.random.default_rng(0)
    e = rng.normal(size=(600, 256)).astype(np.float32)
    e[300:360] = e[:60] + 0.15 * rng.normal(size=(60, 256))          # 60 planted copies
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    e[599] = 0                                                      # an unread image
    sim = e @ e.T
    i, j = np.nonzero(np.triu(sim >= 0.9, 1))
    truth = set(zip(i.tolist(), j.tolist()))
    assert len(truth) == 60
    got = feature_pairs(e, 0.9)
    assert set(zip(got["i"], got["j"])) == truth
    monkeypatch.setattr(duplicates, "PROJECT_ABOVE", 100)
    monkeypatch.setattr(duplicates, "PROJECT_DIM", 64)
    got = feature_pairs(e, 0.9)
    assert set(zip(got["i"], got["j"])) == truth
    assert np.allclose(got["similarity"], sim[got["i"], got["j"]], atol=1e-5)


def test_interrupted_embedding_resumes_from_the_cache(photo_comp, tmp_path, monkeypatch):
    """The embedding cache is saved as it goes: a run that dies part way keeps what it embedded."""
    from foldkit.audit import embed
    from foldkit.audit.run import run_audit
    monkeypatch.setattr(embed, "SAVE_EVERY", 5)
    real, calls = embed.Embedder.embed, []

    def dies_on_the_second_part(self, images, log=None):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, images)
    monkeypatch.setattr(embed.Embedder, "embed", dies_on_the_second_part)
    cfg = _cfg(photo_comp, tmp_path, embed_weights=str(_weights()))
    with pytest.raises(KeyboardInterrupt):
        run_audit(cfg, log=lambda *a: None)
    monkeypatch.setattr(embed.Embedder, "embed", real)
    logs = []
    run_audit(cfg, log=logs.append)
    assert "embedding 8 train image(s)" in " ".join(map(str, logs)) and "(5 cached)" in " ".join(map(str, logs))


def test_every_backend_gives_the_same_mirror_invariant_embeddings():
    """onnxruntime (the fast CPU path, when installed) and eager torch embed the same real images to
    the same unit vectors, an image and its mirror to one vector, on the cores asked for; torch's
    own thread setting is left as it was."""
    import torch

    from foldkit.audit.embed import DEFAULT_MODEL, DEFAULT_SIZE, Embedder
    x, _ = _fashion(24, 0)
    slow = Embedder(DEFAULT_MODEL, str(_weights()), DEFAULT_SIZE, threads=1, backend="torch")
    before = torch.get_num_threads()
    a = slow.embed(x)
    assert torch.get_num_threads() == before and slow.backend_name == "torch cpu"
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert np.allclose(slow.embed([im[:, ::-1] for im in x]), a, atol=1e-5)
    pytest.importorskip("onnxruntime")
    fast = Embedder(DEFAULT_MODEL, str(_weights()), DEFAULT_SIZE)
    assert fast.backend_name == "onnxruntime"
    assert (fast.embed(x) * a).sum(1).min() > 0.9999
