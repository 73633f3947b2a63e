"""The RAM cache and DataLoader workers share the machine between the foldkit processes on it (torchrun
ranks, fold-parallel workers): no process may run the machine out of memory without a clear line first."""
import pytest

from conftest import write_png
from foldkit.data import dataset
from foldkit.runtime import distributed
from foldkit.data.reading import read_competition
from foldkit.data.dataset import CacheError, ImageSource, auto_workers


@pytest.fixture
def comp(tmp_path, digits_32):
    """8 grey 32x32 PNGs: 8 KiB decoded."""
    images, labels = digits_32
    for i in range(8):
        write_png(tmp_path / "train" / str(labels[i]) / f"{i}.png", images[i])
    return read_competition(tmp_path)


@pytest.fixture
def processes(monkeypatch):
    """Set how many foldkit processes share this machine (as torchrun or a fold-parallel worker does)."""
    monkeypatch.setitem(distributed._STATE, "local_processes", 1)
    return distributed.set_local_processes


def source(comp, cache):
    return ImageSource(comp, comp.train, "train", grey=True, cache=cache, progress=False)


def test_the_cache_budget_is_the_available_memory_shared_by_the_processes(comp, processes, monkeypatch):
    need = 8 * 32 * 32                                       # bytes of the decoded images
    monkeypatch.setattr(dataset, "available_memory", lambda: 4 * need)
    one = source(comp, "auto")                               # half of 4x: fits one process
    assert one.cached is not None and one.cache_note is None
    processes(4)                                             # a quarter of that half each: does not fit
    shared = source(comp, "auto")
    assert shared.cached is None and len(shared[0].shape) == 3          # decoded on demand instead
    assert shared.cache_note.startswith("images: decoded on demand each epoch (the 8 decoded images need about ")
    assert "shared by 4 processes on this machine" in shared.cache_note
    with pytest.raises(CacheError, match=r"--cache ram: the 8 decoded training images need about .* shared by "
                                         r"4 processes on this machine: use --cache disk"):
        source(comp, "ram")                                  # forced: one line instead of the OOM killer
    processes(1)
    assert source(comp, "ram").cached is not None


def test_the_cache_budget_keeps_its_cap_and_reads_the_os(comp, processes, monkeypatch):
    monkeypatch.setattr(dataset, "CACHE_MAX_BYTES", 1000)    # the per-process cap holds with plenty of memory
    assert source(comp, "auto").cached is None
    avail = dataset.available_memory()                       # this OS says how much memory is left
    assert avail is None or avail > 0


def test_auto_workers_share_the_cores(processes, monkeypatch):
    monkeypatch.setattr(dataset.os, "cpu_count", lambda: 16)
    assert auto_workers(-1, cached=False) == 8
    processes(8)                                              # e.g. torchrun --nproc_per_node 8: 2 cores each
    assert auto_workers(-1, cached=False) == 2 and auto_workers(-1, cached=True) == 0
    assert auto_workers(-1, cached=False, processes=2) == 7
    assert auto_workers(3, cached=False) == 3                  # a number given is kept
