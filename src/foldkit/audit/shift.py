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


import numpy as np
import pandas as pd

from foldkit.folds.audit_files import NO_SHIFT_AUC

FOLDS = 5
PROJECT_DIM = 64          # principal components the classifier sees
MAX_ROWS = 40000          # larger sets: each fold's classifier is fitted on a random sample of this many
TEST_LIKE_SHARE = 0.2     # adversarial.csv marks this share of train, most test-like first
STRONG_SHIFT_AUC = 0.75   # above: CV will not predict the test score


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


