"""The decoded-image store: every image file prepared once, kept on disk, mapped by every process.

`images.prepare_image` (decode + shrink to the preparation's side) is the expensive step of reading a
competition of files. The store keeps its output in one flat uint8 file per (competition, split,
preparation) under the cache folder (`--cache-dir`, default `<repo>/cache`):

    cache/images/<competition folder>-<sha of its absolute path>/<split>-<rgb|grey>-<side>/
        index.npz        path, size, mtime_ns, offset, shape of every image; names the pixels file
        pixels-<token>.u8  the prepared images back to back (each keeps its own shape: no padding)

Folds, torchrun ranks, fold-parallel workers, tune/auto trials and predict read the same file
(pread, read-only): the OS keeps one copy of the pixels in its page cache for all of them (evicted
under memory pressure, so a store larger than RAM works), and a second run decodes nothing. An entry is valid while its file keeps its size and mtime (as the audit's
hash cache, foldkit.audit.duplicates); a changed or new file is prepared again, the others are copied over.
Writing is atomic: the pixels go to a new file, the index naming it is renamed into place last, so a
store cut short by a kill is never read (its orphan pixels file is removed by the next writer). One
writer at a time (a lock file); the others wait, then find the store ready.

Keyed by the competition folder, the split and the preparation (grey, side): the reading settings
(--train-csv, --image-ext, --skip-bad-images ...) only choose which files a table names, and each file
is its own entry, so tables read with other settings share one store. Array layouts (numpy, pixel CSV)
already hold pixels and use no store. Torch-free.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from foldkit.data.images import prepare_image
from foldkit.io import atomic_write_with

STORE_VERSION = 1       # bump when prepare_image's pixels change: older stores are then rebuilt
INDEX = "index.npz"
LOCK = ".lock"


def store_dir(cache_dir: str | Path, root: str | Path, split: str, grey: bool, side: int) -> Path:
    """The store folder of one competition folder, split and preparation (images.preparation)."""
    root = Path(root).resolve()
    tag = hashlib.sha256(str(root).encode()).hexdigest()[:10]
    return Path(cache_dir) / "images" / f"{root.name}-{tag}" / f"{split}-{'grey' if grey else 'rgb'}-{side or 'full'}"


def file_stats(root: Path, paths: list[str]) -> np.ndarray:
    """(N, 2) int64 size and mtime_ns of each file; -1 for a missing one (never valid)."""
    out = np.full((len(paths), 2), -1, dtype=np.int64)
    for i, p in enumerate(paths):
        try:
            st = os.stat(root / p)
            out[i] = st.st_size, st.st_mtime_ns
        except OSError:
            pass
    return out


class Store:
    """One store folder, read-only: entry j -> HWC uint8 image (read from the pixels file)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.paths: list[str] = []
        self.stats = np.zeros((0, 2), np.int64)
        self.offset = np.zeros(0, np.int64)
        self.shape = np.zeros((0, 3), np.int64)
        self.pixels_name = ""
        self._fd = None
        self._load()
        if self.pixels_name:
            # opened now and kept: a later writer of this folder (another table of the same split adding
            # files) replaces the pixels file and removes this one, which an open descriptor keeps readable;
            # forked DataLoader workers inherit it (pread takes its own offset: safe to share)
            self._fd = os.open(self.folder / self.pixels_name, os.O_RDONLY)

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)

    def _load(self) -> None:
        try:
            with np.load(self.folder / INDEX, allow_pickle=False) as z:
                if int(z["version"]) != STORE_VERSION:
                    return
                paths, stats, offset, shape = z["paths"].tolist(), z["stats"], z["offset"], z["shape"]
                name = str(z["pixels"])
            total = int((shape.prod(axis=1)).sum()) if len(shape) else 0
            if (self.folder / name).stat().st_size != total:
                return                                   # not the file the index describes: unusable
        except (OSError, KeyError, ValueError):
            return                                       # no store yet, or an unreadable one: start again
        self.paths, self.stats, self.offset, self.shape, self.pixels_name = paths, stats, offset, shape, name

    def __len__(self) -> int:
        return len(self.paths)

    def lookup(self, paths: list[str], stats: np.ndarray) -> np.ndarray:
        """The entry of each path whose file still has the stored size and mtime, else -1."""
        where = {p: j for j, p in enumerate(self.paths)}
        rows = np.array([where.get(p, -1) for p in paths], dtype=np.int64)
        ok = rows >= 0
        ok[ok] = (self.stats[rows[ok]] == stats[ok]).all(axis=1)
        rows[~ok] = -1
        return rows

    def __getitem__(self, j: int) -> np.ndarray:
        """Entry j as a new HWC uint8 array, read from the OS's page cache (pread): every process reads the
        one cached copy, and only the images in use count in its RSS (a mapping would count every page it
        touched in each process); as fast as copying out of a mapping (measured: benchmarks/RESULTS.md)."""
        h, w, c = (int(v) for v in self.shape[j])
        buf = bytearray(h * w * c)
        if self._fd is None:          # unpickled in a spawned process: open the file the index named
            self._fd = os.open(self.folder / self.pixels_name, os.O_RDONLY)
        if hasattr(os, "preadv"):
            os.preadv(self._fd, [buf], int(self.offset[j]))
        else:                                             # no preadv (Windows): a read-only mapping, copied
            pixels = np.memmap(self.folder / self.pixels_name, dtype=np.uint8, mode="r")
            buf[:] = pixels[int(self.offset[j]):int(self.offset[j]) + len(buf)].tobytes()
        return np.frombuffer(buf, dtype=np.uint8).reshape(h, w, c)

    def __getstate__(self):        # a pickled store (spawned workers) carries its index, not the open file
        return {**self.__dict__, "_fd": None}


