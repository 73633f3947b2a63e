"""auto.py's job: the strongest honest submission within a time budget.

    plan_portfolio   measure each candidate backbone's training img/s on this device (a short probe),
                     estimate its time on every fold, keep the candidates that fit the budget in order;
                     when the first does not fit whole it is shrunk: fewer folds, then fewer epochs, then
                     a smaller image size (not one epoch of one fold fits: AutoError)
    run_auto         train the chosen experiments on all folds (train(): resumable, fold-locked, each
                     a normal experiment), stopping a fold at the deadline (on_epoch), then predict.py's
                     path on the experiments with a finished fold (blend fitted on the OOF with nested CV)

A share of the budget (RESERVE) is kept for prediction and the report.
"""
from __future__ import annotations

import time

from foldkit.errors import FoldkitError
from foldkit.folds.file import read_folds
from foldkit.predict import predicting
from foldkit.report.predicted import write_reports
from foldkit.config import with_settings
from foldkit.runtime.model import create_model, data_config
from foldkit.tasks import n_outputs, task_of
from foldkit.runtime.device import pick_device
from foldkit.train.builder import build_run, settle
from foldkit.train.fit import fit_fold_locked

RESERVE = 0.2          # of the budget, kept for predict (test images, blend, report)
FOLD_OVERHEAD_S = 5.0  # per fold: model build, validation passes beyond the probe's estimate, files


class AutoError(FoldkitError, ValueError):
    """A budget or portfolio auto.py cannot work with; the message says what would fit."""


class _Deadline(Exception):
    """Raised from fit_fold's on_epoch callback when the budget's training share is spent."""


def probe_img_per_s(cfg, in_chans: int, n_out: int, side: int, steps: int = 2) -> float:
    """Training images per second of cfg.model at its settled batch on this device: a few forward/backward/
    AdamW steps on random images of the training size (hand-written: the real loop needs a fold's data;
    this only needs the arithmetic cost, like foldkit.export.estimate measures inference). The loss is a
    stand-in of the task's outputs (n_out of them): its own cost is nothing beside the model's."""
    import torch

    device = pick_device(cfg.device)
    model = create_model(cfg.model, n_out, in_chans, False, "", img_size=side).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(cfg.batch_size, in_chans, side, side, device=device)
    times = []
    for _ in range(steps + 1):                 # the first step warms up (allocations, kernels)
        t0 = time.perf_counter()
        opt.zero_grad()
        model(x).float().square().mean().backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return cfg.batch_size / max(sum(times[1:]) / steps, 1e-9)


def portfolio(cfg) -> list[str]:
    """--portfolio's model names, in order."""
    names = [m.strip() for m in cfg.portfolio.split(",") if m.strip()]
    if not names:
        raise AutoError("--portfolio is empty: give timm model names, comma-separated")
    if cfg.pretrained_file and len(names) > 1:
        raise AutoError("--pretrained-file holds one backbone's weights: give a --portfolio of that one model, "
                        "or leave --pretrained-file out (the hub's weights for each)")
    return names


