"""--log tensorboard|mlflow: a tiny real run (scikit-learn's digits, 2 folds, 2 epochs) read back through
each tracker's own reader."""
import json

import numpy as np
import pytest

FAST = ["--model", "test_resnet", "--img-size", "32", "--crop-pct", "1.0", "--epochs", "2", "--batch-size", "32",
        "--no-pretrained", "--no-progress", "--workers", "0", "--fold", "all"]


@pytest.fixture(scope="module")
def competition(tmp_path_factory):
    from foldkit import config
    from foldkit.data.demo import digit_images
    from foldkit.folds.file import make_folds
    root = tmp_path_factory.mktemp("trackers")
    x, y = digit_images(32)
    keep = y < 3
    comp = root / "input"
    comp.mkdir()
    np.save(comp / "x_train.npy", x[keep][:60])
    np.save(comp / "y_train.npy", y[keep][:60])
    make_folds(config.resolve(input_dir=str(comp), folds_dir=str(root / "folds"), n_folds=2), log=lambda *a: None)
    return root, ["--input-dir", str(comp), "--folds-dir", str(root / "folds"), "--models-dir", str(root / "models"),
                  "--reports-dir", str(root / "reports")]


def test_tensorboard_holds_every_epoch_of_every_fold_the_settings_and_the_cv(competition):
    pytest.importorskip("tensorboard", reason="optional extra: pip install 'foldkit[trackers]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import train
    root, paths = competition
    train.main([*paths, *FAST, "--experiment", "tb", "--log", "tensorboard"])
    run = root / "runs" / "tensorboard" / "tb"       # beside models/, named after the experiment
    events = EventAccumulator(str(run))
    events.Reload()
    scalars = events.Tags()["scalars"]
    for k in (0, 1):
        assert [e.step for e in events.Scalars(f"fold{k}/valid_loss")] == [1, 2]
        assert f"fold{k}/valid_metric" in scalars and f"fold{k}/train_loss" in scalars
    cv = json.loads((root / "reports" / "tb" / "cv_scores.json").read_text())
    assert events.Scalars("cv/accuracy")[0].value == pytest.approx(cv["cv"])
    assert "settings/text_summary" in events.Tags()["tensors"]
    assert "report/confusion" in events.Tags()["images"]


def test_mlflow_run_named_after_the_experiment_in_a_local_store(competition):
    pytest.importorskip("mlflow", reason="optional extra: pip install 'foldkit[trackers]'")
    pytest.importorskip("sqlalchemy", reason="optional extra: pip install 'foldkit[trackers]'")
    import mlflow

    import train
    root, paths = competition
    train.main([*paths, *FAST, "--experiment", "ml", "--log", "mlflow"])
    store = root / "runs" / "mlflow.db"                 # local, beside models/: nothing to start
    assert store.is_file()
    mlflow.set_tracking_uri(f"sqlite:///{store}")
    runs = mlflow.search_runs(experiment_names=["foldkit"])
    [row] = runs[runs["tags.mlflow.runName"] == "ml"].to_dict("records")
    cv = json.loads((root / "reports" / "ml" / "cv_scores.json").read_text())
    assert row["metrics.cv/accuracy"] == pytest.approx(cv["cv"]) and row["params.model"] == "test_resnet"
    assert row["status"] == "FINISHED"
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    assert [m.step for m in client.get_metric_history(row["run_id"], "fold1/valid_loss")] == [1, 2]
    assert "report/report.html" in [a.path for a in client.list_artifacts(row["run_id"], "report")]


def test_a_missing_tracker_package_is_one_line_before_training(competition, monkeypatch, capsys):
    import sys

    import train
    monkeypatch.setitem(sys.modules, "mlflow", None)     # as if not installed
    root, paths = competition
    with pytest.raises(SystemExit) as e:
        train.main([*paths, *FAST, "--experiment", "none", "--log", "mlflow"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error: --log mlflow needs the mlflow package" in err and "foldkit[trackers]" in err
    assert not (root / "models" / "none" / "fold0.pt").exists()
