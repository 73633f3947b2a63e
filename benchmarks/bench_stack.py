"""Stacking images with the table beside them, issue 29's measurement, on two competitions:

- houses (../shared/data/houses: 535 houses, frontal photo + bedrooms, bathrooms, area, zip code; price as
  regression, scored by RMSLE as Kaggle scores house prices);
- utkface (--data utkface: a seeded sample of ../shared/data/utkface's faces; gender as a binary class scored
  by AUC, the age and race from the file names as the table beside the photos, as ISIC ships age and sex
  beside its lesions).

    (a) the image model alone            train.py --metric rmsle, its fold ensemble
    (b) trees on the table alone         stack.py's table-only variant (fitted here with the same code)
    (c) stacked: table + the image OOF   stack.py, submitted by predict.py
    (d) the blend of (b) and (c)         a geometric blend (weighted mean of log1p), its weight fitted on OOF

All on the same folds. A seeded fifth of the rows (107 houses) is held out as the competition's test set
(photos, test.csv without the label); their labels score every variant's submission. CV of (a), (b), (c) is already
nested (fold k's scores come from models that never saw fold k, the trees' image feature too); (d)'s weight is
fitted on the other folds' OOF rows and scored on fold k (nested), and on all OOF rows for the held-out houses.

    python benchmarks/bench_stack.py --work DIR --epochs 6 --img-size 64
    python benchmarks/bench_stack.py --work DIR --data utkface --rows 2000 --epochs 4 --img-size 64
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
DATA = REPO.parent / "shared" / "data"
WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenetv2_100_imagenet.pth"

from foldkit import config  # noqa: E402
from foldkit.metrics import score  # noqa: E402
from foldkit.stack import boost  # noqa: E402
from foldkit.stack.features import read_test_table, rows_for_test, table_matrix  # noqa: E402
from foldkit.stack.stacking import apply, cross_fit, prepare  # noqa: E402


def kit(script: str, *args: str) -> str:
    r = subprocess.run([sys.executable, str(REPO / "src" / script), *args], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stdout[-2000:] + r.stderr[-3000:])
    return r.stdout


def houses(rows: int, seed: int) -> tuple[pd.DataFrame, dict]:
    table = pd.read_csv(DATA / "houses" / "houses.csv").rename(columns={"house": "id"})
    table["path"] = [DATA / "houses" / "frontal" / f"{h}.jpg" for h in table["id"]]
    return table, {"label": "price", "metric": "rmsle", "transform": "log1p"}


def utkface(rows: int, seed: int) -> tuple[pd.DataFrame, dict]:
    """A seeded sample of the faces whose file names carry age, gender and race (a few lack the race)."""
    files = sorted((DATA / "utkface" / "crop_part1").glob("*.jpg"))
    parts = [f.name.split("_") for f in files]
    keep = [(f, p) for f, p in zip(files, parts) if len(p) >= 4 and p[1] in ("0", "1")]
    table = pd.DataFrame({"id": range(len(keep)), "age": [int(p[0]) for _, p in keep],
                          "race": [f"r{p[2]}" for _, p in keep], "gender": [f"g{p[1]}" for _, p in keep],
                          "path": [f for f, _ in keep]})
    return table.sample(n=min(rows, len(table)), random_state=seed).sort_values("id"), \
        {"label": "gender", "metric": "auc", "transform": "none"}


def build(work: Path, data: str, rows: int, held_out: float, seed: int) -> tuple[Path, pd.DataFrame, dict]:
    """The competition folder: train.csv + train/ (links to the photos), test.csv + test/ of the held-out
    rows, a sample submission; returns it, the held-out labels (the solution) and the task's settings."""
    comp = work / "in"
    table, task = {"houses": houses, "utkface": utkface}[data](rows, seed)
    test = table.sample(frac=held_out, random_state=seed).sort_values("id")
    train = table.drop(test.index)
    if not (comp / "train.csv").is_file():
        for split, part in (("train", train), ("test", test)):
            (comp / split).mkdir(parents=True, exist_ok=True)
            for i, src in zip(part["id"], part["path"]):
                link = comp / split / f"{i}.jpg"
                if not link.exists():
                    os.symlink(src, link)
        train.drop(columns="path").to_csv(comp / "train.csv", index=False)
        test.drop(columns=["path", task["label"]]).to_csv(comp / "test.csv", index=False)
        test[["id"]].assign(**{task["label"]: 0}).to_csv(comp / "sample_submission.csv", index=False)
    solution = test[["id", task["label"]]].rename(columns={task["label"]: "y"})
    return comp, solution.assign(id=solution["id"].astype(str)).set_index("id")["y"], task


