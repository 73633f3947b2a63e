"""Fold-parallel workers deliver every message before they exit: the parent waits for each worker's
last word, so a lost message is a run that never ends."""
import subprocess
import sys
import textwrap

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
