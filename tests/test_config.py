"""Defaults < config file < command line, in one place."""
import subprocess
import sys

import pytest

from conftest import REPO
from foldkit import config
from foldkit.errors import ConfigError


def test_precedence_file_then_cli(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('n_folds = 3\n[folds]\nseed = 9\n')
    p = config.build_parser(["paths", "data", "folds"], "x")
    cfg = config.resolve(p.parse_args(["--config", str(f), "--seed", "11"]))
    assert cfg.n_folds == 3 and cfg.seed == 11 and cfg.limit == 0


def test_unknown_key_in_file_is_named(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('n_fold = 3\n')
    with pytest.raises(ConfigError, match="unknown setting.*n_fold"):
        config.resolve({"config": str(f)})


@pytest.mark.parametrize("script", ["make_folds.py", "train.py", "predict.py"])
def test_user_errors_are_one_line_and_exit_2(tmp_path, script):
    """Every CLI turns an error the user can fix into one line on stderr and exit code 2."""
    f = tmp_path / "c.toml"
    f.write_text('n_fold = 3\n')
    r = subprocess.run([sys.executable, str(REPO / "src" / script), "--config", str(f)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: unknown setting(s) n_fold in {f}; see --help for the valid names"]


def test_help_is_fast_and_documents_options():
    r = subprocess.run([sys.executable, "-X", "importtime", str(REPO / "src" / "make_folds.py"), "--help"],
                       capture_output=True, text=True)
    assert r.returncode == 0
    for opt in ("--n-folds", "--group-col", "--limit", "--skip-bad-images", "--force", "--config"):
        assert opt in r.stdout
    assert "torch" not in r.stderr.split()   # --help does not import torch
