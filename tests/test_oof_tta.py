"""Post-processing fitted on the kind of prediction it is applied to: OOF rows predicted with predict.py's
TTA views (foldkit.train.oof_tta, foldkit.oof.oof_for_plan)."""
import json

import numpy as np
import pandas as pd

from foldkit import config
from foldkit.experiment import Experiment
from foldkit.predict.calibrate import fit_temperature
from foldkit.predict.predicting import make_plan, members_for
from foldkit.train.fit import train

FAST = dict(model="test_resnet", img_size=16, crop_pct=1.0, aug="light", pretrained=False, lr=1e-2, batch_size=32,
            progress=False, workers=0, warmup_epochs=0.0, epochs=1, metric="logloss")


def cfg_for(root, models, **kw):
    return config.resolve({"input_dir": str(root / "in"), "folds_dir": str(root / "folds"),
                           "models_dir": str(models), **FAST, **kw})


def test_a_run_with_tta_fits_predicts_temperature_on_oof_with_those_views(digits150, tmp_path):
    models = tmp_path / "models"
    train(cfg_for(digits150, models, fold="0", experiment="flip", tta="hflip,vflip"), log=lambda *_: None)
    exp = Experiment(models / "flip")
    views = ["none", "hflip", "vflip"]
    assert json.loads(exp.summary_path(0).read_text())["oof_tta"] == views
    one, tta = pd.read_csv(exp.oof(0)), pd.read_csv(exp.oof_tta(0))
    assert list(tta.columns) == list(one.columns) and (tta["id"] == one["id"]).all()
    cols = [c for c in one.columns if c.startswith("prob_")]
    assert np.abs(tta[cols].to_numpy() - one[cols].to_numpy()).max() > 1e-3     # other views, other numbers
    cfg = cfg_for(digits150, models, experiments="flip", tta="hflip,vflip", calibrate="on")
    exps, members = members_for(cfg)
    lines = []
    plan, fitted = make_plan(cfg, exps, members, None, log=lines.append)
    oof = pd.read_csv(exp.oof_tta(0))
    classes = members[0].classes
    probs, y = oof[[f"prob_{c}" for c in classes]].to_numpy(), oof["label"].map(classes.index).to_numpy()
    [(name, t)] = plan.steps
    assert name == "temperature" and plan.tta == views
    assert abs(t - fit_temperature(probs, y)) < 1e-6, "the temperature is fitted on the OOF with the TTA views"
    assert not any("no OOF predicted with the TTA views" in ln for ln in lines)

    # predicted with other views than the folds recorded: fitted on the one-view OOF, and the log says so
    lines.clear()
    plan, _ = make_plan(config.resolve({**cfg.to_dict(), "tta": "hflip"}), exps, members, None, log=lines.append)
    one = pd.read_csv(exp.oof(0))
    assert abs(plan.steps[0][1] - fit_temperature(one[[f"prob_{c}" for c in classes]].to_numpy(), y)) < 1e-6
    assert any("fold(s) [0] have no OOF predicted with the TTA views none, hflip (recorded: none, hflip, vflip)"
               in ln for ln in lines), lines


def test_no_tta_writes_no_second_oof_and_removes_a_stale_one(digits150, tmp_path):
    exp = Experiment(tmp_path / "models" / "plain")
    exp.dir.mkdir(parents=True)
    exp.oof_tta(2).write_text("id,fold,label,pred\n")             # left by an earlier run of the fold with TTA
    train(cfg_for(digits150, exp.dir.parent, fold="2", experiment="plain", aug="none"), log=lambda *_: None)
    assert "oof_tta" not in json.loads(exp.summary_path(2).read_text()) and not exp.oof_tta(2).exists()
