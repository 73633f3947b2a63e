"""tune.py: an Optuna study whose trials are foldkit experiments (real digits, tiny model, CPU)."""
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

optuna = pytest.importorskip("optuna")

from conftest import REPO  # noqa: E402
from foldkit import config  # noqa: E402
from foldkit.search.tune import SPACES, TuneError, check_space, load_space, run_study, summary  # noqa: E402

TINY = dict(model="test_resnet", img_size=32, crop_pct=1.0, hflip=False, batch_size=32, progress=False,
            pretrained=False, workers=0, warmup_epochs=0.0, aug="none")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def comp(digits150):
    return digits150


def cfg_for(comp, tmp_path, **kw):
    return config.resolve({"input_dir": str(comp / "in"), "folds_dir": str(comp / "folds"),
                           "models_dir": str(tmp_path / "m"), **TINY, **kw})


def tune_cmd(comp, models, *argv):
    flags = []
    for k, v in TINY.items():
        flags += [f"--{k.replace('_', '-')}" if v is not False else f"--no-{k.replace('_', '-')}"] + \
            ([] if isinstance(v, bool) else [str(v)])
    return [sys.executable, str(REPO / "src" / "tune.py"), "--input-dir", str(comp / "in"), "--folds-dir",
            str(comp / "folds"), "--models-dir", str(models), *flags, *argv]


def test_presets_are_valid_and_a_table_replaces_or_extends_them():
    for name, space in SPACES.items():
        assert check_space(space, name) == space
    table = {"drop_path": {"low": 0.0, "high": 0.2}}
    assert load_space(config.resolve({}), table) == table
    assert load_space(config.resolve({"space": "quick"}), table) == {**SPACES["quick"], **table}
    assert load_space(config.resolve({"space": "backbones"}))["model"][0] == "resnet50"


def test_space_mistakes_are_one_line(comp, tmp_path):
    with pytest.raises(TuneError, match="'learning_rat' is not a learning setting"):
        check_space({"learning_rat": [0.1]}, "here")
    with pytest.raises(TuneError, match="aug value 'strong' is not one of"):
        check_space({"aug": ["light", "strong"]}, "here")
    with pytest.raises(TuneError, match="needs low <= high"):
        check_space({"lr": {"low": 0.1, "high": 0.01}}, "here")
    toml = tmp_path / "s.toml"
    toml.write_text("[search_space]\nlr = {low = 1e-4, hi = 1e-2}\n")
    r = subprocess.run(tune_cmd(comp, tmp_path / "m", "--config", str(toml)), capture_output=True, text=True,
                       env=ENV, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: [search_space]: lr = "), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run(tune_cmd(comp, tmp_path / "m", "--fold", "1"), capture_output=True, text=True, env=ENV,
                       timeout=120)
    assert r.returncode == 2 and "use --tune-folds" in r.stderr, r.stderr


def past_trials(study, value, n=3):
    """n finished trials with this metric at every epoch (earlier trials the pruner compares with)."""
    from optuna.distributions import FloatDistribution
    for i in range(n):
        study.add_trial(optuna.trial.create_trial(
            params={"lr": 1e-3 + i * 1e-4}, distributions={"lr": FloatDistribution(1e-9, 1e-2, log=True)},
            value=value, intermediate_values={1: value, 2: value}))


def test_a_trial_worse_than_the_median_is_pruned_on_its_first_fold_and_a_better_one_goes_on(comp, tmp_path):
    """Against three earlier trials at accuracy 1.0 every epoch, the trial is stopped after epoch 1 of 2 of
    fold 0 and never trains fold 1; against three at 0.0 it trains folds 0 and 1 and its value is their CV."""
    space = {"lr": {"low": 1e-9, "high": 1e-2, "log": True}}
    lines = []
    (tmp_path / "m").mkdir()
    cfg = cfg_for(comp, tmp_path, epochs=2, n_trials=4, tune_folds="0,1", study="bad")
    study = optuna.create_study(study_name="bad", storage=f"sqlite:///{tmp_path / 'm' / 'tune.db'}",
                                direction="maximize")
    past_trials(study, 1.0)
    study = run_study(cfg, log=lines.append, space_table=space, enqueue=[{"lr": 1e-9}])
    t = study.get_trials()[-1]
    assert t.state.name == "PRUNED" and "trial 3: pruned after epoch 1 of its first fold" in lines, lines
    bad = tmp_path / "m" / t.user_attrs["experiment"]
    assert len(pd.read_csv(bad / "log_fold0.csv")) == 1 and not (bad / "fold0.json").exists()
    assert not (bad / "log_fold1.csv").exists() and not list(bad.glob("*.lock"))

    cfg = cfg_for(comp, tmp_path, epochs=1, n_trials=4, tune_folds="0,1", study="good")
    study = optuna.create_study(study_name="good", storage=f"sqlite:///{tmp_path / 'm' / 'tune.db'}",
                                direction="maximize")
    past_trials(study, 0.0)
    study = run_study(cfg, log=lines.append, space_table=space, enqueue=[{"lr": 3e-3}])
    t = study.get_trials()[-1]
    assert t.state.name == "COMPLETE"
    exp = tmp_path / "m" / t.user_attrs["experiment"]
    assert (exp / "fold0.json").is_file() and (exp / "fold1.json").is_file()
    oof = pd.concat([pd.read_csv(exp / f"oof_fold{k}.csv") for k in (0, 1)])
    assert t.value == pytest.approx((oof["pred"] == oof["label"]).mean())
    text = "\n".join(summary(study, cfg))
    assert "4 complete" in text and "warning: the best CV of 4 trials is optimistic" in text


