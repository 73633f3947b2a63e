"""Fold-parallel workers deliver every message before they exit: the parent waits for each worker's
last word, so a lost message is a run that never ends."""
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import SRC

WORK = textwrap.dedent('''
    BIG = "x" * 4_000_000          # a fold summary larger than a pipe's buffer

    def prepare_run(cfg, log=print):
        return None

    def fit_fold(cfg, run, fold, log=print):
        return {"fold": fold, "blob": BIG}
''')

RUN = textwrap.dedent('''
    import work
    from foldkit import config
    from foldkit.train import foldpool
    cfg = config.resolve({}, devices="cpu,cpu")
    out = foldpool.run_fold_parallel(cfg, [0, 1, 2], prepare=work.prepare_run, fit_one=work.fit_fold,
                                     log=lambda m: None)
    print(sorted(out), {len(s["blob"]) for s in out.values()})
''')


def test_fold_parallel_run_with_large_fold_results_ends_with_every_result(tmp_path):
    (tmp_path / "work.py").write_text(WORK)
    res = subprocess.run([sys.executable, "-c", RUN], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": f"{SRC}:{tmp_path}", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[0, 1, 2] {4000000}"


def _workers(parent: int) -> list[int]:
    """The fold-parallel worker processes of `parent` (spawned children; not its resource tracker)."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == parent and b"spawn_main" in (d / "cmdline").read_bytes():
                out.append(int(d.name))
        except (OSError, ValueError, IndexError):
            continue
    return sorted(out)


def test_a_worker_stopped_by_sigterm_says_one_line_and_no_traceback(digits150, tmp_path):
    """train.py --devices cpu,cpu, one worker sent SIGTERM after its first epoch: the whole output (stdout and
    stderr, the workers' included) holds the error line and no traceback, no "Exception ignored"."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("finding the worker processes reads /proc")
    cmd = [sys.executable, str(SRC / "train.py"), "--input-dir", str(digits150 / "in"), "--folds-dir",
           str(digits150 / "folds"), "--models-dir", str(tmp_path), "--model", "test_resnet", "--img-size", "32",
           "--crop-pct", "1.0", "--batch-size", "32", "--no-progress", "--workers", "0", "--warmup-epochs", "0",
           "--no-pretrained", "--epochs", "2", "--fold", "all", "--devices", "cpu,cpu"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = []
    for line in p.stdout:
        lines.append(line)
        m = re.search(r"\[cpu #(\d)\] fold \d epoch +1/", line)
        if m:
            os.kill(_workers(p.pid)[int(m[1])], signal.SIGTERM)    # started in order: worker #i is the i-th
            break
    out = "".join(lines) + p.stdout.read()
    assert p.wait(timeout=120) == 2, out[-3000:]
    assert re.search(r"^error: fold \d on cpu: its worker process was stopped \(SIGTERM", out, re.M), out[-3000:]
    assert "Traceback" not in out and "Exception ignored" not in out, out[-3000:]
