"""After the first submission: soft labels, pseudo-labels and distillation, fold-safe (foldkit.train.teacher).

One teacher experiment is trained once on the shared 150-digit competition (3 folds, test_resnet at 16 px,
no augmentation, no label smoothing: it memorises its training rows); every student here learns from it."""
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO
from foldkit import config
from foldkit.train import teacher
from foldkit.train.fit import train

FAST = dict(model="test_resnet", img_size=16, crop_pct=1.0, hflip=False, aug="none", lr=1e-2, batch_size=16,
            pretrained=False, progress=False, workers=0, label_smoothing=0.0, warmup_epochs=0.0, min_lr=1e-3)


def quiet(*_):
    pass


def cfg_for(root, models, **kw):
    return config.resolve({"input_dir": str(root / "in"), "folds_dir": str(root / "folds"),
                           "models_dir": str(models), **FAST, **kw})


@pytest.fixture(scope="module")
def taught(digits150, tmp_path_factory):
    """(competition root, models dir holding the finished teacher experiment `memo`, a folder of copies of
    every training image: the unlabelled pool where a leak would show)."""
    work = tmp_path_factory.mktemp("teacher")
    train(cfg_for(digits150, work / "models", epochs=15, fold="all", experiment="memo"), log=quiet)
    copies = work / "copies"
    copies.mkdir()
    folds = pd.read_csv(digits150 / "folds" / "train_folds.csv", dtype={"id": str})
    for i, p in zip(folds["id"], folds["path"]):
        shutil.copy(digits150 / "in" / p, copies / f"copy_{i}.png")
    return digits150, work / "models", copies


def student(taught, tmp_path, name, **kw):
    root, models, _ = taught
    dst = tmp_path / "models"
    if not dst.exists():
        shutil.copytree(models, dst)
    return train(cfg_for(root, dst, experiment=name, **kw), log=quiet), dst / name


def copies_of_fold(taught, exp_dir, fold):
    """pseudo_fold{k}.csv rows of the copies of fold k's validation images, with their true class index
    and the teacher's OOF probabilities of the originals."""
    root, models, _ = taught
    folds = pd.read_csv(root / "folds" / "train_folds.csv", dtype={"id": str})
    val = folds[folds["fold"] == fold]
    pseudo = pd.read_csv(exp_dir / f"pseudo_fold{fold}.csv", dtype={"id": str})
    pseudo = pseudo[pseudo["id"].isin([f"copy_{i}.png" for i in val["id"]])].copy()
    pseudo["orig"] = pseudo["id"].str[5:-4]
    oof = pd.read_csv(models / "memo" / f"oof_fold{fold}.csv", dtype={"id": str}).set_index("id").loc[pseudo["orig"]]
    cols = [f"prob_{c}" for c in range(10)]
    y = val.set_index("id").loc[pseudo["orig"], "label"].to_numpy()
    return pseudo[cols].to_numpy(), oof[cols].to_numpy(), y


def test_fold_safe_pseudo_labels_are_honest_and_the_naive_ensemble_leaks(taught, tmp_path, monkeypatch):
    """The memorising-teacher test. The pool holds a copy of every training image. Fold-safe, a copy of a
    fold-0 validation image is labelled by the teacher's fold-0 model, which never saw it: exactly its OOF
    prediction. The naive construction (the teacher's whole fold ensemble, as predict.py uses it) labels it
    with models that memorised it, and the student's fold-0 score rises with that leak."""
    _, _, copies = taught
    kw = dict(epochs=3, fold="0", pseudo="memo", unlabelled=str(copies), pseudo_min_confidence=0.0)
    [safe], safe_dir = student(taught, tmp_path, "safe", **kw)
    got, oof, y = copies_of_fold(taught, safe_dir, 0)
    assert len(y) == 50
    np.testing.assert_allclose(got, oof, atol=2e-4)         # the OOF of a model that never saw these rows
    monkeypatch.setattr(teacher, "safe_teacher_folds", lambda fold: [0, 1, 2])    # the naive construction
    [naive], naive_dir = student(taught, tmp_path, "naive", **kw)
    leaked, _, _ = copies_of_fold(taught, naive_dir, 0)
    true_prob = lambda p: p[np.arange(len(y)), y].mean()   # noqa: E731
    print(f"\nfold 0, copies of its validation images: probability of the true class {true_prob(oof):.3f} "
          f"fold-safe vs {true_prob(leaked):.3f} naive; student fold-0 accuracy {safe['value']:.3f} fold-safe vs "
          f"{naive['value']:.3f} naive")
    assert true_prob(leaked) > true_prob(oof) + 0.05         # two of the three models memorised these images
    assert naive["value"] >= safe["value"]