def value(frame: pd.DataFrame, task: dict) -> np.ndarray:
    """The one number a row's answer is scored by: the regression value, or the positive class's probability."""
    return frame["pred" if task["metric"] == "rmsle" else "prob_g1"].to_numpy(float)


def scored(pred: np.ndarray, y: np.ndarray, task: dict) -> float:
    if task["metric"] == "rmsle":
        return float(np.sqrt(np.mean((np.log1p(np.clip(pred, 0, None)) - np.log1p(y)) ** 2)))
    return float(score("auc", (np.asarray(y) == "g1").astype(int), np.stack([1 - pred, pred], axis=1)))


def oof_of(models: Path, name: str) -> pd.DataFrame:
    frame = pd.concat([pd.read_csv(p) for p in sorted((models / name).glob("oof_fold*.csv"))])
    return frame.set_index(frame["id"].astype(str))


def submitted(subs: Path, name: str, ids: list[str], task: dict) -> np.ndarray:
    """The latest submission of an experiment (its one answer column: the price, or the positive class's
    probability), in the order of `ids`."""
    newest = max(subs.glob(f"{name}_cv*.csv"), key=lambda f: f.stat().st_mtime)   # a rerun's, not the best CV's name
    sub = pd.read_csv(newest, dtype={"id": str}).set_index("id")
    return sub.loc[ids].iloc[:, -1].to_numpy(float)


def table_only(paths: list[str], kind: str, seeds: list[int], comp: Path, task: dict):
    """stack.py's table-only variant: its OOF (by id) and its fold-averaged answer for the test rows."""
    cfg = config.resolve(**{k.lstrip("-").replace("-", "_"): v for k, v in zip(paths[::2], paths[1::2])
                            if k != "--reports-dir"}, experiments="img")
    table, meta, kind_of, _, features, spec, x_table, _, _, y = prepare(cfg, log=lambda *a: None)
    cats = [i for i, f in enumerate(features) if f.kind == "cat"]
    n = len(meta["classes"])
    oof, _, fitted = cross_fit(kind, x_table, y, table["fold"].to_numpy(), cats, kind_of, n, seeds,
                               transform=task["transform"])
    test_ids = pd.read_csv(comp / "sample_submission.csv", dtype=str)["id"].tolist()
    rows = rows_for_test(read_test_table(comp / "test.csv"), "id", test_ids, features, comp / "test.csv")
    x_test = table_matrix(rows, spec)
    test = np.mean([apply(m, x_test, kind_of, n, task["transform"])[:, -1] for m in fitted.values()], axis=0)
    return pd.Series(oof[:, -1], index=table["id"].astype(str)), test, test_ids


def blend(b, c, w, task):
    if task["metric"] == "rmsle":     # a geometric blend: the weighted mean of log1p, the metric's scale
        return np.expm1(w * np.log1p(np.clip(b, 0, None)) + (1 - w) * np.log1p(np.clip(c, 0, None)))
    return w * b + (1 - w) * c


def best_weight(b, c, y, task) -> float:
    grid = np.linspace(0, 1, 21)
    got = [scored(blend(b, c, w, task), y, task) for w in grid]
    return float(grid[int(np.argmin(got) if task["metric"] == "rmsle" else np.argmax(got))])