@contextlib.contextmanager
def _writer_lock(folder: Path):
    """One writer per store folder (an flock, released by the OS if the holder is killed)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a") as fh:
        try:
            import fcntl  # lazy: POSIX only (Windows has no fcntl)
            fcntl.flock(fh, fcntl.LOCK_EX)
        except ImportError:                  # no flock (Windows): one process per store is the user's care
            pass
        yield


def _write(old: Store, keep: list[int], todo: list[int], root: Path, paths: list[str], stats: np.ndarray,
           grey: bool, side: int, rows: list[int] | None, progress: bool) -> None:
    """A new pixels file (old entries `keep` copied, table entries `todo` prepared), then its index."""
    name = f"pixels-{uuid.uuid4().hex[:12]}.u8"
    new_paths, new_stats, shapes = [], [], []
    tmp = old.folder / name
    with open(tmp, "wb") as fh:
        for j in keep:
            fh.write(old[j].tobytes())
            new_paths.append(old.paths[j])
            new_stats.append(old.stats[j])
            shapes.append(old.shape[j])
        prep = lambda i: prepare_image(root / paths[i], grey, side, row=rows[i] if rows else None)  # noqa: E731
        with ThreadPoolExecutor(4) as ex:                      # OpenCV decodes release the GIL
            it = tqdm(ex.map(prep, todo), total=len(todo), desc="preparing images once", leave=False,
                      disable=None if progress else True, unit="img")
            for i, img in zip(todo, it):
                fh.write(memoryview(np.ascontiguousarray(img)).cast("B"))
                new_paths.append(paths[i])
                new_stats.append(stats[i])
                shapes.append(img.shape)
        fh.flush()
        os.fsync(fh.fileno())
    shape = np.array(shapes, dtype=np.int64).reshape(-1, 3)
    offset = np.concatenate([[0], np.cumsum(shape.prod(axis=1))[:-1]]).astype(np.int64) if len(shape) else \
        np.zeros(0, np.int64)

    def save(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, version=STORE_VERSION, paths=np.array(new_paths, dtype=str),
                     stats=np.array(new_stats, dtype=np.int64).reshape(-1, 2), offset=offset, shape=shape,
                     pixels=np.array(name))
    atomic_write_with(old.folder / INDEX, save)        # the commit point


def _remove_orphans(folder: Path, current: str) -> None:
    """Pixels files no index names (an old store, one cut short by a kill). A process still mapping an
    old one keeps reading it: the OS frees it when the last mapping closes."""
    for p in folder.glob("pixels-*.u8"):
        if p.name != current:
            with contextlib.suppress(OSError):
                p.unlink()


def open_store(folder: str | Path, root: str | Path, paths: list[str], grey: bool, side: int,
               rows: list[int] | None = None, progress: bool = True) -> tuple[Store, np.ndarray, int]:
    """(store, entry of each path, images prepared now): the store of these files at this preparation,
    brought up to date first when a file is new or changed (only those are prepared again)."""
    folder, root = Path(folder), Path(root)
    stats = file_stats(root, paths)
    store = Store(folder)
    entries = store.lookup(paths, stats)
    if (entries >= 0).all():
        return store, entries, 0
    with _writer_lock(folder):
        store = Store(folder)                      # another process may have written it meanwhile
        entries = store.lookup(paths, stats)
        first: dict[str, int] = {}                 # a path listed twice in the table is prepared once
        for i in np.flatnonzero(entries < 0):
            first.setdefault(paths[i], int(i))
        if first:
            keep = [j for j, p in enumerate(store.paths) if p not in first]
            _write(store, keep, sorted(first.values()), root, paths, stats, grey, side, rows, progress)
            store = Store(folder)
            _remove_orphans(folder, store.pixels_name)
            entries = store.lookup(paths, stats)
        return store, entries, len(first)


def cache_root(cfg) -> Path:
    """--cache-dir, or cache/ beside the models folder (where a project keeps what it makes)."""
    return Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.models_dir).resolve().parent / "cache"
