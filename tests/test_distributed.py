"""More than one device on CPU: a 2-process gloo DDP fold through torch.distributed.run, fold-parallel
workers (--devices cpu,cpu), and their failures. Tiny real data (the demo digits, 301 rows, 2 folds).

Process start-up (importing torch and timm) dominates here, so the reference run and the parent of the
fold-parallel runs are in-process; the torchrun ranks and the fold-parallel workers are real processes."""
import io
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

import train as train_cli
from conftest import REPO
from foldkit import config
from foldkit.runtime import distributed
from foldkit.train import foldpool
from foldkit.data.dataset import EpochSampler

FAST = ["--model", "test_resnet", "--img-size", "32", "--crop-pct", "1.0", "--no-hflip", "--aug", "none",
        "--lr", "1e-2", "--warmup-epochs", "0", "--epochs", "8", "--batch-size", "16", "--no-progress",
        "--no-pretrained", "--workers", "0"]
FOLD_FILES = {"fold{k}.pt", "fold{k}.json", "oof_fold{k}.csv", "log_fold{k}.csv", "curve_fold{k}.png"}


def paths(comp, models):
    return ["--input-dir", str(comp / "input"), "--folds-dir", str(comp / "folds"), "--models-dir", str(models)]


def train(comp, models, *args):
    """train.py in this process; with one torch thread, like each CPU worker on 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_cli.main([*paths(comp, models), *FAST, *args])
    finally:
        torch.set_num_threads(threads)


def torchrun(comp, models, *args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(REPO / "src" / "train.py"),
           *paths(comp, models), *FAST, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=300)


@pytest.fixture(scope="module")
def comp(tmp_path_factory):
    """301 demo digits in 2 folds (fold 0 has an odd number of rows: the 2 validation shards differ)."""
    from foldkit.data.demo import build_demo
    from foldkit.folds.file import make_folds
    root = tmp_path_factory.mktemp("dist")
    build_demo(root / "input")
    make_folds(config.resolve({"input_dir": str(root / "input"), "folds_dir": str(root / "folds"),
                               "limit": 301, "n_folds": 2}), log=lambda *_: None)
    return root


@pytest.fixture(scope="module")
def sequential(comp):
    """Both folds trained one after the other in one process: the reference."""
    train(comp, comp / "seq", "--fold", "all", "--experiment", "e")
    return comp / "seq" / "e"


def files(exp):
    return sorted(p.name for p in exp.iterdir())


def expected_files(folds):
    return sorted({"config.json"} | {f.format(k=k) for k in folds for f in FOLD_FILES})


# --------------------------------------------------------------------------- data-parallel (torchrun)

def test_ddp_two_processes_scores_every_row_once_and_matches_one_process(comp, sequential):
    # the single-process command as is: --batch-size is the global batch, 8 per process x 2 processes,
    # so the same LR and number of optimizer steps (each process keeping 16 halved the steps: CV 0.78 vs 0.94)
    r = torchrun(comp, comp / "ddp", "--fold", "0", "--experiment", "e")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "global batch 16 = 2 processes x 8, lr 0.01" in r.stdout
    # rank 0 alone logs and writes: each epoch line once, the fold's files once, nothing left over
    assert sum(line.startswith("fold 0 epoch   1/8") for line in r.stdout.splitlines()) == 1
    assert r.stdout.count("fold 0: best accuracy") == 1
    exp = comp / "ddp" / "e"
    assert files(exp) == expected_files([0])
    oof = pd.read_csv(exp / "oof_fold0.csv", dtype={"id": str})
    table = pd.read_csv(comp / "folds" / "train_folds.csv", dtype={"id": str})
    valid_ids = table.loc[table["fold"] == 0, "id"]
    assert len(valid_ids) % 2 == 1                              # uneven shards: no padding row may sneak in
    assert oof["id"].tolist() == valid_ids.tolist()             # every validation row once, in row order
    assert np.allclose(oof.filter(like="prob_").sum(axis=1), 1, atol=1e-4)
    log = pd.read_csv(exp / "log_fold0.csv")
    assert log["epoch"].tolist() == list(range(1, 9))
    ref = pd.read_csv(sequential / "log_fold0.csv")
    assert log["train_loss"].iloc[-1] < log["train_loss"].iloc[0]
    # same global batch and LR as one process (BatchNorm sees 8 images instead of 16): CV within noise
    cv, cv_ref = log["valid_metric"].max(), ref["valid_metric"].max()
    assert cv > 0.8 and abs(cv - cv_ref) < 0.05, (cv, cv_ref)
    summary = pd.read_json(exp / "fold0.json", typ="series")
    assert summary["processes"] == 2 and summary["batch_per_process"] == 8
    assert summary["valid_rows"] == len(valid_ids)
    # the same experiment as the single-process run (same learning settings, batch included)
    learning = [{k: v for k, v in json.loads((e / "config.json").read_text()).items() if k not in config.RUN_ONLY}
                for e in (exp, sequential)]
    assert learning[0] == learning[1] and learning[0]["batch_size"] == 16


def test_ddp_student_learns_from_its_teachers_like_one_process(comp, sequential):
    """--pseudo, --teacher and --soft-labels under torchrun: rank 0 labels the pool once (one log line), every
    rank trains on the same pseudo-labelled rows, the fold-k teacher is fold k's model, as in one process."""
    import shutil
    for d in ("stud_ddp", "stud_one"):
        shutil.copytree(comp / "seq", comp / d)
    args = ("--fold", "0", "--experiment", "s", "--epochs", "2", "--pseudo", "e", "--pseudo-min-confidence", "0.5",
            "--teacher", "e", "--soft-labels", "e")
    r = torchrun(comp, comp / "stud_ddp", *args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("joined the training part") == 1 and r.stdout.count("distilling from e/fold0.pt") == 1
    train(comp, comp / "stud_one", *args)
    ddp, one = (pd.read_csv(comp / d / "s" / "pseudo_fold0.csv", dtype=str) for d in ("stud_ddp", "stud_one"))
    assert len(ddp) > 0 and ddp.equals(one)
    summary = pd.read_json(comp / "stud_ddp" / "s" / "fold0.json", typ="series")
    assert summary["processes"] == 2 and summary["teaching"]["teacher"]["models"][0]["file"] == "fold0.pt"


# --------------------------------------------------------------------------- fold-parallel (--devices)

def test_fold_parallel_workers_feed_their_folds_with_loader_processes(comp, sequential):
    """A fold's DataLoader workers are child processes of its fold-parallel worker (what a GPU machine's
    cores do by default); the workers were daemons, which may not have children: every fold crashed."""
    train(comp, comp / "loaders", "--fold", "0", "--experiment", "e", "--devices", "cpu,cpu", "--workers", "1")
    oof, ref = (pd.read_csv(e / "oof_fold0.csv", dtype={"id": str}) for e in (comp / "loaders" / "e", sequential))
    assert oof[["id", "label", "pred"]].equals(ref[["id", "label", "pred"]])


def test_fold_parallel_writes_the_same_folds_as_the_sequential_run(comp, sequential, capsys):
    train(comp, comp / "par", "--fold", "all", "--experiment", "e", "--devices", "cpu,cpu")
    out = capsys.readouterr().out
    assert "fold-parallel: folds [0, 1] on 2 worker(s): cpu, cpu" in out
    assert "[cpu #0] fold " in out and "[cpu #1] fold " in out      # both workers, one display
    exp = comp / "par" / "e"
    assert files(exp) == files(sequential) == expected_files([0, 1])
    for k in (0, 1):
        # each fold's math depends on its own seed only: same log and OOF (seconds aside)
        log, ref = pd.read_csv(exp / f"log_fold{k}.csv"), pd.read_csv(sequential / f"log_fold{k}.csv")
        cols = ["epoch", "train_loss", "train_accuracy", "valid_loss", "valid_accuracy", "valid_metric", "lr"]
        pd.testing.assert_frame_equal(log[cols], ref[cols], rtol=1e-4)
        oof, oof_ref = (pd.read_csv(e / f"oof_fold{k}.csv", dtype={"id": str}) for e in (exp, sequential))
        assert oof[["id", "label", "pred"]].equals(oof_ref[["id", "label", "pred"]])
        assert np.allclose(oof.filter(like="prob_"), oof_ref.filter(like="prob_"), atol=1e-4)
    # finished folds are skipped: a second run trains nothing
    train(comp, comp / "par", "--fold", "all", "--experiment", "e", "--devices", "cpu,cpu")
    again = capsys.readouterr().out
    assert again.count("already finished") == 2 and "fold-parallel:" not in again


def test_a_failing_worker_stops_the_run_naming_its_fold(comp, sequential, capsys):
    exp = comp / "fail" / "e"
    exp.mkdir(parents=True)
    (exp / "config.json").write_bytes((sequential / "config.json").read_bytes())
    (exp / "fold1_last.pt").write_bytes(b"not a checkpoint")      # fold 1 cannot resume
    with pytest.raises(SystemExit) as stop:
        train(comp, comp / "fail", "--fold", "all", "--experiment", "e", "--devices", "cpu,cpu")
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: fold 1 on cpu: ")
    assert "fold1_last.pt: not a readable foldkit checkpoint" in lines[0]
    assert not (exp / "fold1.json").exists()


class KillAWorker(io.StringIO):
    """stdout of an in-process fold-parallel parent: at a worker's first line of epoch 2 or later (its
    epoch-1 resume file is written by then), send that worker process `sig`."""

    def __init__(self, sig):
        super().__init__()
        self.sig, self.fold, self.at = sig, None, None

    def write(self, s):
        m = re.search(r"\[cpu #(\d)\] fold (\d) epoch +([2-9])/", s)
        if m and self.fold is None:
            worker = next(p for p in multiprocessing.active_children() if p.name == f"foldkit-worker-{m[1]}")
            os.kill(worker.pid, self.sig)
            self.fold, self.at = int(m[2]), time.monotonic()
        return super().write(s)


def test_a_stopped_or_killed_worker_stops_the_run_within_seconds_and_the_run_resumes(comp, monkeypatch, capsys):
    args = ("--fold", "all", "--experiment", "e", "--devices", "cpu,cpu", "--epochs", "3")
    for sig, what in ((signal.SIGTERM, "was stopped (SIGTERM"), (signal.SIGKILL, "died (killed by SIGKILL")):
        watch = KillAWorker(sig)
        monkeypatch.setattr(sys, "stdout", watch)
        with pytest.raises(SystemExit) as stop:
            train(comp, comp / "kill", *args)
        seconds = time.monotonic() - watch.at
        assert stop.value.code == 2 and seconds < 15, seconds
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"error: fold {watch.fold} on cpu: its worker process {what}"), lines[0]
        assert "start the run again to resume the fold" in lines[0]
        assert not multiprocessing.active_children()               # no worker left behind
    monkeypatch.undo()
    # a worker killed in the middle of an atomic write leaves its temporary file: the fold's restart removes it
    (comp / "kill" / "e" / f".fold{watch.fold}.pt.stale.tmp").write_bytes(b"half a checkpoint")
    train(comp, comp / "kill", *args)                              # started again: resumes and finishes
    out = capsys.readouterr().out
    assert re.search(r"fold \d: resuming after epoch [12] ", out), out
    assert files(comp / "kill" / "e") == expected_files([0, 1])


