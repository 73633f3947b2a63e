"""The out-of-fold predictions predict.py's post-processing is fitted on, made as the test predictions are.

predict.py averages each fold model over the TTA views (--tta, auto: hflip when trained with flips); the
OOF of the best epoch (oof_fold{k}.csv) is one view. A temperature or thresholds fitted on the one-view
OOF are fitted on more confident predictions than the ones they are applied to. So when a fold finishes,
its kept checkpoint (fold{k}.pt, exactly the model predict.py loads) predicts the fold's validation rows
again with the views predict.py will use; fit.py writes them to oof_tta_fold{k}.csv (the columns of
oof_fold{k}.csv) and records the views in fold{k}.json (`oof_tta`). predict.py fits its plan on these rows
when its views are the recorded ones (foldkit.oof.oof_for_plan). Without TTA nothing is written: the OOF
already is what predict.py predicts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from foldkit.ensemble import trained_with_flips, views_of
from foldkit.predict.inference import tta_view
from foldkit.runtime import distributed
from foldkit.runtime.device import mean_softmax, to_device
from foldkit.runtime.model import load_checkpoint, model_from_checkpoint
from foldkit.tasks import TASKS


@dataclass
class TtaOof:
    views: list          # the TTA views, "none" first (predict.py's names)
    probs: np.ndarray    # the validation rows' predictions, in the order of the fold's validation loader


def views_for(cfg) -> list[str]:
    """The views predict.py will use with this run's --tta, decided as predict.py decides them."""
    return views_of(cfg.tta, trained_with_flips(cfg.to_dict()))


@torch.no_grad()
def predict_valid(f, log=print) -> TtaOof | None:
    """Fold f's validation rows predicted by its kept checkpoint averaged over the TTA views (None without
    TTA). f: the fold's foldkit.train.fit.FoldRun. Every process runs it (under torchrun each predicts its
    shard, gathered as the validation pass gathers them)."""
    views = views_for(f.cfg)
    if views == ["none"] or not len(f.data.va_idx):
        return None
    distributed.barrier()                 # rank 0 has written the kept checkpoint
    model = model_from_checkpoint(load_checkpoint(f.run.exp.checkpoint(f.fold))).to(f.tr.device).eval()
    if f.tr.channels_last:
        model.to(memory_format=torch.channels_last)
    flips, act = [tta_view(v) for v in views], TASKS[f.run.task].activation
    out = []
    for x, _ in f.data.valid_dl:
        x = to_device(x, f.tr.device, f.tr.channels_last)
        out.append(mean_softmax(model, [v(x) for v in flips], f.tr.device, f.tr.dtype, act))
    probs = torch.cat(out).numpy().astype(np.float64)
    probs, _ = distributed.all_rows(probs, np.zeros(len(probs)))
    log(f"fold {f.fold}: OOF predicted again with the TTA views {', '.join(views)} (what predict.py fits its "
        "post-processing on)")
    return TtaOof(views, probs)


def record(f, write, log=print) -> dict:
    """predict_valid, written by `write(f, probs, path)` (fit.py's OOF writer) to oof_tta_fold{k}.csv on the
    main process; a file left by an earlier run of the fold without TTA is removed. Returns fold{k}.json's
    entries: {"oof_tta": views}, or {} without TTA."""
    tta = predict_valid(f, log)
    path = f.run.exp.oof_tta(f.fold)
    if f.main:
        if tta is not None:
            write(f, tta.probs, path)
        else:
            path.unlink(missing_ok=True)
    return {"oof_tta": tta.views} if tta is not None else {}
