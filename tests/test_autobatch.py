"""--batch-size auto: the batch search's arithmetic (the GPU measurement itself needs a GPU) and the
CLI on a CPU, where auto is the default batch, said in one line and recorded as that number."""
import json
import subprocess
import sys

import pytest

from conftest import REPO


def test_the_batch_is_where_the_fitted_memory_line_meets_the_budget():
    from foldkit.train.autobatch import choose_batch
    mib = 2 ** 20
    peaks = {b: 500 * mib + 40 * mib * b for b in (1, 2, 4, 8, 16)}     # 500 MiB fixed + 40 MiB per image
    assert choose_batch(peaks, budget=500 * mib + 40 * mib * 100) == 96          # 100 -> a multiple of 8
    assert choose_batch(peaks, budget=500 * mib + 40 * mib * 100, rows=50) == 48  # never more than the rows
    assert choose_batch(peaks, budget=10 ** 15) == 1024                            # capped
    assert choose_batch(peaks, budget=500 * mib + 40 * mib * 5) == 5               # small batches as they are
    # a probe that ran out of memory caps the answer at the largest batch that ran
    assert choose_batch({1: 1e9, 2: 1.1e9, 4: 1.3e9}, budget=1e12, out_of_memory_at=8) == 4
    from foldkit.train.autobatch import AutoBatchError
    with pytest.raises(AutoBatchError, match="not even a batch of 1"):
        choose_batch({}, budget=1e9)


def test_the_learning_rate_follows_timms_scaling_rule():
    from foldkit.train.autobatch import scaled_lr
    assert scaled_lr(1e-3, 256, "adamw") == pytest.approx((2e-3, "sqrt"))       # adaptive: sqrt of 4
    assert scaled_lr(0.1, 128, "sgd") == pytest.approx((0.2, "linear"))
    assert scaled_lr(1e-3, 64, "lamb")[0] == pytest.approx(1e-3)


def test_batch_size_auto_is_a_word_in_flags_and_files():
    from foldkit.config import ConfigError, convert
    assert convert("batch_size", "auto") == 0 and convert("batch_size", "AUTO ") == 0
    assert convert("batch_size", 32) == 32
    with pytest.raises(ConfigError, match="a whole number or auto"):
        convert("batch_size", "big")
    with pytest.raises(ConfigError, match="at least 1 or auto"):
        convert("batch_size", -4)


def test_train_with_batch_size_auto_on_cpu_records_the_default_batch(digits150, tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "src" / "train.py"), "--input-dir", str(digits150 / "in"),
                        "--folds-dir", str(digits150 / "folds"), "--models-dir", str(tmp_path / "models"),
                        "--model", "test_resnet", "--img-size", "32", "--epochs", "1", "--batch-size", "auto",
                        "--no-pretrained", "--experiment", "ab", "--fold", "0", "--no-progress", "--workers", "0"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "--batch-size auto: 64 (the default on cpu" in r.stdout
    assert json.loads((tmp_path / "models" / "ab" / "config.json").read_text())["batch_size"] == 64