def smaller_sides(side: int) -> list[int]:
    """Image sides to try when one epoch of one fold does not fit at `side`: 3/4 and 1/2 of it, in
    multiples of 32 px, never below 32."""
    return sorted({s for s in (side * 3 // 4 // 32 * 32, side // 2 // 32 * 32) if 32 <= s < side}, reverse=True)


def shrink(epoch_s: float, n_folds: int, epochs: int, side: int, left: float) -> dict | None:
    """The most of one candidate that fits `left` seconds ({folds, epochs, side, seconds}), giving up, in
    order: folds (the first n-1, ..., 1 at --epochs: a 2-fold ensemble beats no submission), then epochs
    (of one fold), then image size (one epoch of one fold). None when not even that fits. epoch_s: one
    epoch of one fold at `side`; the time goes with the pixels."""
    def fits(folds, n_epochs, s):
        seconds = folds * (n_epochs * epoch_s * (s / side) ** 2 + FOLD_OVERHEAD_S)
        return {"folds": folds, "epochs": n_epochs, "side": s, "seconds": seconds} if seconds <= left else None
    ladder = ([(k, epochs, side) for k in range(n_folds, 0, -1)] + [(1, e, side) for e in range(epochs - 1, 0, -1)]
              + [(1, 1, s) for s in smaller_sides(side)])
    return next((p for p in (fits(*step) for step in ladder) if p), None)


def given_up(p: dict, n_folds: int, epochs: int, side: int, rows: int) -> str:
    """What a shrunk plan gave up, and the CV it leaves."""
    parts = ([f"{n_folds - p['folds']} of {n_folds} folds"] if p["folds"] < n_folds else []) + \
        ([f"{epochs - p['epochs']} of {epochs} epochs"] if p["epochs"] < epochs else []) + \
        ([f"image size {side} -> {p['side']} px"] if p["side"] < side else [])
    folds = ",".join(map(str, range(p["folds"])))
    return (f"gave up {', '.join(parts)}: its CV is scored on the OOF of fold(s) {folds} (about "
            f"{rows * p['folds'] // n_folds} of {rows} rows) and the submission averages {p['folds']} fold model(s)")


def plan_portfolio(cfgs: dict, rows: int, n_folds: int, n_out: int, budget_s: float, log=print,
                   t0: float | None = None) -> list[dict]:
    """[{model, epochs, folds, img_size, seconds, img_per_s}] that fit (1 - RESERVE) of the budget, in
    --portfolio order (folds: the first `folds` folds are trained; img_size 0: as settled). cfgs: {model: its
    settled settings (foldkit.train.builder.settle)}, n_out: the task's outputs. A candidate that does not fit
    whole joins, shrunk (shrink), only while nothing else is planned. The time since t0 (reading the folds,
    these probes) counts against the budget; only when not one epoch of one fold fits is it an AutoError."""
    first = next(iter(cfgs.values()))
    t0 = time.time() if t0 is None else t0
    per_epoch_rows = rows * (n_folds - 1) / n_folds + rows / n_folds / 3   # training + validation (~1/3 cost)
    speed, sides = {}, {}
    for name, mcfg in cfgs.items():
        in_chans = mcfg.in_chans or 3
        sides[name] = data_config(name, mcfg.img_size, in_chans, mcfg.crop_pct)["input_size"][-1]
        speed[name] = probe_img_per_s(mcfg, in_chans, n_out, sides[name])
    plan, left = [], budget_s * (1 - RESERVE) - (time.time() - t0)
    for name, ips in speed.items():
        epoch_s, side = per_epoch_rows / ips, sides[name]
        need = n_folds * (first.epochs * epoch_s + FOLD_OVERHEAD_S)
        log(f"{name}: {ips:.0f} train img/s here -> {need / 3600:.2f} h for {n_folds} folds x {first.epochs} epochs")
        whole = {"folds": n_folds, "epochs": first.epochs, "side": side, "seconds": need}
        p = shrink(epoch_s, n_folds, first.epochs, side, left) if not plan else whole if need <= left else None
        if p is None:
            continue
        if (p["folds"], p["epochs"], p["side"]) != (n_folds, first.epochs, side):
            log(f"{name}: does not fit whole in the {max(left, 0) / 3600:.2f} h left for training; "
                + given_up(p, n_folds, first.epochs, side, rows))
        plan.append({"model": name, "epochs": p["epochs"], "folds": p["folds"],
                     "img_size": p["side"] if p["side"] < side else 0, "seconds": p["seconds"], "img_per_s": ips})
        left -= p["seconds"]
    if not plan:
        raise too_small(first.hours, left, speed, sides, per_epoch_rows, rows, n_folds)
    return plan


def too_small(hours: float, left: float, speed: dict, sides: dict, per_epoch_rows: float, rows: int,
              n_folds: int) -> AutoError:
    """The refusal: the fastest candidate's one epoch of one fold at the smallest size tried, and the rows that
    would fit in the `left` seconds of training."""
    ips, name = max((ips, n) for n, ips in speed.items())
    side = (smaller_sides(sides[name]) or [sides[name]])[-1]
    epoch_s = per_epoch_rows / ips * (side / sides[name]) ** 2
    need_h = (epoch_s + FOLD_OVERHEAD_S) / 3600 / (1 - RESERVE)
    room = left - FOLD_OVERHEAD_S
    fit_rows = int(rows * room / epoch_s) if room > 0 else 0
    return AutoError(f"--hours {hours:g} is too small for one model: {name} (the fastest) needs about {need_h:.3f} h "
                     f"for one epoch of one of {n_folds} folds at {side} px here. Give more --hours, a faster first "
                     "model in --portfolio, or fewer rows ("
                     + (f"about {fit_rows} would fit: make_folds.py --limit {fit_rows})" if fit_rows >= 2 * n_folds
                        else "make_folds.py --limit)"))


def run_auto(cfg, log=print) -> dict:
    if cfg.hours <= 0:
        raise AutoError("--hours: give the time budget in hours, e.g. --hours 2")
    if "experiment" in cfg.given or "fold" in cfg.given or "devices" in cfg.given:
        raise AutoError("auto.py names its experiments and trains every fold in sequence: drop --experiment, "
                        "--fold, --devices")
    t0, budget = time.time(), cfg.hours * 3600
    deadline = t0 + budget * (1 - RESERVE)
    table, meta = read_folds(cfg.folds_dir)
    n_folds = int(table["fold"].max()) + 1
    # each candidate settled as train.py would settle it (the task's metric, --batch-size auto measured):
    # the probe measures that batch, and the candidate trains as the same experiment train.py would name
    cfgs = {name: settle(with_settings(cfg, model=name), log) for name in portfolio(cfg)}
    plan = plan_portfolio(cfgs, len(table), n_folds, n_outputs(task_of(meta), meta["classes"]), budget, log, t0=t0)
    log("portfolio: " + ", ".join(f"{p['model']} ({p['epochs']} epochs"
                                  + (f", folds 0-{p['folds'] - 1} of {n_folds}" if p["folds"] < n_folds else "")
                                  + (f", {p['img_size']} px" if p["img_size"] else "")
                                  + f", ~{p['seconds'] / 60:.1f} min)" for p in plan))

    def stop_at_deadline(fold, row):      # called after the epoch's files: a fold never loses a finished epoch
        if time.time() > deadline:
            raise _Deadline()
    names = []
    for p in plan:
        if names and time.time() + p["seconds"] * 0.5 > deadline:
            log(f"{p['model']}: skipped, not enough of the budget left")
            continue
        sized = {"img_size": p["img_size"]} if p["img_size"] else {}
        mcfg, run = build_run(with_settings(cfgs[p["model"]], epochs=p["epochs"], **sized), log=log)
        try:
            for k in range(p["folds"]):
                # a fold starts while the deadline is ahead; the plan's first always does (it was measured to
                # fit, and without a finished fold there is no submission)
                if time.time() > deadline and (names or run.exp.finished_folds()):
                    raise _Deadline()
                if not run.exp.is_finished(k):
                    fit_fold_locked(mcfg, run, k, log=log, on_epoch=[stop_at_deadline])
        except _Deadline:
            log(f"{p['model']}: the budget's training share is spent; its finished folds are used "
                f"(python src/train.py --fold all --experiment {run.exp.name} continues it)")
        if run.exp.finished_folds():
            names.append(run.exp.name)
        if time.time() > deadline:
            break
    if not names:
        raise AutoError("no fold finished inside the budget: give more --hours")
    blend = "hill" if len(names) > 1 else "mean"
    # the test images at the smallest settled batch (--batch-size auto is a training setting)
    pcfg = with_settings(cfg, experiments=",".join(names), blend=blend,
                         batch_size=min(c.batch_size for c in cfgs.values()))
    result = predicting.run_predict(pcfg, log=log, reports=write_reports)
    log(f"auto: {len(names)} experiment(s) {', '.join(names)}, blend {blend}, "
        f"{(time.time() - t0) / 3600:.3f} h of {cfg.hours:g} h")
    return {"experiments": names, "plan": plan, "predict": result, "seconds": time.time() - t0}

