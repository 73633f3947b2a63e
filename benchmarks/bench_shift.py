"""Adversarial validation on planted train/test shifts and on none.

Runs the real audit (foldkit.audit.run.run_audit, shared mobilenetv2 weights, 128 px) on numpy-layout
competitions built from real images: Fashion-MNIST (--n training images and --n other test-set
images as test) and the hymenoptera photos (train/ as train, val/ as test), once as they are and
once with the test images shifted (brightness +40, a Gaussian blur, or both). Prints the AUC, its
spread over the folds and the audit's shift verdict.

    python benchmarks/bench_shift.py [--n 1000]
"""
import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenetv2_100_imagenet.pth"
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))


def shifted(imgs, how):
    import cv2
    out = []
    for im in imgs:
        x = im
        if "blur" in how:
            x = cv2.GaussianBlur(x, (0, 0), 1.5 * max(1, x.shape[0] / 64))
        if "bright" in how:
            x = np.clip(x.astype(int) + 40, 0, 255).astype(np.uint8)
        out.append(x)
    return out


def photos(split):
    import cv2

    from foldkit.data.images import decode_image
    ps = sorted(p for p in (DATA / "hymenoptera" / split).glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg"))
    imgs = [cv2.resize(decode_image(p, min_side=160), (160, 160), interpolation=cv2.INTER_AREA) for p in ps]
    return np.stack(imgs), np.array([p.parent.name for p in ps])


def audit(root, xtr, ytr, xte, yte, table=False):
    from foldkit import config
    from foldkit.audit.run import run_audit
    root.mkdir(parents=True)
    np.save(root / "x_train.npy", xtr)
    np.save(root / "y_train.npy", ytr)
    np.save(root / "x_test.npy", np.stack(xte))
    np.save(root / "y_test.npy", yte)
    cfg = config.resolve(dict(input_dir=str(root), reports_dir=str(root.parent / "rep"), embed_weights=str(WEIGHTS)))
    shift = run_audit(cfg, log=lambda *m: None)["shift"]
    if table:
        import pandas as pd
        return shift, pd.read_csv(root.parent / "rep" / "audit" / "adversarial.csv")
    return shift


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    a = ap.parse_args()
    from bench_copies import _idx
    x = _idx(DATA / "fashion_mnist" / "t10k-images-idx3-ubyte.gz")
    y = _idx(DATA / "fashion_mnist" / "t10k-labels-idx1-ubyte.gz")
    sets = {"fashion_mnist": (x[:a.n], y[:a.n], x[a.n:2 * a.n], y[a.n:2 * a.n])}
    ptr, ltr = photos("train")
    pva, lva = photos("val")
    sets["hymenoptera train vs val"] = (ptr, ltr, pva, lva)
    print("| set | test images | AUC | AUC std over folds | verdict |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (xtr, ytr, xte, yte) in sets.items():
            for how in ("none", "bright", "blur", "bright+blur"):
                te = list(xte) if how == "none" else shifted(xte, how)
                sh = audit(Path(tmp) / f"{name}_{how}".replace(" ", "_") / "comp", xtr, ytr, te, yte)
                print(f"| {name} ({len(xtr)} + {len(xte)}) | {how} | {sh['auc']:.3f} | {sh['auc_std']:.3f} | "
                      f"{sh['verdict'][0].split(':')[1].split(';')[0].strip()} |", flush=True)
        # the most test-like training images: 10% of the Fashion-MNIST training images brightened, the
        # whole test set brightened; how many of the top 10% by p_test are the brightened ones?
        xtr, ytr, xte, yte = sets["fashion_mnist"]
        k = len(xtr) // 10
        xtr = np.concatenate([np.stack(shifted(xtr[:k], "bright")), xtr[k:]])
        sh, t = audit(Path(tmp) / "partial" / "comp", xtr, ytr, shifted(xte, "bright"), yte, table=True)
        top = t.head(k)["id"].astype(int)
        print(f"\n{k} of {len(xtr)} Fashion-MNIST training images brightened like the whole test set: AUC "
              f"{sh['auc']:.3f}; of the {k} most test-like training images (adversarial.csv), "
              f"{int((top < k).sum())} are the brightened ones")


if __name__ == "__main__":
    main()
