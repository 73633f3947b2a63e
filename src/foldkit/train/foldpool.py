"""Folds side by side (--devices): one worker process per device, taking folds from one queue.

    python src/train.py --fold all --devices 0,1         (or cpu,cpu)

`run_fold_parallel` starts one worker per device (torch.multiprocessing, spawn). Each worker prepares
the run once (`prepare(cfg, log)`, e.g. decoding the images) and trains folds (`fit_one(cfg, run,
fold, log)`) until the queue is empty; both functions are given by the caller (foldkit.train.fit), so this
module never imports the training loop. Workers send their log lines to the parent (one combined
display) and report a failure with its fold; the parent stops every worker on the first failure.

A worker that stops in any other way (SIGTERM from a preemption or a user's `kill`, SIGKILL, out of
memory) is noticed within seconds: a worker process that is gone without its "exit" message is a
failure naming the fold it had, whatever its exit code. The parent itself, stopped by SIGTERM,
stops its workers first. Every fold keeps its resume file, so starting the run again resumes.

Hand-written rather than concurrent.futures.ProcessPoolExecutor: each worker is pinned to its own
device and decodes the images once for all its folds, streams log lines while a fold runs, and the
others must be stopped in the middle of a fold on the first failure (the executor can only cancel
folds not yet started). torch's elastic launcher runs one job on N devices, not a queue of jobs.
"""
from __future__ import annotations

import ctypes
import os
import queue
import signal
import sys
import threading
import time
import traceback

from tqdm import tqdm

from foldkit.runtime import distributed
from foldkit.config import with_settings
from foldkit.runtime.distributed import DistributedError
from foldkit.errors import FoldkitError

GRACE_S = 2.0        # a dead worker's last messages may still be in the pipe: wait this long for them
STOP_S = 5.0         # a worker asked to stop (SIGTERM) gets this long before SIGKILL


def parse_devices(spec: str) -> list[str]:
    """'0,1' -> ['cuda:0', 'cuda:1']; 'cpu,cpu' -> ['cpu', 'cpu']; 'cuda:1' as is. Checked against the
    GPUs present."""
    out = []
    for d in (s.strip() for s in str(spec).split(",") if s.strip()):
        if d.isdigit():
            d = f"cuda:{d}"
        if d != "cpu" and not (d.startswith("cuda:") and d[5:].isdigit()):
            raise DistributedError(f"--devices {spec!r}: {d!r} is not a device; give GPU numbers (0,1), "
                                   "cuda:N or cpu, separated by commas")
        out.append(d)
    gpus = [int(d[5:]) for d in out if d.startswith("cuda:")]
    if gpus:
        import torch
        n = torch.cuda.device_count()
        if max(gpus) >= n:
            raise DistributedError(f"--devices {spec!r}: this machine has {n} GPU(s) (0..{n - 1}); "
                                   "use cpu,cpu for CPU workers")
    if not out:
        raise DistributedError(f"--devices {spec!r}: give at least one device")
    return out


def _die_with_parent(parent: int) -> None:
    """The worker gets SIGTERM when the parent process dies (Linux prctl PR_SET_PDEATHSIG; hand-written:
    multiprocessing only offers daemon processes for this, and a daemon may not start the DataLoader
    worker processes a GPU machine feeds its folds with). Elsewhere, the parent's stop is what ends it."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)    # 1 = PR_SET_PDEATHSIG
        except OSError:
            return
        if os.getppid() != parent:        # the parent died before the line above: stop now
            os.kill(os.getpid(), signal.SIGTERM)


def _exit_once(signum, _frame) -> None:
    """A worker's SIGTERM (the parent stopping it, a preemption, a user's kill): exit through Python so
    finalizers clean up, after telling the parent which fold was cut short. Once: a second SIGTERM (the
    parent stopping every worker) would otherwise raise again inside those finalizers or an atexit
    callback, printing "Exception ignored ... SystemExit" above the run's error line; it now just ends
    the process."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.exit(128 + signum)


