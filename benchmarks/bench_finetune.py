"""Pretrained fine-tuning on real photos: the kit's defaults against the recipe it used before.

Hymenoptera (ants vs bees, ../shared/data/hymenoptera) with the ImageNet mobilenetv2_100 of
../shared/weights/ (BatchNorm folded into the convolutions), one head-only epoch then unfrozen:

* defaults:  --pretrained-file W --freeze-epochs 1 --epochs 4  (nothing else)
* before:    the same plus --bn train --backbone-lr 1 --unfreeze-warmup 0, i.e. BatchNorm in
             training mode and every layer at --lr from the first unfrozen step (the old behaviour)

Prints each epoch's validation accuracy per fold and run, the head-only epoch against the unfrozen
ones, and with --record appends the table to benchmarks/RESULTS.md.

    python benchmarks/bench_finetune.py                      # folds 0,1 of 5 at 128 px (CPU: minutes)
    python benchmarks/bench_finetune.py --img-size 224 --folds all --record
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent / "scenarios"))
import common  # noqa: E402
import hymenoptera  # noqa: E402

RUNS = {"defaults": [], "before": ["--bn", "train", "--backbone-lr", "1", "--unfreeze-warmup", "0"]}


def _markdown(df: pd.DataFrame) -> str:
    df = df.reset_index() if not isinstance(df.index, pd.RangeIndex) else df
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines)


def record(args, wide: pd.DataFrame, summary: pd.DataFrame, total_s: float) -> None:
    import datetime as dt
    now = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    text = "\n".join([
        f"\n## Pretrained fine-tuning: hymenoptera, mobilenetv2_100 (folded BN), {args.img_size} px, {now}\n",
        f"- command: `{common.this_command()}`",
        f"- machine: {common.machine()}; {common.versions()}",
        f"- kit commit: {common.kit_commit()}",
        f"- wall time: {common.fmt_seconds(total_s)}; load average at the end (1/5/15 min): "
        + ", ".join(f"{v:.2f}" for v in os.getloadavg()),
        "- runs: `defaults` = `--pretrained-file W --freeze-epochs 1 --epochs 4` only; `before` = the same with "
        "`--bn train --backbone-lr 1 --unfreeze-warmup 0` (the kit's behaviour before these defaults)",
        "", "Validation accuracy per epoch (epoch 1 = head only):", "", _markdown(wide.round(4)), "",
        _markdown(summary.round(4)), ""])
    with open(common.RESULTS_MD, "a") as f:
        f.write(text)
    print(f"recorded in {common.RESULTS_MD.relative_to(common.REPO)}", flush=True)


def main(argv=None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(common.DATA / "hymenoptera"))
    p.add_argument("--weights", default=str(common.WEIGHTS / "mobilenetv2_100_imagenet.pth"))
    p.add_argument("--img-size", type=int, default=128)
    p.add_argument("--folds", default="0,1")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--record", action="store_true")
    args = p.parse_args(argv)
    for f in (args.data_dir, args.weights):
        if not Path(f).exists():
            raise SystemExit(f"{f} is absent: this benchmark needs the shared hymenoptera photos and weights")
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        hymenoptera.build(args.data_dir, ws / "input")
        paths = ["--input-dir", str(ws / "input"), "--folds-dir", str(ws / "folds"), "--models-dir", str(ws / "models")]
        common.kit("make_folds.py", *paths, "--n-folds", "5")
        weights = os.path.relpath(Path(args.weights).resolve(), common.REPO)
        for name, extra in RUNS.items():
            t1 = time.perf_counter()
            common.kit("train.py", *paths, "--model", "mobilenetv2_100", "--img-size", str(args.img_size),
                       "--pretrained-file", weights, "--freeze-epochs", "1", "--epochs", str(args.epochs),
                       "--fold", args.folds, "--experiment", name, "--device", args.device, "--no-progress", *extra)
            secs = time.perf_counter() - t1
            for log in sorted((ws / "models" / name).glob("log_fold*.csv")):
                df = pd.read_csv(log)
                fold = int(log.stem[len("log_fold"):])
                rows += [{"run": name, "fold": fold, "epoch": int(r.epoch), "phase": "head only" if r.epoch == 1 else "unfrozen",
                          "valid_accuracy": r.valid_accuracy, "valid_loss": r.valid_loss, "run_seconds": round(secs)}
                         for r in df.itertuples()]
    table = pd.DataFrame(rows)
    wide = table.pivot_table(index=["run", "fold"], columns="epoch", values="valid_accuracy")
    print(wide.round(4).to_string())
    summary = []
    for (run, fold), r in wide.iterrows():
        head, unfrozen = r[1], r.drop(1)
        summary.append({"run": run, "fold": fold, "head_only": head, "worst_unfrozen": unfrozen.min(),
                        "best_unfrozen": unfrozen.max(), "max_drop": head - unfrozen.min()})
    summary = pd.DataFrame(summary)
    print(summary.round(4).to_string(index=False))
    means = summary.groupby("run")[["head_only", "best_unfrozen"]].mean()
    print("mean over folds (validation accuracy):\n" + means.round(4).to_string())
    if args.record:
        record(args, wide, summary, time.perf_counter() - t0)
    return summary


if __name__ == "__main__":
    main()