# --------------------------------------------------------------------------- the pieces, in-process

def test_epoch_sampler_shards_are_disjoint_equal_and_keep_global_positions():
    one = list(EpochSampler(103, seed=7))
    shards = [list(EpochSampler(103, seed=7, rank=r, world=4)) for r in range(4)]
    assert {len(s) for s in shards} == {25}                          # equal: no rank waits at the end
    keys = [k for s in shards for k in s]
    assert len(set(keys)) == 100 and set(keys) <= set(one)           # disjoint, same (epoch, position, index)


def test_devices_and_torchrun_settings_are_checked(monkeypatch):
    assert foldpool.parse_devices("cpu,cpu") == ["cpu", "cpu"]
    with pytest.raises(distributed.DistributedError, match="'gpu0' is not a device"):
        foldpool.parse_devices("gpu0")
    cfg = config.resolve({"devices": "cpu,cpu"})
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(distributed.DistributedError, match="--devices runs folds side by side"):
        distributed.setup(cfg)
    with pytest.raises(distributed.DistributedError, match="--sync-bn needs GPUs"):
        distributed.setup(config.resolve({"sync_bn": True, "device": "cpu"}))
    with pytest.raises(distributed.DistributedError, match="written by a run on 2 process"):
        distributed.check_resume(2, fold=3)


