"""One gradient-boosted tree model of the stack: LightGBM when installed (the `stack` extra), else
scikit-learn's HistGradientBoosting, with the same protocol.

    fit       early stopping on an inner split of the rows it is given (a fifth, seeded, stratified for
              classes): the number of trees found there, then refit on all of those rows. The rows it is
              given are the training folds' rows only (stacking.cross_fit): no row it is scored on is ever
              seen, not even to stop early.
    predict   (N,) values, (N,) probability of the positive class, or (N, C) class probabilities
    gain      the total split gain of each feature (LightGBM's importance_type="gain"; the same sum over the
              nodes of scikit-learn's trees)

Objectives: "regression" (L2), "binary", "multiclass" (n classes); a multi-label task is one binary model per
label (stacking). Categorical features are given by their column indexes (codes 0..K-1, NaN missing).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np

LEARNING_RATE = 0.05
MAX_TREES = 2000
PATIENCE = 50
INNER_SHARE = 0.2


def available() -> str:
    """The booster `auto` picks: lightgbm when importable, else sklearn."""
    return "lightgbm" if importlib.util.find_spec("lightgbm") else "sklearn"


@dataclass
class Model:
    kind: str             # lightgbm | sklearn
    objective: str        # regression | binary | multiclass
    n_classes: int
    model: Any
    trees: int


def inner_split(y: np.ndarray, objective: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, early-stopping rows) of the rows given: a seeded fifth held out, stratified for classes
    when every class has two rows."""
    from sklearn.model_selection import train_test_split
    idx = np.arange(len(y))
    strat = y if objective != "regression" and np.min(np.bincount(y.astype(int))[np.unique(y.astype(int))]) >= 2 \
        else None
    return train_test_split(idx, test_size=INNER_SHARE, random_state=seed, stratify=strat)


def _lgb_params(objective: str, n_classes: int, seed: int) -> dict:
    return {"objective": objective, "learning_rate": LEARNING_RATE, "num_leaves": 15, "min_data_in_leaf": 10,
            "min_data_per_group": 5, "cat_smooth": 10, "feature_fraction": 0.9, "bagging_fraction": 0.9,
            "bagging_freq": 1, "seed": seed, "deterministic": True, "num_threads": 2, "verbose": -1,
            **({"num_class": n_classes} if objective == "multiclass" else {})}


def _fit_lgb(x, y, cats, objective, n_classes, seed) -> Model:
    import lightgbm as lgb
    params = _lgb_params(objective, n_classes, seed)
    fit_rows, stop_rows = inner_split(y, objective, seed)
    inner = lgb.train(params, lgb.Dataset(x[fit_rows], y[fit_rows], categorical_feature=cats),
                      MAX_TREES, valid_sets=[lgb.Dataset(x[stop_rows], y[stop_rows], categorical_feature=cats)],
                      callbacks=[lgb.early_stopping(PATIENCE, verbose=False)])
    trees = max(int(inner.best_iteration or inner.current_iteration()), 1)
    full = lgb.train(params, lgb.Dataset(x, y, categorical_feature=cats), trees)
    return Model("lightgbm", objective, n_classes, full, trees)


def _fit_sklearn(x, y, cats, objective, n_classes, seed) -> Model:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    mask = np.zeros(x.shape[1], dtype=bool)
    mask[list(cats)] = True
    kind = HistGradientBoostingRegressor if objective == "regression" else HistGradientBoostingClassifier
    common = {"learning_rate": LEARNING_RATE, "max_leaf_nodes": 15, "min_samples_leaf": 10,
              "categorical_features": mask if mask.any() else None, "random_state": seed}
    fit_rows, stop_rows = inner_split(y, objective, seed)
    inner = kind(max_iter=MAX_TREES, early_stopping=True, n_iter_no_change=PATIENCE, **common)
    # the early-stopping rows are given explicitly (scikit-learn >= 1.4 takes X_val): the same inner split as LightGBM
    inner.fit(x[fit_rows], y[fit_rows], X_val=x[stop_rows], y_val=y[stop_rows])
    trees = max(int(inner.n_iter_), 1)
    full = kind(max_iter=trees, early_stopping=False, **common).fit(x, y)
    return Model("sklearn", objective, n_classes, full, trees)


def fit(kind: str, x: np.ndarray, y: np.ndarray, cats: list[int], objective: str, n_classes: int,
        seed: int) -> Model:
    """A model fitted on these rows only (early stopping on an inner split of them, then refit)."""
    return (_fit_lgb if kind == "lightgbm" else _fit_sklearn)(x, y, cats, objective, n_classes, seed)


def predict(m: Model, x: np.ndarray) -> np.ndarray:
    if m.kind == "lightgbm":
        return np.asarray(m.model.predict(x), dtype=np.float64)
    if m.objective == "regression":
        return m.model.predict(x).astype(np.float64)
    p = m.model.predict_proba(x)
    if m.objective == "binary":
        return p[:, list(m.model.classes_).index(1)] if 1 in m.model.classes_ else np.zeros(len(x))
    out = np.zeros((len(x), m.n_classes))
    out[:, m.model.classes_.astype(int)] = p        # a class absent from the training rows keeps 0
    return out


def gain(m: Model, n_features: int) -> np.ndarray:
    """Total split gain per feature."""
    if m.kind == "lightgbm":
        return np.asarray(m.model.feature_importance(importance_type="gain"), dtype=np.float64)
    out = np.zeros(n_features)
    # scikit-learn keeps no importance for HistGradientBoosting; its tree nodes record each split's gain
    for per_class in getattr(m.model, "_predictors", []):
        for tree in per_class:
            split = ~tree.nodes["is_leaf"].astype(bool)
            np.add.at(out, tree.nodes["feature_idx"][split], tree.nodes["gain"][split])
    return out
