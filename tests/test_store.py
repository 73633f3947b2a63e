"""The decoded-image store (foldkit.data.store): every image prepared once, on disk, for every process and run.
Real photos (hymenoptera, up to 2592 px) prepared at a small side, so preparing is what the store saves."""
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from test_prepare import FAST, photo_competition, run

SIDE = 48


@pytest.fixture
def photos(tmp_path):
    return photo_competition(tmp_path / "input")


@pytest.fixture
def count(monkeypatch):
    """How many images the store prepared (calls of images.prepare_image through foldkit.data.store)."""
    from foldkit.data import store
    calls = []
    real = store.prepare_image
    monkeypatch.setattr(store, "prepare_image", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    return calls


def source(photos, cache_dir, cache="disk"):
    from foldkit.data.reading import read_competition
    from foldkit.data.dataset import ImageSource
    comp = read_competition(photos)
    return ImageSource(comp, comp.train, grey=False, cache=cache, max_side=SIDE, progress=False,
                       cache_dir=cache_dir)


def store_folder(photos, cache_dir, split="train"):
    from foldkit.data.store import store_dir
    return store_dir(cache_dir, photos, split, False, SIDE)


def test_the_second_run_prepares_nothing_and_reads_the_same_pixels(photos, tmp_path, count):
    first = source(photos, tmp_path / "cache")
    assert len(count) == 16 and first.store is not None and "16 prepared now" in first.cache_note
    count.clear()
    second = source(photos, tmp_path / "cache")
    assert count == [] and "0 prepared now, 16 reused" in second.cache_note
    off = source(photos, None, cache="off")
    for i in range(16):
        assert min(second[i].shape[:2]) == SIDE
        assert np.array_equal(second[i], off[i])
        assert second[i].flags.writeable     # a fresh array (torch wants writable ones), the file untouched


def test_a_changed_file_is_prepared_again_and_only_it(photos, tmp_path, count):
    source(photos, tmp_path / "cache")
    count.clear()
    target = photos / "train" / "a0.jpg"
    shutil.copyfile(photos / "train" / "b3.jpg", target)      # another photo under the same name
    os.utime(target, ns=(1, 1))
    again = source(photos, tmp_path / "cache")
    assert [os.path.basename(p) for p in count] == ["a0.jpg"]
    i = again.paths.index("train/a0.jpg")
    assert np.array_equal(again[i], again[again.paths.index("train/b3.jpg")])
    assert len(list(store_folder(photos, tmp_path / "cache").glob("pixels-*.u8"))) == 1   # the old one removed


def test_a_source_in_use_keeps_reading_when_another_table_of_its_split_adds_files(photos, tmp_path):
    """Two tables of one split in one run (a student's test images and, before they had a store of their
    own, its --unlabelled images): the second adds files, which writes a new pixels file and removes the old
    one; the first source, already open, must still read its images (it raised FileNotFoundError)."""
    import pickle
    from foldkit.data.reading import read_competition
    from foldkit.data.dataset import ImageSource
    comp = read_competition(photos)
    half = ImageSource(comp, comp.train.head(8), grey=False, cache="disk", max_side=SIDE, progress=False,
                       cache_dir=tmp_path / "cache")
    before = [source(photos, None, cache="off")[i] for i in range(8)]
    full = source(photos, tmp_path / "cache")                      # half not read yet (its loader's workers will)
    assert half.store.pixels_name != full.store.pixels_name
    assert len(list(store_folder(photos, tmp_path / "cache").glob("pixels-*.u8"))) == 1
    assert all(np.array_equal(half[i], before[i]) for i in range(8))
    again = pickle.loads(pickle.dumps(full))           # a spawned worker opens the file its index names
    assert np.array_equal(again[3], full[3])


KILLER = """
import os, signal, sys
sys.path.insert(0, {src!r})
from foldkit.data import store
from foldkit.data.reading import read_competition
from foldkit.data.dataset import ImageSource
real, n = store.prepare_image, [0]
def dying(*a, **k):
    n[0] += 1
    if n[0] == 1:
        os.kill(os.getpid(), signal.SIGKILL)      # killed in the middle of writing the store (old images copied, new ones not)
    return real(*a, **k)
store.prepare_image = dying
comp = read_competition({photos!r})
ImageSource(comp, comp.train, cache="disk", max_side={side}, progress=False, cache_dir={cache!r})
"""


def test_a_store_cut_short_by_a_kill_is_never_read(photos, tmp_path, count):
    cache = tmp_path / "cache"
    source(photos, cache)                    # a complete store, then a file changes and the rewrite is killed
    done = source(photos, cache)
    before = {i: done[i].copy() for i in range(16)}
    shutil.copyfile(photos / "train" / "b3.jpg", photos / "train" / "a0.jpg")
    os.utime(photos / "train" / "a0.jpg", ns=(1, 1))
    script = KILLER.format(src=str(REPO / "src"), photos=str(photos), side=SIDE, cache=str(cache))
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], timeout=120)
    assert r.returncode == -9
    folder = store_folder(photos, cache)
    assert len(list(folder.glob("pixels-*.u8"))) == 2               # the half-written file is there ...
    count.clear()
    after = source(photos, cache)                                     # ... and not used: the old store is
    assert [os.path.basename(p) for p in count] == ["a0.jpg"]
    for i in range(16):
        if after.paths[i] != "train/a0.jpg":
            assert np.array_equal(after[i], before[i])
    assert len(list(folder.glob("pixels-*.u8"))) == 1                # the next writer removed it


