"""More than one device: data-parallel folds under torchrun, and folds side by side (--devices).

Data-parallel (one fold on N processes), on PyTorch's own engine:

    torchrun --nproc_per_node 2 src/train.py --fold 0          (NCCL on GPUs, gloo on CPU)

`setup` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), opens the process group and
gives each rank its device; without torchrun it does nothing and the run is the single-process one.
Each rank trains on a disjoint, equal-length shard of the epoch's order (foldkit.dataset.EpochSampler
with rank/world), the model is wrapped in DistributedDataParallel (`wrap`), validation is sharded
without padding and gathered back in row order (`evaluate`: every row scored exactly once), and rank
0 alone writes files and logs (`is_main`); the others wait at a `barrier`.

Fold-parallel (K folds on K devices, no communication at all):

    python src/train.py --fold all --devices 0,1         (or cpu,cpu)

`run_fold_parallel` starts one worker process per device (torch.multiprocessing, spawn); the workers
take folds from one queue, report their log lines to the parent (one combined display) and a
failure with its fold; the parent stops every worker on the first failure. Hand-written: torch's
elastic launcher runs one job on N devices, not a queue of independent jobs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import time
import traceback
from datetime import timedelta

import numpy as np

from foldkit.errors import FoldkitError

_STATE = {"rank": 0, "world": 1, "local_rank": 0, "backend": None}
TIMEOUT = timedelta(minutes=30)     # a collective no rank answers fails instead of hanging forever


class DistributedError(FoldkitError, RuntimeError):
    """A multi-device run that cannot start or go on as asked; the message says why and what to do."""


# --------------------------------------------------------------------------- rank helpers

def rank() -> int:
    return _STATE["rank"]


def world() -> int:
    return _STATE["world"]


def is_main() -> bool:
    return _STATE["rank"] == 0


def active() -> bool:
    return _STATE["world"] > 1


def barrier() -> None:
    if active():
        import torch.distributed as dist
        dist.barrier()


def with_settings(cfg, **changes):
    """cfg with some settings changed, keeping which settings the user gave (cfg.given)."""
    new = dataclasses.replace(cfg, **changes)
    new.given = cfg.given
    return new


def _torchrun_env() -> tuple[int, int, int] | None:
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))


def setup(cfg, log=print):
    """Under torchrun with WORLD_SIZE > 1: open the process group (NCCL for CUDA, gloo for CPU), pin
    this rank to its device, silence logs and progress bars of ranks other than 0. Returns
    (cfg, log) to train with; without torchrun both come back unchanged."""
    env = _torchrun_env()
    if env is None or env[1] <= 1:
        return cfg, log
    import torch
    import torch.distributed as dist

    r, w, local = env
    if cfg.devices:
        raise DistributedError("--devices runs folds side by side in processes of its own: use it without "
                               "torchrun (or drop --devices to train one fold on all torchrun's processes)")
    cuda = torch.cuda.is_available() and cfg.device in ("auto", "cuda")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise DistributedError(f"--device {cfg.device}: no CUDA device here; use --device cpu (gloo)")
    if cuda:
        if local >= torch.cuda.device_count():
            raise DistributedError(f"rank {r}: local rank {local} but only {torch.cuda.device_count()} GPU(s) "
                                   "on this node: lower --nproc_per_node")
        torch.cuda.set_device(local)
    if cfg.sync_bn and not cuda:
        raise DistributedError("--sync-bn needs GPUs (torch's SyncBatchNorm has no CPU implementation): "
                               "drop it for a CPU run")
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=TIMEOUT)
    _STATE.update(rank=r, world=w, local_rank=local, backend=backend)
    cfg = with_settings(cfg, device=f"cuda:{local}" if cuda else "cpu",
                        progress=cfg.progress and r == 0)
    if r == 0:
        log(f"data-parallel: {w} processes ({backend}), global batch {cfg.batch_size * w * cfg.accum_steps} = "
            f"{cfg.batch_size} per device x {w} processes x {cfg.accum_steps} accumulation step(s); "
            f"--lr {cfg.lr:g} is used as given (not scaled with the global batch)")
    return cfg, (log if r == 0 else (lambda *a, **k: None))


def shutdown() -> None:
    """Close the process group opened by setup (no-op otherwise)."""
    if active():
        import torch.distributed as dist
        dist.barrier()
        dist.destroy_process_group()
        _STATE.update(rank=0, world=1, local_rank=0, backend=None)


@contextlib.contextmanager
def rank_in_errors():
    """Under torchrun, a FoldkitError's message starts with the rank that raised it (torchrun then
    stops the other ranks and names the failed one)."""
    try:
        yield
    except FoldkitError as e:
        if active() and e.args and isinstance(e.args[0], str):
            e.args = (f"rank {rank()}/{world()}: {e.args[0]}", *e.args[1:])
        raise


def main_first(fn):
    """fn() on rank 0, then on the other ranks (files rank 0 creates, e.g. config.json, exist for them)."""
    if is_main():
        out = fn()
        barrier()
        return out
    barrier()
    return fn()


# --------------------------------------------------------------------------- data-parallel pieces

def shard_rows(rows: np.ndarray) -> np.ndarray:
    """This rank's contiguous block of `rows` (blocks differ in length by at most one; no padding, so
    every row is scored exactly once when the blocks are gathered back in rank order)."""
    return np.array_split(np.asarray(rows), world())[rank()] if active() else rows


def wrap(model, device, sync_bn: bool = False, compile: bool = False, partly_frozen: bool = False):
    """The model to train with: DistributedDataParallel over it under torchrun (SyncBatchNorm with
    --sync-bn, converted in place so the optimizer's parameters stay the same), compiled after
    wrapping as torch recommends; without torchrun, None (train the Training's own run_model).
    partly_frozen (--freeze-epochs): the backbone gets no gradients in the head-only epochs, which
    DDP must be told (find_unused_parameters)."""
    if not active():
        return None
    import torch
    if sync_bn:
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                    else None, find_unused_parameters=partly_frozen)
    return torch.compile(ddp) if compile else ddp


def mean_epoch(ep: dict) -> dict:
    """Training figures of every rank combined: loss and accuracy averaged (the shards have equal
    length), images/s summed, seconds of the slowest rank."""
    if not active():
        return ep
    import torch
    import torch.distributed as dist
    t = torch.tensor([ep["loss"], ep["accuracy"], ep["img_per_s"]], dtype=torch.float64)
    s = torch.tensor([ep["seconds"]], dtype=torch.float64)
    if _STATE["backend"] == "nccl":
        t, s = t.cuda(), s.cuda()
    dist.all_reduce(t)
    dist.all_reduce(s, op=dist.ReduceOp.MAX)
    loss, acc, ips = t.tolist()
    return {**ep, "loss": loss / world(), "accuracy": acc / world(), "img_per_s": ips, "seconds": s.item()}


def evaluate(model, loader, device, **kw):
    """foldkit.engine.evaluate over this rank's shard of the validation rows, gathered on every rank in
    row order (so every rank takes the same best-epoch and early-stopping decisions)."""
    from foldkit import engine
    if not active():
        return engine.evaluate(model, loader, device, **kw)
    import torch.distributed as dist
    probs, y = engine.predict_probs(model, loader, device, **kw)
    parts = [None] * world()
    dist.all_gather_object(parts, (probs, y))
    probs = np.concatenate([p for p, _ in parts])
    y = np.concatenate([t for _, t in parts])
    return engine.probs_loss(probs, y), probs, y


def check_resume(saved_world: int, fold: int) -> None:
    """Exact resume needs the same number of processes (the shards and the schedule depend on it)."""
    if saved_world != world():
        raise DistributedError(f"fold {fold}: its resume file was written by a run on {saved_world} process(es), "
                               f"this one has {world()}: restart with the same number (torchrun "
                               "--nproc_per_node), or pass --no-resume to start the fold over")


# --------------------------------------------------------------------------- fold-parallel

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


def _worker(wid: int, device: str, cfg, jobs, events, threads: int, prepare_run, fit_fold) -> None:
    """One fold-parallel worker: train folds from `jobs` on `device` until the queue is empty, with
    fit's prepare_run and fit_fold (passed in: this module is below fit, it does not import it)."""
    import signal
    import sys

    import torch

    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.cuda.set_device(device)    # no CUDA context on GPU 0 from every worker
    def stop(*_):
        # stopped by the parent (another fold failed): nobody reads any more, so unsent messages are
        # dropped at exit; exit through Python so its finalizers clean up. Otherwise (the normal end)
        # the queue's feeder thread is joined at exit: the last messages are sent before the process goes.
        events.cancel_join_thread()
        sys.exit(1)
    signal.signal(signal.SIGTERM, stop)
    fold = None
    try:
        cfg = with_settings(cfg, device=device, devices="", progress=False)
        log = lambda msg: events.put(("log", wid, fold, f"[{device} #{wid}] {msg}"))  # noqa: E731
        run = prepare_run(cfg, log=log)
        while (fold := jobs.get()) is not None:
            events.put(("start", wid, fold, None))
            events.put(("done", wid, fold, fit_fold(cfg, run, fold, log=log)))
            fold = None
    except SystemExit:
        return
    except FoldkitError as e:
        events.put(("error", wid, fold, str(e)))
    except BaseException:  # noqa: BLE001  (a bug: its traceback goes to the parent)
        events.put(("crash", wid, fold, traceback.format_exc()))
    events.put(("exit", wid, None, None))


def run_fold_parallel(cfg, folds: list[int], log=print, *, prepare_run, fit_fold) -> dict[int, dict]:
    """Train `folds` on cfg.devices, one worker process per device taking folds from a queue (each
    runs prepare_run once, then fit_fold per fold: fit's functions, module-level so they pickle). Returns
    {fold: summary}. The first failure stops every worker and is raised naming its fold and device;
    a worker that dies without a word (killed, out of memory) is reported the same way."""
    import torch.multiprocessing as mp

    devices = parse_devices(cfg.devices)
    ctx = mp.get_context("spawn")
    jobs, events = ctx.Queue(), ctx.Queue()
    for k in [*folds, *[None] * len(devices)]:     # one stop mark per worker
        jobs.put(k)
    n_cpu = sum(d == "cpu" for d in devices)
    threads = max(1, (os.cpu_count() or 1) // n_cpu) if n_cpu else 0
    procs = [ctx.Process(target=_worker, args=(i, d, cfg, jobs, events, threads, prepare_run, fit_fold), daemon=True)
             for i, d in enumerate(devices)]
    log(f"fold-parallel: folds {folds} on {len(devices)} worker(s): {', '.join(devices)}")
    for p in procs:
        p.start()
    finished = False
    try:
        done = _collect(procs, devices, events, len(folds), log)
        finished = True
        return done
    finally:
        for p in procs:          # after a failure, the others are stopped (their folds resume next time)
            if finished:
                p.join(timeout=30)
            if p.is_alive():
                p.terminate()
            p.join(timeout=30)
        for q in (jobs, events):
            q.close()
            q.cancel_join_thread()


def _collect(procs, devices, events, n_folds: int, log) -> dict[int, dict]:
    done, current, exited = {}, {}, set()
    while len(exited) < len(procs):
        try:
            kind, wid, fold, payload = events.get(timeout=1.0)
        except queue.Empty:
            for i, p in enumerate(procs):          # a worker killed without reporting
                if i not in exited and not p.is_alive() and p.exitcode not in (0, None):
                    time.sleep(0.5)
                    if events.empty():
                        what = f"fold {current[i]}" if current.get(i) is not None else "a worker"
                        raise DistributedError(f"{what} on {devices[i]} failed: its process died (exit code "
                                               f"{p.exitcode}); start the run again to resume the fold")
            continue
        if kind == "log":
            log(payload)
        elif kind == "start":
            current[wid] = fold
        elif kind == "done":
            done[fold], current[wid] = payload, None
            log(f"fold-parallel: fold {fold} finished on {devices[wid]} ({len(done)}/{n_folds} folds)")
        elif kind == "error":
            where = f"fold {fold} on {devices[wid]}" if fold is not None else f"worker on {devices[wid]}"
            raise DistributedError(f"{where}: {payload}")
        elif kind == "crash":
            raise RuntimeError(f"fold {fold} on {devices[wid]} crashed:\n{payload}")
        elif kind == "exit":
            exited.add(wid)
    return done