def test_torchrun_batch_is_global_and_cuda_n_is_a_gpu(monkeypatch):
    probs, y = np.eye(3), np.arange(3)
    assert distributed.all_rows(probs, y) == (probs, y)          # without torchrun: this process's rows
    assert distributed.per_process_batch(64, 2) == 32
    with pytest.raises(distributed.DistributedError, match=r"--batch-size 50 is the global batch and does not "
                       r"split evenly over 4 processes: give a multiple of 4 \(e.g. 48 or 52\)"):
        distributed.per_process_batch(50, 4)
    # each process's GPU; --device cuda:0 on a GPU machine once fell silently to CPU/gloo
    assert distributed.rank_device("cuda:0", local=0, n_gpus=2) == "cuda:0"
    assert distributed.rank_device("cuda", local=1, n_gpus=2) == "cuda:1"
    assert distributed.rank_device("auto", local=1, n_gpus=0) == "cpu"
    with pytest.raises(distributed.DistributedError, match="takes the GPU of its local rank"):
        distributed.rank_device("cuda:0", local=1, n_gpus=2)
    with pytest.raises(distributed.DistributedError, match="use --device cuda, cpu or auto"):
        distributed.rank_device("mps", local=0, n_gpus=0)
    # setup on a (pretend) 2-GPU machine: rank 0 of 2 with --device cuda:0 gets NCCL on cuda:0
    import torch.distributed as dist
    opened = []
    monkeypatch.setattr(distributed, "_STATE", dict(distributed._STATE))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: None)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: opened.append(backend))
    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(k, v)
    lines = []
    cfg, _ = distributed.setup(config.resolve({"device": "cuda:0", "batch_size": 64, "lr": 1e-3}), log=lines.append)
    assert cfg.device == "cuda:0" and opened == ["nccl"] and cfg.batch_size == 64
    assert lines[0].startswith("data-parallel: 2 processes (nccl), global batch 64 = 2 processes x 32, lr 0.001")
    assert distributed.local_processes() == 2
