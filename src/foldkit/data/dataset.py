"""The torch Dataset over a sample table, with an in-RAM cache of decoded images.

Part of the `data` concern (docs/ARCHITECTURE.md), kept apart from data.py so
that reading a competition (make_folds) never imports torch.

Every image file is prepared by foldkit.data.images.prepare_image (decoded, shortest side shrunk to
`max_side`, a little above the training size so crops keep their detail), whether it is kept: by
default once into the on-disk store every process reads (foldkit.data.store), else once into this
process's RAM (OpenCV, threads), or in the DataLoader workers on every epoch, with the same pixels
every way.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from foldkit.data.images import InputError, decode_image, to_channels
from foldkit.data.images import prepare_image
from foldkit.data.reading import Competition
from foldkit.data.store import open_store, store_dir
from foldkit.runtime import distributed

CACHE_MAX_BYTES = 6 * 1024**3    # per process, even with more memory: beyond it on-demand decoding keeps up
CACHE_AUTO_SHARE = 0.5           # --cache auto: at most this share of the available memory (all processes)
CACHE_RAM_SHARE = 0.8            # --cache ram: refused above this share (the rest is the OS's, the models')


class CacheError(InputError):
    """--cache ram asked for a decoded training set the machine's memory cannot hold."""


def _gib(n: float) -> str:
    return f"{n / 1024**3:.1f} GiB"