def test_killed_study_requeues_the_trial_and_resumes_its_fold(comp, tmp_path):
    """SIGKILL during a trial's second epoch; started again, the trial (heartbeat gone stale) is failed and
    queued with the same settings, its fold resumes from epoch 1 (the row logged before the kill is kept)."""
    models = tmp_path / "m"
    cmd = tune_cmd(comp, models, "--epochs", "3", "--n-trials", "1", "--tune-folds", "0", "--heartbeat", "1",
                   "--study", "k")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    t0 = time.time()
    while time.time() - t0 < 300 and not list(models.glob("*/fold0_last.pt")):
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    [exp] = [d for d in models.iterdir() if d.is_dir()]
    before = pd.read_csv(exp / "log_fold0.csv")
    time.sleep(2.5)                                          # two heartbeats missed
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "trial 0 was interrupted: queued again with the same settings" in r.stdout, r.stdout
    after = pd.read_csv(exp / "log_fold0.csv")
    assert list(after["epoch"]) == [1, 2, 3]
    # resumed exactly: the rows logged before the kill come back with the same figures (an epoch whose row
    # was written just before the kill, but not its resume file, is trained again: only its timing differs)
    timing = ["seconds", "img_per_s"]
    pd.testing.assert_frame_equal(after.iloc[:len(before)].drop(columns=timing), before.drop(columns=timing))
    assert "1 complete, 1 fail" in r.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert "trial 2" not in again.stdout and "1 complete, 1 fail" in again.stdout   # finished: nothing redone


def test_two_workers_share_one_sqlite_study(comp, tmp_path):
    """Two tune.py processes on one SQLite study: 4 trials in all, none trained twice; the held-out fold
    is trained once, for the study's final best (a worker that stops first does not score its best-so-far)."""
    models = tmp_path / "m"
    cmd = tune_cmd(comp, models, "--epochs", "1", "--n-trials", "4", "--tune-folds", "0", "--pruner", "none",
                   "--study", "w", "--holdout-fold", "2")
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
             for _ in range(2)]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    study = optuna.load_study(study_name="w", storage=f"sqlite:///{models / 'tune.db'}")
    trials = study.get_trials()
    assert 4 <= len(trials) <= 5 and all(t.state.name == "COMPLETE" for t in trials)
    assert all(any(f"trial {t.number}: CV" in o for o in outs) for t in trials)      # both ran some
    assert all(sum(f"trial {t.number}: CV" in o for o in outs) == 1 for t in trials)  # each once
    assert sum(any("CV" in line for line in o.splitlines()) for o in outs) == 2
    workers = {t.user_attrs["worker"] for t in trials}                                # host:pid, one per process
    assert len(workers) == 2 and {w.split(":")[1] for w in workers} == {str(p.pid) for p in procs}
    for t in trials:
        assert len(pd.read_csv(models / t.user_attrs["experiment"] / "log_fold0.csv")) == 1
    held = [t.user_attrs["experiment"] for t in trials if (models / t.user_attrs["experiment"] / "fold2.json").exists()]
    assert held == [study.best_trial.user_attrs["experiment"]]
    assert any(f"for trial #{study.best_trial.number}" in o for o in outs)


def test_storage_mistakes_are_one_line_naming_the_url_without_its_password(monkeypatch):
    """A missing database driver and a URL SQLAlchemy does not know are refused at once, by name."""
    from foldkit.search.tune import open_storage
    monkeypatch.setitem(sys.modules, "psycopg2", None)             # as on a machine without psycopg2
    with pytest.raises(TuneError) as e:
        open_storage("postgresql+psycopg2://me:s3cret@127.0.0.1:1/optuna", 60)
    assert str(e.value) == ("--storage postgresql+psycopg2://me:***@127.0.0.1:1/optuna: its database driver "
                            "psycopg2 is not installed; for PostgreSQL pip install -e '.[postgres]' (psycopg 3) "
                            "and write postgresql+psycopg://...")
    with pytest.raises(TuneError, match=r"^--storage postgres://me:\*\*\*@db/optuna: not a database URL "
                                        r"SQLAlchemy knows .*; write sqlite:///path/tune.db or postgresql"):
        open_storage("postgres://me:s3cret@db/optuna", 60)


