"""train.py --lr-find: the learning-rate range test on fold 0, through the real CLI on tiny real data."""
import sys

import numpy as np
import pandas as pd
import pytest

import task_data
from conftest import REPO
from foldkit import config
from foldkit.train.lrfind import smooth, suggest

sys.path.insert(0, str(REPO / "src"))
import train as train_cli  # noqa: E402

FAST = ["--model", "test_resnet", "--img-size", "32", "--crop-pct", "1.0", "--no-hflip", "--batch-size", "16",
        "--no-pretrained", "--no-progress", "--workers", "0"]


def make_competition(root, build=None, limit=0):
    """The demo digits (or a tests/task_data competition) in the CSV layout, 3 folds: its path flags."""
    from foldkit.data.demo import build_demo
    from foldkit.folds.file import make_folds
    (build or build_demo)(root / "in")
    dirs = {"input_dir": str(root / "in"), "folds_dir": str(root / "folds"), "models_dir": str(root / "models")}
    make_folds(config.resolve({**dirs, "limit": limit, "n_folds": 3}), log=lambda *_: None)
    return [a for k, v in dirs.items() for a in ("--" + k.replace("_", "-"), v)]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("lrfind")
    return root, make_competition(root, limit=300)


def cli(capsys, *argv):
    """train.py's main: (exit code, stdout lines, stderr lines)."""
    try:
        train_cli.main(list(argv))
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out.strip().splitlines(), out.err.strip().splitlines()


def test_lr_find_prints_the_valley_of_its_csv_and_records_no_experiment(digits, capsys):
    root, dirs = digits
    models = root / "models"
    code, out, err = cli(capsys, "--lr-find", "--lr-find-steps", "40", *FAST, *dirs)
    assert code == 0, err
    line = next(x for x in out if x.startswith("suggested --lr "))
    folders = list((models / "lr_find").iterdir())
    assert len(folders) == 1 and sorted(p.name for p in folders[0].iterdir()) == ["lr_find.csv", "lr_find.png"]
    assert f"plot: {folders[0] / 'lr_find.png'}" in "\n".join(out)
    # nothing an experiment is made of: no config.json, no fold files, nothing the leaderboard would list
    assert [p.name for p in models.iterdir()] == ["lr_find"]
    assert not list(models.rglob("config.json")) and not list(models.rglob("fold*"))
    frame = pd.read_csv(folders[0] / "lr_find.csv")
    assert list(frame.columns) == ["step", "lr", "loss", "smoothed"] and 10 < len(frame) <= 40
    assert frame["lr"].iloc[0] == pytest.approx(1e-7) and (np.diff(frame["lr"]) > 0).all()
    assert np.allclose(frame["smoothed"], smooth(frame["loss"]), equal_nan=True)
    s = suggest(frame["lr"], frame["smoothed"], 40)
    assert line == (f"suggested --lr {s['valley']:.1e} (valley; steepest {s['steepest']:.1e}, "
                    f"min/10 {s['min/10']:.1e})")
    lr = float(line.split()[2])
    assert frame["lr"].min() <= lr <= frame["lr"].max()
    # the folder is named after the experiment these settings get when trained (--lr-find* are run-only)
    same = [*FAST, *dirs, "--epochs", "1", "--batch-size", "64"]
    code, out, err = cli(capsys, *same)
    code2, _, err2 = cli(capsys, "--lr-find", "--lr-find-steps", "20", *same)
    assert code == 0 and code2 == 0, err + err2
    trained = [p.name for p in models.iterdir() if (p / "config.json").is_file()]
    assert len(trained) == 1 and (models / "lr_find" / trained[0] / "lr_find.png").is_file()
    code, _, err = cli(capsys, "--lr-find", "--lr-find-steps", "20", *same)
    assert code == 0, err                                 # a second run replaces the files
    assert len(pd.read_csv(models / "lr_find" / trained[0] / "lr_find.csv")) <= 20


@pytest.mark.parametrize("build", [task_data.digit_pairs, task_data.rotated_digits], ids=["multilabel", "regression"])
def test_lr_find_on_multilabel_and_regression(tmp_path, capsys, build):
    dirs = make_competition(tmp_path, build)
    code, out, err = cli(capsys, "--lr-find", "--lr-find-steps", "20", *FAST, *dirs)
    assert code == 0, err
    assert any(x.startswith("suggested --lr ") for x in out)
    frame = pd.read_csv(next((tmp_path / "models" / "lr_find").glob("*/lr_find.csv")))
    assert np.isfinite(frame["loss"].iloc[:5]).all()


def test_suggestion_rules_on_a_known_curve():
    """A synthetic sweep: flat, a valley falling from lr 1e-4 to its bottom at 1e-2, then divergence."""
    lrs = np.geomspace(1e-7, 10, 100)
    x = np.log10(lrs)
    losses = np.where(x < -4, 2.0, np.where(x < -2, 2.0 - 0.75 * (x + 4), 0.5 + 3 * (x + 2) ** 2))
    s = suggest(lrs, losses, 100)
    falling = lrs[(x >= -4) & (x < -2)]
    assert falling[0] < s["valley"] < falling[-1]          # inside the valley, about halfway down
    assert 1e-4 * 10 ** (2 * 0.3) <= s["valley"] <= 1e-4 * 10 ** (2 * 0.55)
    assert falling[0] <= s["steepest"] < falling[-1]       # every falling step is equally steep: its first
    assert s["min/10"] == pytest.approx(lrs[np.argmin(losses[10:95]) + 10] / 10)
    assert suggest(lrs[:14], losses[:14], 100) is None     # diverged before anything is left to read
    nan_tail = np.concatenate([losses[:60], [np.nan] * 40])
    assert suggest(lrs, nan_tail, 100)["min/10"] <= lrs[59] / 10   # cut at the first non-finite loss
    assert smooth([1.0, 3.0])[1] == pytest.approx((0.98 * 0.02 + 3 * 0.02) / (1 - 0.98 ** 2))


@pytest.mark.parametrize("argv,message", [
    (["--fold", "1"], "error: --lr-find runs on fold 0's training part (its suggestion serves every fold): "
                      "drop --fold 1"),
    (["--devices", "cpu,cpu"], "error: --lr-find runs in one process: drop --devices cpu,cpu"),
    (["--lr-find-start", "1", "--lr-find-end", "0.1"], "error: --lr-find-start 1 and --lr-find-end 0.1: give "
                                                       "0 < start < end"),
    (["--lr-find-steps", "5"], "error: argument --lr-find-steps: '5' is not at least 10"),
    (["--experiment", "lr_find"], "error: --experiment lr_find: that folder holds --lr-find's results")])
def test_lr_find_refusals_are_one_line(digits, tmp_path, capsys, argv, message):
    root, dirs = digits
    code, _, err = cli(capsys, "--lr-find", *FAST, *dirs, "--models-dir", str(tmp_path / "m"), *argv)
    assert code == 2 and len(err) == 1 and err[0].startswith(message), err
    assert not (tmp_path / "m").exists()


def test_lr_find_under_torchrun_is_refused(digits, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    root, dirs = digits
    code, _, err = cli(capsys, "--lr-find", *FAST, *dirs, "--models-dir", str(tmp_path / "m"))
    assert code == 2 and err == ["error: --lr-find runs in one process, not under torchrun with 2 processes: "
                                 "start it with python src/train.py (--batch-size is the global batch, so the "
                                 "suggestion holds for the torchrun run)"]