def available_memory() -> int | None:
    """Bytes of memory this process can still take: Linux MemAvailable, capped by a cgroup (container)
    limit; elsewhere the free physical pages; None when the OS does not say. Read from the OS rather
    than a dependency (psutil) for one number."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            avail = next((int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")), None)
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:   # cgroup v2: the container's limit minus what it uses
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            avail = min(avail, int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return max(0, avail)


def _processes(processes: int | None) -> int:
    if processes is not None:
        return max(1, processes)
    return distributed.local_processes()


class ImageSource:
    """Index -> HWC uint8 image, from an array, the on-disk store, a RAM cache, or files prepared on
    demand (the same pixels every way: images.prepare_image at `max_side`).

    cache: disk = the decoded-image store (foldkit.data.store) under `cache_dir`, prepared once for every
    process and run; ram = prepared into this process's RAM; off = prepared on demand; auto = disk when
    a cache folder is given, else ram when it fits this process's share of the memory."""

    def __init__(self, comp: Competition, table, split: str = "train", grey: bool = False,
                 cache: str = "auto", max_side: int = 0, progress: bool = True, cache_dir: str | Path | None = None):
        self.grey = grey
        self.max_side = max_side
        self.array = None
        self.cached: list | None = None
        self.store = None
        self.cache_note = None
        if "index" in table.columns and comp.layout in ("numpy", "pixel_csv"):
            # arrays already hold the pixels: no store, no cache
            self.array = np.ascontiguousarray(to_channels(comp.pixels(split)[table["index"].to_numpy()], grey))
            return
        self.root = Path(comp.root)
        self.paths = table["path"].tolist()
        self.rows = (table.index.to_numpy() + 1).tolist()
        if cache == "disk" and cache_dir is None:
            raise CacheError("--cache disk needs a cache folder (--cache-dir)")
        if cache in ("auto", "disk") and cache_dir is not None and self._open_store(Path(cache_dir), split,
                                                                                     progress, cache):
            return
        store_note, self.cache_note = self.cache_note, None
        cache = self._cache_mode(cache)      # auto: ram when it fits this process's RAM budget
        self.cache_note = "; ".join(n for n in (store_note, self.cache_note) if n) or None
        if cache == "ram":
            self.cached = self._decode_all(progress)

    def _open_store(self, cache_dir: Path, split: str, progress: bool, cache: str) -> bool:
        """Open the store (foldkit.data.store), writing what is missing first; False (and a note) when auto
        cannot write it."""
        folder = store_dir(cache_dir, self.root, split, self.grey, self.max_side)
        try:
            self.store, self.entries, prepared = open_store(folder, self.root, self.paths, self.grey,
                                                            self.max_side, rows=self.rows, progress=progress)
        except OSError as e:
            if cache == "auto":                 # a read-only place (a Kaggle input): as before the store
                self.cache_note = (f"images: cannot write the image store in {cache_dir} ({e.strerror or e}): "
                                   "prepared in this process instead (--cache-dir: a writable folder)")
                return False
            raise CacheError(f"--cache disk: cannot write the image store in {cache_dir} ({e.strerror or e}): "
                             "give a writable --cache-dir, or --cache ram / off") from None
        size = int(self.store.shape[self.entries].prod(axis=1).sum()) if len(self.entries) else 0
        self.cache_note = (f"images: {len(self.paths)} from the store {folder} ({prepared} prepared now, "
                           f"{len(self.paths) - prepared} reused, {size / 1024**2:.0f} MiB; delete the folder "
                           "to clear it)")
        return True

    def _load(self, i: int) -> np.ndarray:
        return prepare_image(self.root / self.paths[i], self.grey, self.max_side, row=self.rows[i])

    def _cache_mode(self, cache: str, processes: int | None = None) -> str:
        """'ram' or 'off'. The decoded size is estimated from 8 images; every foldkit process on this
        machine (torchrun ranks, fold-parallel workers) caches its own copy, so each gets its share of
        the available memory. auto falls back to decoding on demand with a note; a forced ram that
        cannot fit stops with one line instead of running the machine out of memory."""
        if cache == "off":
            return cache
        n, procs = len(self.paths), _processes(processes)
        sample = [self._load(i) for i in range(0, n, max(1, n // 8))][:8]
        need = float(np.mean([s.nbytes for s in sample]) * n) if sample else 0.0
        avail = available_memory()
        shared = f" shared by {procs} processes on this machine" if procs > 1 else ""
        if cache == "ram":
            if avail is not None and need > avail * CACHE_RAM_SHARE / procs:
                raise CacheError(f"--cache ram: the {n} decoded training images need about {_gib(need)} per "
                                 f"process, more than {CACHE_RAM_SHARE:.0%} of the {_gib(avail)} of memory "
                                 f"available{shared}: use --cache disk (one copy on disk shared by every process) "
                                 "or off (decoding on demand)")
            return cache
        budget = CACHE_MAX_BYTES if avail is None else min(CACHE_MAX_BYTES, avail * CACHE_AUTO_SHARE / procs)
        if need <= budget:
            return "ram"
        self.cache_note = (f"images: decoded on demand each epoch (the {n} decoded images need about {_gib(need)}; "
                           f"this process's RAM budget is {_gib(budget)}"
                           + (f": {CACHE_AUTO_SHARE:.0%} of {_gib(avail)} available{shared}" if avail is not None
                              else "") + f", at most {_gib(CACHE_MAX_BYTES)})")
        return "off"

    def _decode_all(self, progress: bool) -> list:
        with ThreadPoolExecutor(4) as ex:   # OpenCV decodes release the GIL
            it = ex.map(self._load, range(len(self.paths)), chunksize=64)
            return list(tqdm(it, total=len(self.paths), desc="decoding images once", leave=False,
                             disable=None if progress else True, unit="img"))

    def __len__(self) -> int:
        return len(self.array) if self.array is not None else len(self.paths)

    @property
    def prepared(self) -> bool:
        """Pixels ready to read (array, store or RAM cache) rather than prepared on every access."""
        return self.array is not None or self.store is not None or self.cached is not None

    def __getitem__(self, i: int) -> np.ndarray:
        if self.array is not None:
            return self.array[i]
        if self.store is not None:
            return self.store[self.entries[i]]
        if self.cached is not None:
            return self.cached[i]
        return self._load(i)


class ImageDataset(Dataset):
    """(image tensor, target) pairs; target is -1 when the table has no labels."""

    def __init__(self, source: ImageSource, targets: np.ndarray | None, transform):
        self.source = source
        # class indexes; float32 rows for multi-label (multi-hot) and regression targets
        self.targets = None if targets is None else (
            np.asarray(targets, dtype=np.float32) if np.asarray(targets).dtype.kind == "f"
            else np.asarray(targets, dtype=np.int64))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        img = torch.from_numpy(np.ascontiguousarray(self.source[i])).permute(2, 0, 1)
        x = self.transform(img) if self.transform is not None else img
        y = -1 if self.targets is None else (
            int(self.targets[i]) if self.targets.dtype == np.int64 else torch.from_numpy(np.array(self.targets[i])))
        return x, y


def detect_grey(comp: Competition, table, n: int = 24) -> bool:
    """True when the images carry one channel, or three identical ones (sampled over the table)."""
    if comp.layout in ("numpy", "pixel_csv"):
        arr = comp.pixels("train")
        if arr.shape[-1] == 1:
            return True
        a = arr[: n * 4]
        return bool((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all())
    paths = table["path"].tolist()
    for i in np.linspace(0, len(paths) - 1, num=min(n, len(paths))).astype(int):
        img = decode_image(Path(comp.root) / paths[i], row=int(i) + 1)
        if not ((img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()):
            return False
    return True


# --------------------------------------------------------------------------- training order and seeding
# Reproducibility (hand-written, no library does it for DataLoaders): the sampler yields
# (epoch, position, index) keys and the dataset seeds each sample's augmentation from
# (seed, epoch, position), so a run resumed at any epoch boundary continues exactly like one never
# stopped, whatever the number of workers; and a sample drawn twice in one epoch (class-balanced
# sampling with replacement) gets two different augmentations.

class EpochSampler(torch.utils.data.Sampler):
    """Shuffled (or class-balanced, with replacement) order per epoch, as (epoch, position, index) keys.

    Data-parallel (world > 1): every rank draws the same epoch order and keeps positions rank,
    rank + world, ... of its first n // world * world positions: disjoint shards of equal length (no
    rank waits for another at the last batch), the same per-sample seeding by global position; the
    n % world positions left over are dropped for that epoch (a different few each epoch)."""

    def __init__(self, n: int, seed: int, shuffle: bool = True, weights: np.ndarray | None = None,
                 rank: int = 0, world: int = 1):
        self.n, self.seed, self.shuffle, self.weights, self.epoch = n, seed, shuffle, weights, 0
        self.rank, self.world = rank, world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.world

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.weights is not None:
            order = rng.choice(self.n, size=self.n, replace=True, p=self.weights / self.weights.sum())
        elif self.shuffle:
            order = rng.permutation(self.n)
        else:
            order = np.arange(self.n)
        keys = [(self.epoch, pos, int(i)) for pos, i in enumerate(order)]
        return iter(keys if self.world == 1 else keys[: len(self) * self.world][self.rank::self.world])


class SeededDataset(Dataset):
    """Wraps a dataset: key (epoch, position, i) -> sample i, augmentation seeded by (seed, epoch, position)."""

    def __init__(self, ds, seed: int):
        self.ds, self.seed = ds, seed

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, key):
        epoch, pos, i = key
        # the CPU generator only: torch.manual_seed also queues CUDA seeding (slow, ~1 ms a call)
        torch.default_generator.manual_seed((self.seed * 1_000_003 + epoch * 100_003 + pos) % (2**63))
        return self.ds[i]


def auto_workers(workers: int, cached: bool, processes: int | None = None) -> int:
    """DataLoader workers: the given number, or (-1) this process's share of the cores (the cores
    divided by the foldkit processes on this machine, foldkit.runtime.distributed.local_processes): 0 on <= 2
    cores with decoded-once data (measured fastest there), else up to cores-1 (at most 8, or 4 with
    decoded-once data)."""
    if workers >= 0:
        return workers
    n = max(1, (os.cpu_count() or 1) // _processes(processes))
    if n <= 2:
        return 0 if cached else n          # 2 cores: the model needs them more than a loader process
    return min(8, n - 1) if not cached else min(4, n - 1)
