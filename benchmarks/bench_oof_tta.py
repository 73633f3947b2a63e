"""Temperature fitted on one kind of prediction, applied to another: the gap, and the OOF with TTA views.

predict.py applies its post-processing to the test average of K fold models x TTA views; it used to fit it
on the one-view OOF of one model. Trains one experiment with --metric logloss (TTA auto: hflip), then fits
the temperature three ways and scores each on the competition's labelled test images:

    one-view OOF   oof_fold{k}.csv (the kit before OOF with TTA)
    OOF with TTA   oof_tta_fold{k}.csv (the kit now)
    oracle         fitted on the test labels themselves (the best any T can do: the floor of the gap)

and for each prints T, the nested CV log loss the kit reports (fitted on K-1 folds, scored on the held-out
fold) and the held-out test log loss of the submitted probabilities.

    python benchmarks/bench_oof_tta.py --data hymenoptera --img-size 96 --epochs 3
    python benchmarks/bench_oof_tta.py --data fashion_mnist --limit 1500 --epochs 3 --model test_resnet
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "scenarios"))
sys.path.insert(0, str(HERE.parent / "src"))
import common  # noqa: E402


def build(data: str, root: Path, limit: int) -> None:
    if data == "hymenoptera":
        import hymenoptera
        hymenoptera.build(common.DATA / "hymenoptera", root)
    else:
        import fashion_mnist
        fashion_mnist.build(common.DATA / "fashion_mnist", root, limit)


def fit_and_score(cfg, hide_tta: bool):
    """(T, nested CV log loss, test log loss, per-member test probs, truth) with the plan fitted as predict.py
    fits it; hide_tta: as the kit before OOF with TTA (the one-view OOF only)."""
    from foldkit.predict import predicting
    from foldkit.experiment import find_experiments
    exp = find_experiments(cfg.models_dir, None)[0]
    hidden = []
    if hide_tta:
        for p in exp.fold_files("oof_tta").values():
            hidden.append(p.rename(p.with_suffix(".hidden")))
    try:
        done, members, _, truth = predicting.open_prediction(cfg, log=lambda *_: None)
    finally:
        for p in hidden:
            p.rename(p.with_suffix(".csv"))
    return done, members, truth


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=["hymenoptera", "fashion_mnist"], default="hymenoptera")
    p.add_argument("--limit", type=int, default=1500, help="fashion_mnist: training rows (and test rows)")
    p.add_argument("--model", default="mobilenetv2_100")
    p.add_argument("--img-size", default="96")
    p.add_argument("--epochs", default="3")
    p.add_argument("--folds", default="5")
    p.add_argument("--freeze-epochs", default="1", help="mobilenetv2_100: head-only epochs first")
    p.add_argument("--lr", default="", help="train.py --lr (default: the kit's)")
    p.add_argument("--work", default="", help="scratch folder (default: a temporary one, removed)")
    p.add_argument("--score-only", action="store_true", help="only score the finished folds of an earlier --work")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if args.score_only:
        root = Path(args.work)
        report(argparse.Namespace(input=root / "input", folds=root / "folds", models=root / "models"), args, 0.0)
        return
    ws = common.Workspace(args.work, False, f"oof-tta-{args.data}")
    try:
        build(args.data, ws.input, args.limit)
        common.kit("make_folds.py", *ws.paths(), "--n-folds", args.folds)
        extra = (["--pretrained-file", str(common.WEIGHTS / "mobilenetv2_100_imagenet.pth"), "--freeze-epochs",
                  args.freeze_epochs] if args.model == "mobilenetv2_100" else ["--no-pretrained"]) + (["--lr", args.lr] if args.lr else [])
        common.kit("train.py", *ws.paths(), "--model", args.model, "--img-size", args.img_size, "--epochs",
                   args.epochs, "--metric", "logloss", "--fold", "all", "--experiment", "e", "--batch-size", "32",
                   "--no-progress", *extra)
        report(ws, args, time.perf_counter() - t0)
    finally:
        ws.close()


def report(ws, args, train_s: float) -> None:
    from foldkit import config, metrics
    from foldkit.ensemble import log_probs, softmax
    from foldkit.predict import calibrate, predicting
    cfg = config.resolve({"input_dir": str(ws.input), "folds_dir": str(ws.folds), "models_dir": str(ws.models),
                          "calibrate": "on", "progress": False})
    rows = {}
    per_member = truth = None
    for name, hide in (("one-view OOF (before)", True), ("OOF with TTA (now)", False)):
        done, members, truth = fit_and_score(cfg, hide)
        if per_member is None:
            sources = predicting.make_sources(done.comp, done.comp.test, "test", members, cfg)
            per_member = predicting.predict_members(cfg, members, sources, done.plan.tta, progress=False)
        keep, y = truth
        plan = done.plan
        t = dict(plan.steps)["temperature"]
        test = metrics.score("logloss", y, plan.apply(per_member)[keep])
        rows[name] = (t, done.fitted["final_nested"], done.fitted["blend_nested"], test)
        raw = plan.apply(per_member, raw=True)[keep]
    # the fold average: T (fitted on OOF with TTA) on each member before the probability mean, and the logit
    # mean (--ensemble geometric), with which a temperature on each member is the temperature of the mean
    logit_mean = softmax(np.mean([log_probs(m) for m in per_member], axis=0))
    for name, p in (("OOF with TTA, T on each member, then the mean",
                     np.mean([calibrate.apply_temperature(m, t) for m in per_member], axis=0)),
                    ("OOF with TTA, --ensemble geometric (logit mean)", calibrate.apply_temperature(logit_mean, t))):
        rows[name] = (t, None, None, metrics.score("logloss", y, p[keep]))
    t_oracle = calibrate.fit_temperature(raw, y)
    rows["oracle (fitted on the test labels)"] = (t_oracle, None, None,
                                                  metrics.score("logloss", y, calibrate.apply_temperature(raw, t_oracle)))
    print(f"\n{args.data}: {args.model} {args.img_size} px, {args.folds} folds, {args.epochs} epochs, views "
          f"{plan.tta}, {len(members)} models; {len(y)} labelled test images; train {train_s:.0f}s")
    print(f"test log loss without temperature: {metrics.score('logloss', y, raw):.4f}; test accuracy "
          f"{metrics.score('accuracy', y, raw):.4f}")
    print("| T fitted on | T | nested CV log loss (raw -> with T) | test log loss with T |")
    print("|---|---|---|---|")
    for name, (t, nested, nested_raw, test) in rows.items():
        cv = f"{nested_raw:.4f} -> {nested:.4f}" if nested is not None else "-"
        print(f"| {name} | {t:.3f} | {cv} | {test:.4f} |")


if __name__ == "__main__":
    main()