def test_soft_labels_mix_the_oof_into_the_training_targets_and_are_recorded(taught, tmp_path):
    root, models, _ = taught
    cfg = cfg_for(root, models, soft_labels="memo", soft_alpha=0.4, experiment="soft")
    from foldkit.train.builder import build_run
    cfg, run = build_run(cfg, log=quiet)
    t = teacher.for_fold(cfg, run, 1, log=quiet)
    folds = run.table["fold"].to_numpy()
    oof = pd.concat([pd.read_csv(models / "memo" / f"oof_fold{k}.csv", dtype={"id": str}) for k in (0, 2)])
    oof = oof.set_index("id").loc[run.table["id"][folds != 1].astype(str)]
    want = 0.6 * np.eye(10)[run.y[folds != 1]] + 0.4 * oof[[f"prob_{c}" for c in range(10)]].to_numpy()
    np.testing.assert_allclose(t.targets[folds != 1], want, atol=1e-5)
    np.testing.assert_array_equal(t.targets[folds == 1], np.eye(10)[run.y[folds == 1]])   # validated, untouched
    shutil.rmtree(models / "soft")
    [s], exp = student(taught, tmp_path, "soft", epochs=1, fold="1", soft_labels="memo", soft_alpha=0.4)
    ckpt = torch.load(exp / "fold1.pt", map_location="cpu", weights_only=True)
    assert ckpt["config"]["soft_labels"] == "memo" and ckpt["config"]["soft_alpha"] == 0.4
    assert ckpt["teaching"]["soft_labels"]["experiment"] == "memo"
    assert set(ckpt["teaching"]["soft_labels"]["oof_sha256"]) == {"0", "2"}