def test_an_unreachable_postgresql_server_is_one_line_without_the_password(comp, tmp_path):
    pytest.importorskip("psycopg", reason="the PostgreSQL driver (pip install -e '.[postgres]')")
    url = "postgresql+psycopg://me:s3cret@127.0.0.1:1/optuna"              # nothing listens on port 1
    r = subprocess.run(tune_cmd(comp, tmp_path / "m", "--storage", url), capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("error: --storage postgresql+psycopg://me:***@127.0.0.1:1/optuna: cannot open it "
                               "(OperationalError: "), r.stderr
    assert "check that the server is running" in r.stderr and "s3cret" not in r.stdout + r.stderr


def test_a_study_is_identified_by_its_settings_and_space(comp, tmp_path):
    """Run again with a [search_space] table and the old study is not joined (it held --n-trials already):
    a new study runs the table's values; --study naming a study made with other settings is one line."""
    lines = []
    cfg = cfg_for(comp, tmp_path, epochs=1, n_trials=1, tune_folds="0", pruner="none")
    first = run_study(cfg, log=lines.append)
    assert first.study_name.startswith("quick-accuracy-") and len(first.get_trials()) == 1
    custom = run_study(cfg, log=lines.append, space_table={"lr": [2e-3]})
    assert custom.study_name.startswith("custom-accuracy-") and custom.study_name != first.study_name
    [t] = custom.get_trials()
    assert t.state.name == "COMPLETE" and t.params == {"lr": 2e-3}
    again = cfg_for(comp, tmp_path, epochs=2, n_trials=1, tune_folds="0", pruner="none", study=first.study_name)
    with pytest.raises(TuneError) as e:
        run_study(again, log=lines.append)
    assert str(e.value).startswith(f"study '{first.study_name}' in sqlite:///") and "epochs 1 -> 2" in str(e.value)
    assert "use another --study" in str(e.value) and "\n" not in str(e.value)
    assert len(first.get_trials()) == 1                                    # nothing ran in the refused study


def test_a_failing_trial_is_recorded_and_the_worker_goes_on_with_its_tracker(comp, tmp_path):
    """A model timm does not know fails its trial (FAIL, the reason kept); the next trial trains and, with
    --log tensorboard, writes its own tracker run. The same failure 3 times in a row stops the worker in
    one line (a setting every trial shares is wrong)."""
    lines = []
    space = {"model": ["test_resnet", "no_such_model_xyz"]}
    cfg = cfg_for(comp, tmp_path, epochs=1, n_trials=1, tune_folds="0", pruner="none", log="tensorboard",
                  tracking_uri=str(tmp_path / "tb"))
    study = run_study(cfg, log=lines.append, space_table=space,
                      enqueue=[{"model": "no_such_model_xyz"}, {"model": "test_resnet"}])
    bad, good = study.get_trials()
    assert bad.state.name == "FAIL" and "no_such_model_xyz" in bad.user_attrs["error"]
    assert any(line.startswith("trial 0 failed: ") for line in lines), lines
    assert good.state.name == "COMPLETE"
    assert list((tmp_path / "tb" / good.user_attrs["experiment"]).glob("events.out.tfevents.*"))
    assert "failed: " in "\n".join(summary(study, cfg))
    with pytest.raises(TuneError, match=r"^3 trials in a row failed with: .*no_such_model_xyz"):
        run_study(cfg_for(comp, tmp_path, n_trials=1, tune_folds="0", study="all-bad"), log=lines.append,
                  space_table={"model": ["no_such_model_xyz"]})


@pytest.mark.parametrize("flags, says", [
    ({"devices": "cpu,cpu"}, "--devices is not used by tune.py: tune.py trains a trial's folds one after another"),
    ({"lr_find": True}, "--lr-find is not used by tune.py: --lr-find tests one set of settings"),
    ({"tracking_uri": "runs"}, "--tracking-uri says where --log writes: give --log tensorboard"),
])
def test_run_flags_tune_cannot_honour_are_one_line(comp, tmp_path, flags, says):
    with pytest.raises(TuneError) as e:
        run_study(cfg_for(comp, tmp_path, epochs=1, n_trials=1, tune_folds="0", **flags), log=lambda *_: None)
    assert str(e.value).startswith(says) and "\n" not in str(e.value)
    assert not (tmp_path / "m").exists()
