"""Folds across machines: --fold env, the per-fold lock, several processes on one experiment folder."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from foldkit.train.fit import TrainError, parse_folds
from foldkit.train.foldlock import FoldLockError, fold_lock

TINY = ["--model", "test_resnet", "--img-size", "32", "--crop-pct", "1.0", "--no-hflip", "--batch-size", "32",
        "--no-pretrained", "--no-progress", "--workers", "0", "--warmup-epochs", "0"]


@pytest.fixture(scope="module")
def comp(digits150):
    return digits150


def train_cmd(comp, models, *argv):
    return [sys.executable, str(REPO / "src" / "train.py"), "--input-dir", str(comp / "in"), "--folds-dir",
            str(comp / "folds"), "--models-dir", str(models), *TINY, *argv]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_fold_env_reads_slurm_then_kubernetes(monkeypatch):
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    with pytest.raises(TrainError, match="SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX"):
        parse_folds("env", 5)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")
    assert parse_folds("env", 5) == [3]
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert parse_folds("env", 5) == [1]
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    with pytest.raises(TrainError, match=r"SLURM_ARRAY_TASK_ID='7' is not a fold .*0-4"):
        parse_folds("env", 5)


HOLD = ("import sys, time; sys.path.insert(0, {src!r}); from foldkit.train.foldlock import fold_lock\n"
        "with fold_lock({path!r}, 0):\n    print('held', flush=True); time.sleep(120)\n")


def hold_lock(path):
    p = subprocess.Popen([sys.executable, "-c", HOLD.format(src=str(REPO / "src"), path=str(path))],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_fold_lock_names_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    lock = tmp_path / "fold0.lock"
    p = hold_lock(lock)
    try:
        with pytest.raises(FoldLockError, match=f"pid {p.pid} on {socket.gethostname()}"):
            with fold_lock(lock, 0):
                pass
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert json.loads(lock.read_text())["pid"] == p.pid       # a killed holder leaves its lock behind
    with fold_lock(lock, 0) as me:                           # ... and it is taken over
        assert json.loads(lock.read_text()) == me
    assert not lock.exists()
    # a holder on another machine is dead when it has stopped refreshing the file
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": time.time()}))
    with pytest.raises(FoldLockError, match="pid 1 on elsewhere"):
        with fold_lock(lock, 0, stale=60):
            pass
    os.utime(lock, (time.time() - 120, time.time() - 120))
    with fold_lock(lock, 0, stale=60):
        assert json.loads(lock.read_text())["host"] == socket.gethostname()


def test_fold_lock_of_an_earlier_process_with_this_very_pid_is_taken_over(tmp_path):
    """A restarted container's Python gets the pid its previous run had, on the same host: the lock that
    run left names a live pid (this one) but another process (another start time, or another boot)."""
    stat, boot = Path(f"/proc/{os.getpid()}/stat"), Path("/proc/sys/kernel/random/boot_id")
    if not (stat.exists() and boot.exists()):
        pytest.skip("no /proc here: a process's start time and the boot id cannot be read")
    start, boot = int(stat.read_text().rsplit(")", 1)[1].split()[19]), boot.read_text().strip()
    lock = tmp_path / "fold0.lock"
    mine = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time() - 3600}
    for earlier in ({**mine, "boot": boot, "pid_start": start - 1}, {**mine, "boot": "another", "pid_start": start}):
        lock.write_text(json.dumps(earlier))
        with fold_lock(lock, 0) as me:
            assert json.loads(lock.read_text()) == me and me["pid_start"] == start
    for live in ({**mine, "boot": boot, "pid_start": start}, mine):   # mine: a lock file written before them
        lock.write_text(json.dumps(live))
        with pytest.raises(FoldLockError, match=f"pid {os.getpid()} on"):
            with fold_lock(lock, 0):
                pass


def test_train_refuses_a_fold_another_process_trains(comp, tmp_path):
    models = tmp_path / "m"
    (models / "x").mkdir(parents=True)
    p = hold_lock(models / "x" / "fold0.lock")
    try:
        r = subprocess.run(train_cmd(comp, models, "--experiment", "x", "--fold", "0", "--epochs", "1"),
                           capture_output=True, text=True, env=ENV, timeout=300)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]         # one line, no traceback
    assert r.stderr.startswith(f"error: fold 0 is being trained by pid {p.pid} on {socket.gethostname()}")
    assert not (models / "x" / "fold0.json").exists()


def test_three_processes_on_one_experiment_folder_train_each_fold_once(comp, tmp_path):
    """Two processes start fold 0 and a third fold 1 of one experiment at the same moment (as array tasks
    on several machines would): config.json is written once, fold 0 is trained by one of them only."""
    models = tmp_path / "m"
    env = {**ENV, "SLURM_ARRAY_TASK_ID": "1"}
    procs = [subprocess.Popen(train_cmd(comp, models, "--experiment", "x", "--epochs", "2", "--fold", fold),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for fold in ("0", "0", "env")]
    outs = [(p.wait(timeout=400), *p.communicate()) for p in procs]
    exp = models / "x"
    assert (exp / "fold0.json").is_file() and (exp / "fold1.json").is_file()
    assert not list(exp.glob("*.lock"))
    assert outs[2][0] == 0 and "fold 1 epoch   2/2" in outs[2][1]
    trained = [o for o in outs[:2] if "fold 0 epoch   1/2" in o[1]]
    assert len(trained) == 1, outs                         # fold 0 trained by exactly one process
    other = next(o for o in outs[:2] if o is not trained[0])
    assert (other[0] == 2 and "fold 0 is being trained by pid" in other[2]) or \
        (other[0] == 0 and ("already finished" in other[1] or "finished by another process" in other[1])), other
    assert json.loads((exp / "config.json").read_text())["experiment"] == "x"
    assert len(open(exp / "log_fold0.csv").read().splitlines()) == 3   # header + 2 epochs, once