def test_distillation_trains_a_different_student_and_resumes_exactly(taught, tmp_path):
    """A student of another size learns from the teacher's fold-k model on every batch; stopped after an
    epoch (as a kill would) and started again, it ends exactly like the run never stopped."""
    kw = dict(epochs=3, fold="2", teacher="memo", kd_alpha=0.7, pseudo="memo", img_size=24)
    [a], exp_a = student(taught, tmp_path / "a", "kd", **kw)

    def stop(fold, row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt
    root, _, _ = taught
    shutil.copytree(taught[1], tmp_path / "b" / "models")
    with pytest.raises(KeyboardInterrupt):
        from foldkit.train.builder import build_run
        from foldkit.train.fit import fit_fold
        cfg, run = build_run(cfg_for(root, tmp_path / "b" / "models", experiment="kd", **kw), log=quiet)
        fit_fold(cfg, run, 2, log=quiet, on_epoch=[stop])
    assert (tmp_path / "b" / "models" / "kd" / "fold2_last.pt").is_file()
    [b], exp_b = student(taught, tmp_path / "b", "kd", **kw)
    cols = ["epoch", "train_loss", "valid_loss", "valid_metric"]
    pd.testing.assert_frame_equal(pd.read_csv(exp_a / "log_fold2.csv")[cols], pd.read_csv(exp_b / "log_fold2.csv")[cols])
    pd.testing.assert_frame_equal(pd.read_csv(exp_a / "oof_fold2.csv"), pd.read_csv(exp_b / "oof_fold2.csv"))
    summary = pd.read_json(exp_a / "fold2.json", typ="series")
    assert summary["teaching"]["teacher"]["models"][0]["file"] == "fold2.pt"      # fold k learns from fold k
    assert summary["teaching"]["pseudo"]["models"] == ["fold2.pt"]
    from foldkit.search.leaderboard import leaderboard
    board = leaderboard(tmp_path / "a" / "models", tmp_path / "subs").set_index("experiment")
    assert board.loc["kd", "teachers"].startswith("pseudo memo (conf>=0.9, hard, w 1); distilled from memo "
                                                  "(alpha 0.7, T 2)")
    assert board.loc["memo", "teachers"] == "" and "kd_alpha" not in board.loc["kd", "settings"]
    # predict.py treats the student like any other experiment: its finished fold, its plan, a submission
    from foldkit.predict.predicting import run_predict
    res = run_predict(cfg_for(root, tmp_path / "a" / "models", experiments="kd", reports_dir=str(tmp_path / "r"),
                              submissions_dir=str(tmp_path / "s"), **kw), log=quiet)
    assert res["experiments"] == ["kd"] and res["members"] == 1 and Path(res["submission"]).is_file()
    # the student's bundle measures the teacher ensemble beside it: what the distillation bought
    from foldkit.export.build import export_bundle
    lines = []
    out = export_bundle(cfg_for(root, tmp_path / "a" / "models", experiments="kd", out=str(tmp_path / "bundle"),
                                **kw), log=lines.append)
    teachers = out["manifest"]["estimate"]["teachers"]
    assert teachers["experiments"] == ["memo"] and teachers["members"] == 3 and teachers["img_per_s"] > 0
    assert any(ln.startswith("teacher ensemble memo (3 models") for ln in lines)
    assert "teacher ensemble memo" in (tmp_path / "bundle" / "README.md").read_text()


def run_cli(capsys, taught, tmp_path, *argv):
    root, models, _ = taught
    sys.path.insert(0, str(REPO / "src"))
    import train as train_cli
    base = ["--input-dir", str(root / "in"), "--folds-dir", str(root / "folds"), "--models-dir", str(models),
            "--model", "test_resnet", "--img-size", "16", "--epochs", "1", "--no-progress", "--workers", "0",
            "--no-pretrained", "--experiment", "refused"]
    try:
        train_cli.main(base + list(argv))
        code = 0
    except SystemExit as e:
        code = e.code
    assert not (models / "refused").exists()             # nothing recorded
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture
def other_teachers(taught):
    """Copies of the teacher's config claiming other folds / other classes."""
    import json
    models = taught[1]
    for name, change in (("otherfolds", {"folds_sha256": "0" * 64}), ("otherclasses", {"classes": list(range(9))})):
        (models / name).mkdir(exist_ok=True)
        cfg = json.loads((models / "memo" / "config.json").read_text())
        (models / name / "config.json").write_text(json.dumps({**cfg, **change, "experiment": name}))
    yield
    for name in ("otherfolds", "otherclasses"):
        shutil.rmtree(models / name)


@pytest.mark.parametrize("argv,message", [
    (["--pseudo", "otherfolds"], "error: --pseudo otherfolds was trained on other folds (folds hash 000000000000"),
    (["--teacher", "memo,otherclasses"], "error: --teacher otherclasses predicts classes [0, 1, 2, 3, 4, 5, 6, 7, 8]"),
    (["--soft-labels", "nosuch"], "error: no experiment 'nosuch' in"),
    (["--soft-alpha", "0.5"], "error: --soft-alpha is a setting of --soft-labels EXP, which was not given"),
    (["--pseudo-soft"], "error: --pseudo-soft is a setting of --pseudo EXP, which was not given"),
    (["--soft-labels", "memo", "--soft-alpha", "1.5"], "error: --soft-alpha 1.5: give a value from 0 to 1"),
    (["--teacher", "memo", "--experiment", "memo"], "error: --teacher memo: an experiment cannot teach itself"),
    (["--pseudo", "memo", "--unlabelled", "/nonexistent"], "error: --unlabelled /nonexistent: not a folder")])
def test_teacher_mistakes_are_one_line_before_anything_is_recorded(taught, tmp_path, capsys, other_teachers, argv,
                                                                   message):
    code, err = run_cli(capsys, taught, tmp_path, *argv)
    assert code == 2 and len(err) == 1 and err[0].startswith(message), err


def test_other_task_kinds_are_refused_in_one_line(tmp_path):
    from foldkit.errors import FoldkitError
    cfg = config.resolve({"pseudo": "memo"})
    with pytest.raises(FoldkitError, match="^--pseudo: single-label competitions only in this version; this one "
                                           "is regression$"):
        teacher.check_teaching(cfg, "regression")
