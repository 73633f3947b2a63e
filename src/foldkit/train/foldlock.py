"""The per-fold lock: two processes (on one machine or on several sharing models/<exp>/) never train
the same fold at once.

    with fold_lock(exp.lock(k), k):   # fold{k}.lock holds {"host", "pid", "started", "boot", "pid_start"}
        ...train fold k...

The second process to start a fold gets FoldLockError naming the holder. A lock whose holder is dead
is taken over: on the same host when its pid no longer runs, or runs but is another process (a
container restarted by Docker or Kubernetes gives its new Python the same pid on the same host: the
machine's boot id and the pid's start time, from /proc on Linux, tell them apart; lock files without
them are judged by the pid alone), from another host when the holder has
not refreshed the file's time for `stale` seconds (the holder touches it every `refresh` seconds from
a daemon thread, so a long epoch does not look dead). Hand-written: fcntl/flock locks are not
reliable on the network file systems clusters share folders on; creating a file by hard link is.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path

from foldkit.errors import FoldkitError
from foldkit.io import create_once

STALE_SECONDS = 600.0
REFRESH_SECONDS = 60.0


class FoldLockError(FoldkitError, RuntimeError):
    """Another live process holds this fold's lock."""


def read_holder(path: Path) -> dict:
    try:
        h = json.loads(Path(path).read_text())
        return h if isinstance(h, dict) else {}
    except (OSError, ValueError):
        return {}


def _pid_runs(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True          # someone else's process (or an unreadable pid): count it as running
    return True


def boot_id() -> str | None:
    """This boot of the machine (Linux), None elsewhere."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def pid_start(pid) -> int | None:
    """When process `pid` started, in clock ticks since boot (field 22 of /proc/<pid>/stat, Linux), None
    where that cannot be read. Together with the boot id it names one process, where a pid alone is
    reused (first by a restarted container's PID 1)."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])   # the name in (...) may hold spaces; field 22 overall
    except (OSError, ValueError, TypeError, IndexError):
        return None


def _same_process(holder: dict) -> bool:
    """The holder's pid still names the holder's process (not a later one given the same pid)."""
    if holder.get("boot") is not None and boot_id() is not None and holder["boot"] != boot_id():
        return False
    if holder.get("pid_start") is not None:
        now = pid_start(holder.get("pid"))
        return now is None or now == holder["pid_start"]    # unreadable: count it as the holder
    return True


def holder_is_dead(path: Path, holder: dict, stale: float) -> bool:
    if holder.get("host") == socket.gethostname():
        return not (_pid_runs(holder.get("pid")) and _same_process(holder))
    try:
        age = time.time() - Path(path).stat().st_mtime
    except FileNotFoundError:
        return True
    return age > stale


def _take_over(path: Path, dead: dict) -> None:
    """Move a dead holder's lock aside. If another process took it over first (the moved file is not
    the dead holder's), put that live lock back (os.link: never over a newer one)."""
    aside = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if read_holder(aside) != dead:
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
    aside.unlink(missing_ok=True)


def _describe(h: dict, path: Path) -> str:
    since = time.strftime("%Y-%m-%d %H:%M", time.localtime(h["started"])) if "started" in h else "?"
    return f"pid {h.get('pid', '?')} on {h.get('host', '?')} (since {since}; lock file {path})"


@contextlib.contextmanager
def fold_lock(path: str | Path, fold: int, stale: float = STALE_SECONDS, refresh: float = REFRESH_SECONDS):
    path = Path(path)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "boot": boot_id(),
          "pid_start": pid_start(os.getpid())}
    for _ in range(5):
        if create_once(path, (json.dumps(me) + "\n").encode()):
            break
        h = read_holder(path)
        if h == me:
            break
        if not holder_is_dead(path, h, stale):
            raise FoldLockError(f"fold {fold} is being trained by {_describe(h, path)}: not training it twice. "
                                "Train another fold, or delete the lock file if that process is gone")
        _take_over(path, h)
    else:
        raise FoldLockError(f"fold {fold}: could not take the lock {path} (other processes keep taking it)")
    stop = threading.Event()

    def touch():
        while not stop.wait(refresh):
            with contextlib.suppress(OSError):
                os.utime(path)
    t = threading.Thread(target=touch, daemon=True, name=f"foldlock-{fold}")
    t.start()
    try:
        yield me
    finally:
        stop.set()
        if read_holder(path) == me:
            path.unlink(missing_ok=True)
