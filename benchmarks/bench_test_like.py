"""Does the test-like fold 0 (make_folds --test-like-fold) predict the test score better than random CV?

A numpy-layout competition from real Fashion-MNIST images: --n training images (the official training
set) of which a share is shifted like the whole test set (--n-test images of the official test set):
blurred and brightened, or only blurred. The real audit (shared mobilenetv2 weights, default 128 px)
scores p_test; the real make_folds splits twice (random 5 folds, and --test-like-fold). A small model
(scikit-learn logistic regression on the pixels, fast on 2 cores) is trained per fold and scored on
its validation fold; the test score is that of the 5 random-fold models' averaged probabilities on the
test set (what a submission of the fold ensemble scores). Also with no shift, as a control.

    python benchmarks/bench_test_like.py [--n 1500] [--n-test 750]
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenetv2_100_imagenet.pth"
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))


def shifted(imgs, how):
    import cv2
    out = []
    for x in imgs:
        if "blur" in how:
            x = cv2.GaussianBlur(x, (5, 5), 1.5)
        if "bright" in how:
            x = np.clip(x.astype(int) + 60, 0, 255).astype(np.uint8)
        out.append(x)
    return np.stack(out)


def fit_score(x, y, tr, va_sets):
    """Logistic regression on pixels/255 fitted on rows tr; (accuracy, probabilities) on each eval set."""
    from sklearn.linear_model import LogisticRegression
    clf = LogisticRegression(C=0.05, max_iter=300)
    clf.fit(x[tr], y[tr])
    return [(float((clf.predict(xv) == yv).mean()), clf.predict_proba(xv)) for xv, yv in va_sets]


def cv(x, y, folds, xt, yt):
    """(per-fold accuracy, test accuracy of the fold models' mean probabilities)."""
    accs, probs = [], []
    for k in range(int(folds.max()) + 1):
        va = folds == k
        (acc, _), (_, pt) = fit_score(x, y, ~va, [(x[va], y[va]), (xt, yt)])
        accs.append(acc)
        probs.append(pt)
    return np.array(accs), float((np.mean(probs, 0).argmax(1) == yt).mean())


def one(tmp, name, xtr, ytr, xte, yte):
    from foldkit import config
    from foldkit.audit.run import run_audit
    from foldkit.folds.file import make_folds
    root = tmp / name / "comp"
    root.mkdir(parents=True)
    for k, v in dict(x_train=xtr, y_train=ytr, x_test=xte, y_test=yte).items():
        np.save(root / f"{k}.npy", v)
    base = dict(input_dir=str(root), reports_dir=str(tmp / name / "rep"), embed_weights=str(WEIGHTS))
    t0 = time.time()
    auc = run_audit(config.resolve(base), log=lambda *m: None)["shift"]["auc"]
    t_audit = time.time() - t0
    out = {"auc": auc, "audit_s": t_audit}
    for kind, flag in (("random", False), ("testlike", True)):
        t0 = time.time()
        make_folds(config.resolve({**base, "folds_dir": str(tmp / name / kind), "test_like_fold": flag}),
                   log=lambda *m: None)
        out[f"{kind}_folds_s"] = time.time() - t0
        t = pd.read_csv(tmp / name / kind / "train_folds.csv")
        folds = t.sort_values("index")["fold"].to_numpy()
        out[kind] = folds
    x = xtr.reshape(len(xtr), -1) / 255.0
    xt = xte.reshape(len(xte), -1) / 255.0
    out["random_acc"], out["test"] = cv(x, ytr, out["random"], xt, yte)
    out["testlike_acc"], out["test_testlike_ensemble"] = cv(x, ytr, out["testlike"], xt, yte)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--n-test", type=int, default=750)
    a = ap.parse_args()
    from bench_copies import _idx
    x = _idx(DATA / "fashion_mnist" / "train-images-idx3-ubyte.gz")[:a.n]
    y = _idx(DATA / "fashion_mnist" / "train-labels-idx1-ubyte.gz")[:a.n].astype(int)
    xt0 = _idx(DATA / "fashion_mnist" / "t10k-images-idx3-ubyte.gz")[:a.n_test]
    yt = _idx(DATA / "fashion_mnist" / "t10k-labels-idx1-ubyte.gz")[:a.n_test].astype(int)
    rng = np.random.default_rng(0)
    print("| shift (test and part of train) | shifted share of train | adversarial AUC | shifted rows in fold 0 "
          "| random CV (mean ± std of 5 folds) | test-like fold 0 | test-like CV (all 5 folds) | test "
          "| random CV - test | fold 0 - test |\n|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for how, share in (("none", 0.0), ("blur+bright", 0.2), ("blur+bright", 0.4), ("blur", 0.2),
                           ("blur", 0.4)):
            mask = np.zeros(a.n, bool)
            mask[rng.choice(a.n, int(round(share * a.n)), replace=False)] = True
            xtr = x.copy()
            if mask.any():
                xtr[mask] = shifted(x[mask], how)
            xte = xt0 if how == "none" else shifted(xt0, how)
            r = one(Path(tmp), f"{how}_{share}", xtr, y, xte, yt)
            z = r["testlike"] == 0
            ra, ta, test = r["random_acc"], r["testlike_acc"], r["test"]
            print(f"| {how} | {share:.0%} | {r['auc']:.3f} | {int(mask[z].sum())} of {int(z.sum())} | "
                  f"{ra.mean():.3f} ± {ra.std():.3f} | {ta[0]:.3f} | {ta.mean():.3f} | {test:.3f} | "
                  f"{ra.mean() - test:+.3f} | {ta[0] - test:+.3f} |", flush=True)
            print(f"  (audit {r['audit_s']:.0f} s; make_folds random {r['random_folds_s']:.1f} s, test-like "
                  f"{r['testlike_folds_s']:.1f} s; test score of the test-like folds' ensemble "
                  f"{r['test_testlike_ensemble']:.3f})", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
