"""Which OOF rows predict.py's plan is fitted on: those predicted the way the test images are.

The test predictions average each fold model over the TTA views; training records its OOF rows predicted
with the views it expected predict.py to use (oof_tta_fold{k}.csv, the views in fold{k}.json's `oof_tta`;
foldkit.train.oof_tta). When every finished fold recorded exactly the views predict.py uses now, the blend
and the post-processing are fitted and scored on those rows; otherwise on the one-view OOF, and the log
says why and how to match them. pandas only (no torch): export.py's plan is fitted here too.
"""
from __future__ import annotations

import pandas as pd

from foldkit.experiment import Experiment
from foldkit.oof import load_oof


def oof_for_plan(exp: Experiment, tta: list[str] | None, log=print) -> pd.DataFrame:
    """The experiment's OOF of its finished folds, with the TTA views `tta` ("none" first) when every
    finished fold recorded them, else the one-view OOF (the log says which folds lack them)."""
    folds = exp.finished_folds()
    if not tta or list(tta) == ["none"]:
        return load_oof(exp.dir, folds)[0]
    recorded = {k: exp.summary(k).get("oof_tta") for k in folds}
    lacking = [k for k, v in recorded.items() if v != list(tta) or not exp.oof_tta(k).is_file()]
    if not lacking:
        return load_oof(exp.dir, folds, kind="oof_tta")[0]
    other = sorted({", ".join(v) for k, v in recorded.items() if k in lacking and v})
    log(f"note: {exp.name}: fold(s) {lacking} have no OOF predicted with the TTA views {', '.join(tta)}"
        + (f" (recorded: {'; '.join(other)})" if other else "")
        + ": post-processing is fitted on the one-view OOF, more confident than the test predictions it is "
        f"applied to. Train a new experiment with --tta {','.join(v for v in tta if v != 'none')}, or predict "
        "with the views its folds recorded")
    return load_oof(exp.dir, folds)[0]
