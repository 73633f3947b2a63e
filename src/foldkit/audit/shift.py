"""Train/test shift: adversarial validation on the audit's embeddings, and the class priors.

Kaggle's standard check before trusting CV: a small classifier learns to tell training images from
test images; its cross-validated ROC AUC says how different the two sets look (0.5 = no
detectable difference). The classifier is a scikit-learn pipeline: the embeddings reduced to
their PROJECT_DIM principal components (a well-conditioned problem that converges in
milliseconds), standardised, then LogisticRegression with balanced class weights; stratified
5-fold out-of-fold probabilities, so every
training image also gets p_test, the probability that it is a test image: the most test-like
training images are the natural validation set when the test set is shifted.
`test_like_scores` reads them back for make_folds --test-like-fold (fold 0 = the most test-like rows).

Torch-free: it sees only the embedding matrix.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from foldkit.errors import FoldkitError

ADVERSARIAL_CSV = "adversarial.csv"
FOLDS = 5
PROJECT_DIM = 64          # principal components the classifier sees
MAX_ROWS = 40000          # larger sets: each fold's classifier is fitted on a random sample of this many
TEST_LIKE_SHARE = 0.2     # adversarial.csv marks this share of train, most test-like first
NO_SHIFT_AUC = 0.6        # below: no detectable shift
STRONG_SHIFT_AUC = 0.75   # above: CV will not predict the test score
AUDIT_COMMAND = "python src/audit.py --embed-weights FILE"


class ShiftError(FoldkitError, ValueError):
    """The audit's adversarial validation is missing or describes other images."""


def adversarial_validation(emb_train: np.ndarray, emb_test: np.ndarray, seed: int = 0) -> tuple[dict, np.ndarray]:
    """({auc, auc_std, n_train, n_test}, p_test of each training row (out of fold))."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([emb_train, emb_test]).astype(np.float32)
    y = np.r_[np.zeros(len(emb_train), int), np.ones(len(emb_test), int)]
    p = np.zeros(len(x))
    aucs = []
    rng = np.random.default_rng(seed)
    for tr, va in StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(x, y):
        if len(tr) > MAX_ROWS:
            tr = np.sort(rng.choice(tr, MAX_ROWS, replace=False))
        dim = min(PROJECT_DIM, x.shape[1], len(tr) - 1)
        clf = make_pipeline(PCA(dim, svd_solver="randomized", random_state=seed), StandardScaler(),
                            LogisticRegression(C=1.0, max_iter=1000, class_weight="balanced"))
        clf.fit(x[tr], y[tr])
        p[va] = clf.predict_proba(x[va])[:, 1]
        aucs.append(roc_auc_score(y[va], p[va]))
    info = {"auc": round(float(roc_auc_score(y, p)), 4), "auc_std": round(float(np.std(aucs)), 4),
            "n_train": int(len(emb_train)), "n_test": int(len(emb_test)),
            "classifier": f"PCA({PROJECT_DIM}) + LogisticRegression",
            "folds": FOLDS}
    return info, p[:len(emb_train)]


def test_like_table(train: pd.DataFrame, p_test: np.ndarray) -> pd.DataFrame:
    """adversarial.csv: training rows (id, label, source) by p_test, most test-like first, with
    rank and test_like (the top TEST_LIKE_SHARE: a validation set that looks like test)."""
    t = train[["id", "label", "source"]].copy()
    t["p_test"] = np.round(p_test, 5)
    t = t.sort_values("p_test", ascending=False, kind="stable").reset_index(drop=True)
    t.insert(0, "rank", np.arange(1, len(t) + 1))
    t["test_like"] = t["rank"] <= max(1, int(round(TEST_LIKE_SHARE * len(t))))
    return t


def class_priors(train_labels: pd.Series, test_labels: pd.Series | None) -> pd.DataFrame | None:
    """Share of each class in train and in test (when the test set has labels), and the largest
    absolute difference as `max_abs_diff` in attrs."""
    if test_labels is None or test_labels.isna().all():
        return None
    tr = train_labels.astype(str).value_counts(normalize=True)
    te = test_labels.dropna().astype(str).value_counts(normalize=True)
    t = pd.DataFrame({"train": tr, "test": te}).fillna(0.0).sort_index().round(4)
    t.index.name = "class"
    t.attrs["max_abs_diff"] = float((t["train"] - t["test"]).abs().max())
    return t


def shift_verdict(info: dict, priors: pd.DataFrame | None) -> list[str]:
    """What the AUC (and the priors) mean for the user's CV, one sentence each."""
    auc = info["auc"]
    if auc < NO_SHIFT_AUC:
        out = [f"adversarial validation AUC {auc:.3f}: train and test images look alike (no detectable "
               "shift); CV should track the test score."]
    elif auc < STRONG_SHIFT_AUC:
        out = [f"adversarial validation AUC {auc:.3f}: some train/test shift; expect the test score to "
               "differ from CV. Look at the most test-like training images (adversarial.csv) and check "
               "CV on them (the rows marked test_like) as well as on random folds."]
    else:
        out = [f"adversarial validation AUC {auc:.3f}: the test images look different from the training "
               "images (strong shift); CV on random folds will not predict the test score. Validate on "
               "the most test-like training images (adversarial.csv, test_like), and make training "
               "look like test (augment towards the difference the gallery shows, or add such images)."]
    if priors is not None and priors.attrs.get("max_abs_diff", 0) > 0.05:
        out.append(f"the test set's class shares differ from train by up to "
                   f"{priors.attrs['max_abs_diff']:.1%}: accuracy on test will weigh classes differently "
                   "than CV does (see the class prior table).")
    return out