def _worker(wid: int, device: str, cfg, jobs, events, threads: int, n_workers: int, prepare, fit_one,
            parent: int = 0) -> None:
    """One fold-parallel worker: train folds from `jobs` on `device` until the queue is empty."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.cuda.set_device(device)    # no CUDA context on GPU 0 from every worker
    distributed.set_local_processes(n_workers)   # RAM cache and DataLoader workers share the machine
    # tqdm's default lock is a multiprocessing semaphore registered with the parent's resource tracker:
    # a killed worker would leave it behind (a warning after the error line); a thread lock is enough here
    tqdm.set_lock(threading.RLock())
    signal.signal(signal.SIGTERM, _exit_once)
    fold = None
    if parent:
        _die_with_parent(parent)
    try:
        cfg = with_settings(cfg, device=device, devices="", progress=False)
        log = lambda msg: events.put(("log", wid, fold, f"[{device} #{wid}] {msg}"))  # noqa: E731
        run = prepare(cfg, log)
        while (fold := jobs.get()) is not None:
            events.put(("start", wid, fold, None))
            events.put(("done", wid, fold, fit_one(cfg, run, fold, log)))
            fold = None
    except SystemExit:
        events.cancel_join_thread()      # never block at exit on messages nobody may read any more
        events.put(("stopped", wid, fold, "SIGTERM"))
        raise
    except FoldkitError as e:
        events.put(("error", wid, fold, str(e)))
    except BaseException:  # noqa: BLE001  (a bug: its traceback goes to the parent)
        events.put(("crash", wid, fold, traceback.format_exc()))
    events.put(("exit", wid, None, None))


def run_fold_parallel(cfg, folds: list[int], prepare, fit_one, log=print) -> dict[int, dict]:
    """Train `folds` on cfg.devices, one worker process per device taking folds from a queue:
    `prepare(cfg, log) -> run` once per worker, `fit_one(cfg, run, fold, log) -> summary` per fold
    (module-level functions: spawned workers import them). Returns {fold: summary}. The first failure
    stops every worker and is raised naming its fold and device."""
    import torch.multiprocessing as mp

    devices = parse_devices(cfg.devices)
    ctx = mp.get_context("spawn")
    jobs, events = ctx.Queue(), ctx.Queue()
    for k in [*folds, *[None] * len(devices)]:     # one stop mark per worker
        jobs.put(k)
    n_cpu = sum(d == "cpu" for d in devices)
    threads = max(1, (os.cpu_count() or 1) // n_cpu) if n_cpu else 0
    # not daemons: a daemon process may not have children, and a fold's DataLoader workers are children
    # (a worker dies with this process instead: _die_with_parent; _stop ends them on every way out)
    procs = [ctx.Process(target=_worker, name=f"foldkit-worker-{i}", daemon=False,
                         args=(i, d, cfg, jobs, events, threads, len(devices), prepare, fit_one, os.getpid()))
             for i, d in enumerate(devices)]
    log(f"fold-parallel: folds {folds} on {len(devices)} worker(s): {', '.join(devices)}")
    finished = False
    with _sigterm_stops_the_run():
        try:
            for p in procs:
                p.start()
            done = _collect(procs, devices, events, len(folds), log)
            finished = True
            return done
        except BaseException as e:
            traceback.clear_frames(e.__traceback__)      # the frames below held the queues: free them now
            raise
        finally:
            _stop(procs, finished)
            for q in (jobs, events):
                q.close()
                q.cancel_join_thread()
            # free the queues' semaphores now: left to interpreter exit after a worker was killed, they
            # raced the resource tracker, which then printed "leaked semaphore" warnings after the error line
            procs.clear()
            del jobs, events, q


def _stop(procs, finished: bool) -> None:
    """Wait for workers that finished; stop the others (SIGTERM, then SIGKILL): their folds resume next time."""
    for p in procs:
        if finished:
            p.join(timeout=30)
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + STOP_S
    for p in procs:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(timeout=STOP_S)


class _Stopped(DistributedError):
    pass


class _sigterm_stops_the_run:
    """The parent stopped by SIGTERM raises a DistributedError (main thread only), so its workers are
    stopped too instead of training on without it."""

    def __enter__(self):
        self.old = None
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGTERM, self._raise)
        return self

    def _raise(self, *_):
        # once: a second SIGTERM must not raise again inside the cleanup that stops the workers
        signal.signal(signal.SIGTERM, signal.SIG_DFL if self.old is None else self.old)
        raise _Stopped("fold-parallel run stopped by SIGTERM: its workers were stopped; start the run again "
                       "to resume the unfinished folds")

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGTERM, self.old)
        return False


def _where(devices, wid, fold) -> str:
    return f"fold {fold} on {devices[wid]}" if fold is not None else f"a worker on {devices[wid]}"


def _collect(procs, devices, events, n_folds: int, log) -> dict[int, dict]:
    """Read the workers' messages until every worker said "exit"; raise on the first failure, including
    a worker process gone without a word (checked every second, whatever the others are logging)."""
    done, current, exited, gone_since = {}, {}, set(), {}
    next_check = time.monotonic() + 1.0
    while len(exited) < len(procs):
        try:
            kind, wid, fold, payload = events.get(timeout=0.5)
        except queue.Empty:
            kind = None
        if kind == "log":
            log(payload)
        elif kind == "start":
            current[wid] = fold
        elif kind == "done":
            done[fold], current[wid] = payload, None
            log(f"fold-parallel: fold {fold} finished on {devices[wid]} ({len(done)}/{n_folds} folds)")
        elif kind == "error":
            raise DistributedError(f"{_where(devices, wid, fold)}: {payload}")
        elif kind == "crash":
            raise RuntimeError(f"fold {fold} on {devices[wid]} crashed:\n{payload}")
        elif kind == "stopped":
            raise DistributedError(f"{_where(devices, wid, fold)}: its worker process was stopped ({payload}: "
                                   "a preemption or a kill); start the run again to resume the fold")
        elif kind == "exit":
            exited.add(wid)
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + 1.0
            _check_alive(procs, devices, current, exited, gone_since)
    return done


def _check_alive(procs, devices, current, exited, gone_since) -> None:
    now = time.monotonic()
    for i, p in enumerate(procs):
        if i in exited or p.is_alive():
            continue
        gone_since.setdefault(i, now)
        if now - gone_since[i] < GRACE_S:
            continue
        if p.exitcode == 0 and current.get(i) is None:     # finished its queue; its "exit" got lost
            exited.add(i)
            continue
        how = f"exit code {p.exitcode}"
        if p.exitcode is not None and p.exitcode < 0:
            try:
                how = f"killed by {signal.Signals(-p.exitcode).name}"
            except ValueError:
                how = f"killed by signal {-p.exitcode}"
        raise DistributedError(f"{_where(devices, i, current.get(i))}: its worker process died ({how}, e.g. "
                               "a kill or out of memory); start the run again to resume the fold")