READER = """
import hashlib, sys
sys.path.insert(0, {src!r})
from foldkit.data import store
from foldkit.data.reading import read_competition
from foldkit.data.dataset import ImageSource
real, n = store.prepare_image, [0]
def counted(*a, **k):
    n[0] += 1
    return real(*a, **k)
store.prepare_image = counted
comp = read_competition({photos!r})
s = ImageSource(comp, comp.train, cache="disk", max_side={side}, progress=False, cache_dir={cache!r})
h = hashlib.sha256(b"".join(s[i].tobytes() for i in range(len(s)))).hexdigest()
print(n[0], h)
"""


def test_two_processes_share_one_store_prepared_once(photos, tmp_path):
    script = textwrap.dedent(READER.format(src=str(REPO / "src"), photos=str(photos), side=SIDE,
                                           cache=str(tmp_path / "cache")))
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(int(o[0]) for o in outs) == [0, 16]      # one prepared every image, the other none
    assert outs[0][1] == outs[1][1]                         # the same pixels


def test_oof_row_and_test_image_get_the_same_probability_through_the_store(photos, tmp_path):
    """Train 1 fold (the training store), predict (the test store: the same photos as test images), then
    a second training run prepares nothing."""
    paths = ["--input-dir", str(photos), "--folds-dir", str(tmp_path / "folds"),
             "--models-dir", str(tmp_path / "models")]
    run("make_folds.py", *paths, "--n-folds", "2")
    r = run("train.py", *paths, *FAST, "--fold", "0", "--experiment", "x")
    assert "16 prepared now" in r.stdout + r.stderr
    run("predict.py", *paths, "--experiments", "x", "--tta", "none", "--calibrate", "off", "--thresholds", "off",
        "--submissions-dir", str(tmp_path / "subs"), "--no-report", "--workers", "0")
    cache = tmp_path / "cache"                                     # beside --models-dir
    assert (store_folder(photos, cache, "train") / "index.npz").is_file()
    assert (store_folder(photos, cache, "test") / "index.npz").is_file()
    oof = pd.read_csv(tmp_path / "models" / "x" / "oof_fold0.csv", dtype={"id": str}).set_index("id")
    sub = pd.read_csv(next((tmp_path / "subs").glob("*.csv")), dtype={"id": str}).set_index("id")
    test = sub.loc[[f"t_{i}" for i in oof.index]].to_numpy()
    assert np.abs(test - oof[["prob_ants", "prob_bees"]].to_numpy()).max() < 2e-6
    r = run("train.py", *paths, *FAST, "--fold", "1", "--experiment", "x")
    assert "0 prepared now, 16 reused" in r.stdout + r.stderr


def test_a_cache_folder_that_cannot_be_written_falls_back_to_ram_or_stops_with_one_line(photos, tmp_path):
    from foldkit.data.dataset import CacheError
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    auto = source(photos, blocked / "cache", cache="auto")      # e.g. a read-only input folder
    assert auto.store is None and auto.cached is not None
    assert auto.cache_note.startswith("images: cannot write the image store in ") and auto.cache_note.count(";") == 0
    with pytest.raises(CacheError, match="--cache disk: cannot write the image store in .*--cache-dir"):
        source(photos, blocked / "cache", cache="disk")
