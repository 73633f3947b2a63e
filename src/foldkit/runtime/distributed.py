"""More than one device for one fold: torchrun's processes, their ranks and what they share.

    torchrun --nproc_per_node 2 src/train.py --fold 0          (NCCL on GPUs, gloo on CPU)

`setup` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), opens the process group and
gives each rank its device; without torchrun it does nothing and the run is the single-process one.
`--batch-size` is the global batch: each rank takes batch / processes (`per_process_batch`), so the
same command keeps the same batch, LR and number of optimizer steps on any number of processes.
Each rank trains on a disjoint, equal-length shard of the epoch's order (foldkit.data.dataset.EpochSampler
with rank/world), the model is wrapped in DistributedDataParallel (`wrap`), validation is sharded
without padding and gathered back in row order (`all_rows`: every row scored exactly once), and rank
0 alone writes files and logs (`is_main`); the others wait at a `barrier`. `local_processes` is how
many foldkit processes share this machine (torchrun's LOCAL_WORLD_SIZE, or the fold-parallel
workers): the RAM cache and DataLoader workers divide the machine by it.

Folds side by side (--devices) are foldkit.train.foldpool's.
"""
from __future__ import annotations

import contextlib
import os
from datetime import timedelta

import numpy as np

from foldkit.config import with_settings
from foldkit.errors import FoldkitError

_STATE = {"rank": 0, "world": 1, "local_rank": 0, "backend": None, "local_processes": 1}
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


def local_processes() -> int:
    """foldkit processes sharing this machine's memory and cores: torchrun's LOCAL_WORLD_SIZE, the
    number of fold-parallel workers (set_local_processes), else 1."""
    if active():
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", _STATE["local_processes"])))
    return _STATE["local_processes"]


def set_local_processes(n: int) -> None:
    _STATE["local_processes"] = max(1, int(n))


def barrier() -> None:
    if active():
        import torch.distributed as dist
        dist.barrier()


def _torchrun_env() -> tuple[int, int, int] | None:
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))


def per_process_batch(batch_size: int, processes: int | None = None) -> int:
    """This process's share of --batch-size (the global batch); refused when it does not split evenly."""
    w = world() if processes is None else processes
    if batch_size % w:
        lo, hi = batch_size // w * w, (batch_size // w + 1) * w
        raise DistributedError(f"--batch-size {batch_size} is the global batch and does not split evenly over "
                               f"{w} processes: give a multiple of {w} (e.g. {lo or hi} or {hi})")
    return batch_size // w


def rank_device(device: str, local: int, n_gpus: int) -> str:
    """The device of the process with this local rank under torchrun: cuda:<local rank> or cpu."""
    if device == "cpu":
        return "cpu"
    if device not in ("auto", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise DistributedError(f"--device {device}: under torchrun each process trains on a GPU (NCCL) or "
                               "the CPU (gloo): use --device cuda, cpu or auto")
    if n_gpus == 0:
        if device == "auto":
            return "cpu"
        raise DistributedError(f"--device {device}: no CUDA device here; use --device cpu (gloo)")
    if device.startswith("cuda:") and int(device[5:]) != local:
        raise DistributedError(f"--device {device}: under torchrun each process takes the GPU of its local rank "
                               f"(this one cuda:{local}); pass --device cuda and choose the GPUs with "
                               "CUDA_VISIBLE_DEVICES")
    if local >= n_gpus:
        raise DistributedError(f"local rank {local} but only {n_gpus} GPU(s) on this node: lower --nproc_per_node")
    return f"cuda:{local}"


def setup(cfg, log=print):
    """Under torchrun with WORLD_SIZE > 1: open the process group (NCCL for CUDA, gloo for CPU), pin
    this rank to its device, silence logs and progress bars of ranks other than 0. Returns
    (cfg, log) to train with; without torchrun both come back unchanged. cfg.batch_size stays the
    global batch (an experiment's identity); fit takes per_process_batch of it."""
    env = _torchrun_env()
    if env is None or env[1] <= 1:
        return cfg, log
    import torch
    import torch.distributed as dist

    r, w, local = env
    if cfg.devices:
        raise DistributedError("--devices runs folds side by side in processes of its own: use it without "
                               "torchrun (or drop --devices to train one fold on all torchrun's processes)")
    device = rank_device(cfg.device, local, torch.cuda.device_count() if torch.cuda.is_available() else 0)
    cuda = device.startswith("cuda")
    if cfg.sync_bn and not cuda:
        raise DistributedError("--sync-bn needs GPUs (torch's SyncBatchNorm has no CPU implementation): "
                               "drop it for a CPU run")
    per = per_process_batch(cfg.batch_size, w)
    if cuda:
        torch.cuda.set_device(local)
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=TIMEOUT)
    _STATE.update(rank=r, world=w, local_rank=local, backend=backend)
    cfg = with_settings(cfg, device=device, progress=cfg.progress and r == 0)
    if r == 0:
        accum = f" x {cfg.accum_steps} accumulation steps" if cfg.accum_steps > 1 else ""
        log(f"data-parallel: {w} processes ({backend}), global batch {cfg.batch_size * cfg.accum_steps} = {w} "
            f"processes x {per}"
            f"{accum}, lr {cfg.lr:g} (--batch-size is the global batch: the same command trains the same "
            "recipe on any number of processes)")
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


def min_over_ranks(value: int) -> int:
    """The smallest of every rank's `value` (itself without torchrun): ranks that measured their own
    device agree on one answer."""
    if not active():
        return value
    import torch
    import torch.distributed as dist
    t = torch.tensor([value], dtype=torch.int64)
    if _STATE["backend"] == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


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


def all_rows(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """This rank's shard of the validation rows (probabilities, targets) gathered from every rank in row
    order, so every rank takes the same best-epoch and early-stopping decisions; as it is without torchrun."""
    if not active():
        return probs, y
    import torch.distributed as dist
    parts = [None] * world()
    dist.all_gather_object(parts, (probs, y))
    return np.concatenate([p for p, _ in parts]), np.concatenate([t for _, t in parts])


def check_resume(saved_world: int, fold: int) -> None:
    """Exact resume needs the same number of processes (the shards and the schedule depend on it)."""
    if saved_world != world():
        raise DistributedError(f"fold {fold}: its resume file was written by a run on {saved_world} process(es), "
                               f"this one has {world()}: restart with the same number (torchrun "
                               "--nproc_per_node), or pass --no-resume to start the fold over")