def test_like_scores(audit: dict | None, audit_dir: str | Path, input_dir: str | Path,
                     ids: pd.Series) -> tuple[np.ndarray, dict]:
    """(p_test of each training id, {source, adversarial_auc}) from the audit's adversarial.csv.
    audit: the audit's audit.json when it describes input_dir (foldkit.audit.duplicates.read_audit), else None.
    Refused in one line, naming the file and the audit to run: no audit of this competition, an
    audit without adversarial validation (no embedding weights, no test images), a missing or foreign
    adversarial.csv, training ids it does not score."""
    where = Path(audit_dir)
    csv = where / ADVERSARIAL_CSV
    if audit is None:
        raise ShiftError(f"--test-like-fold: no audit of {input_dir} in {where} (audit.json): run "
                         f"`{AUDIT_COMMAND}` first (it writes {ADVERSARIAL_CSV})")
    if "auc" not in (audit.get("shift") or {}):
        why = ("it saw no test images: put them in the competition folder, or drop --test-like-fold"
               if not audit.get("test_rows") else "it ran without embedding weights")
        raise ShiftError(f"--test-like-fold: {where / 'audit.json'} has no adversarial validation ({why}); "
                         f"run `{AUDIT_COMMAND}`")
    try:
        t = pd.read_csv(csv, dtype={"id": str}, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise ShiftError(f"--test-like-fold: cannot read {csv} ({type(e).__name__}): run `{AUDIT_COMMAND}` "
                         "again") from None
    if not {"id", "p_test"} <= set(t.columns):
        raise ShiftError(f"--test-like-fold: {csv} has no id and p_test columns (not the audit's file): run "
                         f"`{AUDIT_COMMAND}` again")
    p = pd.Series(pd.to_numeric(t["p_test"], errors="coerce").to_numpy(float), index=t["id"].to_numpy())
    got = p[~p.index.duplicated()].reindex(ids.astype(str).to_numpy())
    missing = got.isna().to_numpy()
    if missing.any():
        raise ShiftError(f"--test-like-fold: {csv} scores no p_test for {int(missing.sum())} of the {len(ids)} "
                         f"training rows (e.g. ids {ids.astype(str)[missing].head(5).tolist()}): it describes "
                         f"other images; run `{AUDIT_COMMAND}` again")
    return got.to_numpy(float), {"source": str(csv), "adversarial_auc": float(audit["shift"]["auc"])}