def nested_blend(b, c, y, folds, task) -> tuple[float, list[float]]:
    """(d)'s nested CV: fold k's weight fitted on the other folds' OOF rows, the blend scored on fold k's."""
    pred, weights = np.empty(len(y)), []
    for k in np.unique(folds):
        inner = folds != k
        weights.append(best_weight(b[inner], c[inner], y[inner], task))
        pred[~inner] = blend(b[~inner], c[~inner], weights[-1], task)
    return scored(pred, y, task), weights


def constant(y, task) -> tuple[np.ndarray, str]:
    if task["metric"] == "rmsle":
        return np.expm1(np.mean(np.log1p(y))), "expm1(mean log1p)"
    return np.mean(y == "g1"), "the training share of the class"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--data", choices=["houses", "utkface"], default="houses")
    ap.add_argument("--rows", type=int, default=2000, help="utkface: faces sampled")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--held-out", type=float, default=0.2)
    a = ap.parse_args()
    work = Path(a.work)
    comp, solution, task = build(work, a.data, a.rows, a.held_out, 0)
    models, subs = work / "models", work / "subs"
    paths = ["--input-dir", str(comp), "--folds-dir", str(work / "folds"), "--models-dir", str(models),
             "--submissions-dir", str(subs), "--reports-dir", str(work / "reports")]
    if not (work / "folds").is_dir():
        kit("make_folds.py", *paths, "--label-col", task["label"], "--n-folds", str(a.folds))
    t0 = time.time()
    kit("train.py", *paths, "--model", "mobilenetv2_100", "--pretrained-file", str(WEIGHTS), "--img-size",
        str(a.img_size), "--epochs", str(a.epochs), "--batch-size", "32", "--fold", "all", "--experiment", "img",
        "--metric", task["metric"], "--no-progress")
    t_train = time.time() - t0
    mode = ["--submission-mode", "probs"] if task["metric"] != "rmsle" else []
    kit("predict.py", *paths, "--experiments", "img", "--no-progress", "--no-report", *mode)
    print(kit("stack.py", *paths, "--experiments", "img", "--experiment", "st", "--seeds", str(a.seeds),
              "--no-progress", *mode))
    kind, seeds = boost.available(), list(range(42, 42 + a.seeds))
    b_oof, b_test, test_ids = table_only(paths, kind, seeds, comp, task)
    img, st = oof_of(models, "img"), oof_of(models, "st")
    ids = st.index
    y, folds = st["label"].to_numpy(float if task["metric"] == "rmsle" else str), st["fold"].to_numpy()
    b, c = b_oof.loc[ids].to_numpy(), value(st, task)
    sol = solution.loc[test_ids].to_numpy(float if task["metric"] == "rmsle" else str)
    c_test = submitted(subs, "st", test_ids, task)
    d_cv, d_weights = nested_blend(b, c, y, folds, task)
    w_all = best_weight(b, c, y, task)
    const, how = constant(y, task)
    rows = {"(a) image model alone": (scored(value(img.loc[ids], task), y, task),
                                      scored(submitted(subs, "img", test_ids, task), sol, task)),
            "(b) trees on the table alone": (scored(b, y, task), scored(b_test, sol, task)),
            "(c) stacked: table + image OOF": (scored(c, y, task), scored(c_test, sol, task)),
            "(d) blend of (b) and (c)": (d_cv, scored(blend(b_test, c_test, w_all, task), sol, task)),
            f"constant answer: {how}": (scored(np.full(len(y), const), y, task),
                                        scored(np.full(len(sol), const), sol, task))}
    print(f"image model: mobilenetv2_100 (ImageNet weights), {a.img_size} px, {a.epochs} epochs, {a.folds} folds, "
          f"{len(y)} training rows, {len(sol)} held out: {t_train:.0f} s; trees: {kind}, {a.seeds} seed(s)")
    print(f"(d) weight of (b) per fold {d_weights}, on all OOF rows {w_all}")
    name = task["metric"].upper()
    print(f"| variant | CV {name} (nested) | held-out {name} |\n|---|---|---|")
    for k, (cv, ho) in rows.items():
        print(f"| {k} | {cv:.4f} | {ho:.4f} |")


if __name__ == "__main__":
    main()
