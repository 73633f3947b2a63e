"""One gradient-boosted tree model of the stack: LightGBM when installed (the `stack` extra), else
scikit-learn's HistGradientBoosting; XGBoost and CatBoost when asked for (--booster, the `xgboost` and
`catboost` extras). The same protocol for each.

    fit       early stopping on an inner split of the rows it is given (a fifth, seeded, stratified for
              classes): the number of trees found there, then refit on all of those rows. The rows it is
              given are the training folds' rows only (stacking.cross_fit): no row it is scored on is ever
              seen, not even to stop early.
    predict   (N,) values, (N,) probability of the positive class, or (N, C) class probabilities
    importance  LightGBM and XGBoost: the total split gain of each feature; CatBoost: its
              PredictionValuesChange (how much the prediction moves with the feature's splits); scikit-learn
              (which keeps no public gain): permutation importance on the inner split, scored by the inner
              model that never saw those rows. Early stopping there is by hand (warm start, PATIENCE trees at
              a time, staged predictions on the inner split): scikit-learn 1.3 has no X_val

Objectives: "regression" (L2), "binary", "multiclass" (n classes); a multi-label task is one binary model per
label (stacking). Categorical features are given by their column indexes (codes 0..K-1, NaN missing).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from foldkit.stack.features import StackError

LEARNING_RATE = 0.05
MAX_TREES = 2000
PATIENCE = 50
INNER_SHARE = 0.2
# what importance() measures, per booster: the header of importance.csv's `importance` column says it
IMPORTANCE = {"lightgbm": "split gain (LightGBM feature_importance('gain'), the full model)",
              "sklearn": "permutation importance: the inner split's loss increase when the feature is shuffled",
              "xgboost": "split gain (XGBoost get_score('total_gain'), the full model)",
              "catboost": "prediction values change (CatBoost get_feature_importance, the full model)"}
# --booster's words: the booster each one is (hgb is scikit-learn's HistGradientBoosting, recorded as sklearn)
BOOSTERS = {"lightgbm": "lightgbm", "hgb": "sklearn", "sklearn": "sklearn", "xgboost": "xgboost",
            "catboost": "catboost"}
EXTRA = {"lightgbm": "stack", "xgboost": "xgboost", "catboost": "catboost"}


def available() -> str:
    """The booster `auto` picks: lightgbm when importable, else sklearn."""
    return "lightgbm" if importlib.util.find_spec("lightgbm") else "sklearn"


def resolve(asked: str) -> str:
    """The booster --booster names (auto: available()); one that is not installed is one line."""
    kind = available() if asked == "auto" else BOOSTERS[asked]
    if kind != "sklearn" and not importlib.util.find_spec(kind):
        raise StackError(f"--booster {asked}: {kind} is not installed: pip install {kind} (or pip install -e "
                         f"'.[{EXTRA[kind]}]'), or use --booster hgb (scikit-learn's HistGradientBoosting)")
    return kind


@dataclass
class Model:
    kind: str             # lightgbm | sklearn
    objective: str        # regression | binary | multiclass
    n_classes: int
    model: Any
    trees: int
    importance: np.ndarray       # per feature: see importance()
    cats: tuple = ()             # the categorical columns (XGBoost and CatBoost need them to predict)


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
    gain = np.asarray(full.feature_importance(importance_type="gain"), dtype=np.float64)
    return Model("lightgbm", objective, n_classes, full, trees, gain)


def _sklearn_loss(model, y: np.ndarray, p: np.ndarray) -> float:
    """The loss of a HistGradientBoosting model's outputs p on rows y (lower is better): squared error, or
    the log loss (a class the model never saw counts as probability 1e-15)."""
    if p.ndim == 1:
        return float(np.mean((p - y) ** 2))
    col = {int(c): j for j, c in enumerate(model.classes_)}
    at = np.array([col.get(int(v), -1) for v in y])
    prob = np.where(at >= 0, p[np.arange(len(y)), np.maximum(at, 0)], 0.0)
    return float(-np.mean(np.log(np.clip(prob, 1e-15, 1))))


def _neg_loss(model, x: np.ndarray, y: np.ndarray) -> float:
    """A scorer (higher is better) of the same loss, for permutation_importance."""
    p = model.predict(x) if not hasattr(model, "predict_proba") else model.predict_proba(x)
    return -_sklearn_loss(model, y, p)


def _sklearn_trees(model, x_fit, y_fit, x_stop, y_stop, objective) -> int:
    """Early stopping on the inner split, by hand (scikit-learn 1.3 has no X_val): grow PATIENCE trees at a
    time (warm start) until the stop rows' loss has not improved for PATIENCE trees; the best count."""
    while True:
        model.fit(x_fit, y_fit)
        stages = model.staged_predict if objective == "regression" else model.staged_predict_proba
        losses = [_sklearn_loss(model, y_stop, p) for p in stages(x_stop)]
        best = int(np.argmin(losses)) + 1
        if model.n_iter_ - best >= PATIENCE or model.n_iter_ >= MAX_TREES or model.n_iter_ < model.max_iter:
            return best
        model.set_params(max_iter=min(model.max_iter + PATIENCE, MAX_TREES))


def _fit_sklearn(x, y, cats, objective, n_classes, seed) -> Model:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.inspection import permutation_importance
    mask = np.zeros(x.shape[1], dtype=bool)
    mask[list(cats)] = True
    kind = HistGradientBoostingRegressor if objective == "regression" else HistGradientBoostingClassifier
    common = {"learning_rate": LEARNING_RATE, "max_leaf_nodes": 15, "min_samples_leaf": 10,
              "categorical_features": mask if mask.any() else None, "random_state": seed, "early_stopping": False}
    fit_rows, stop_rows = inner_split(y, objective, seed)
    inner = kind(max_iter=PATIENCE, warm_start=True, **common)
    trees = max(_sklearn_trees(inner, x[fit_rows], y[fit_rows], x[stop_rows], y[stop_rows], objective), 1)
    # importance: how much the inner split's loss grows when a feature's values are shuffled (the inner model
    # never saw those rows); scikit-learn has no public gain of HistGradientBoosting's splits
    inner.set_params(max_iter=trees, warm_start=False)
    inner.fit(x[fit_rows], y[fit_rows])
    perm = permutation_importance(inner, x[stop_rows], y[stop_rows], scoring=_neg_loss, n_repeats=5,
                                  random_state=seed)
    full = kind(max_iter=trees, **common).fit(x, y)
    return Model("sklearn", objective, n_classes, full, trees, np.asarray(perm.importances_mean, dtype=np.float64))


def _xgb_matrix(x: np.ndarray, y, cats):
    import xgboost as xgb  # lazy: an optional extra (--booster xgboost)
    types = ["c" if i in set(cats) else "q" for i in range(x.shape[1])]
    return xgb.DMatrix(x, label=y, feature_types=types, enable_categorical=True, missing=np.nan)


def _fit_xgb(x, y, cats, objective, n_classes, seed) -> Model:
    import xgboost as xgb  # lazy: an optional extra (--booster xgboost)
    params = {"objective": {"regression": "reg:squarederror", "binary": "binary:logistic",
                            "multiclass": "multi:softprob"}[objective], "eta": LEARNING_RATE, "max_depth": 0,
              "max_leaves": 15, "grow_policy": "lossguide", "min_child_weight": 1, "subsample": 0.9,
              "colsample_bytree": 0.9, "tree_method": "hist", "max_cat_to_onehot": 1, "seed": seed, "nthread": 2,
              "verbosity": 0, **({"num_class": n_classes} if objective == "multiclass" else {})}
    fit_rows, stop_rows = inner_split(y, objective, seed)
    inner = xgb.train(params, _xgb_matrix(x[fit_rows], y[fit_rows], cats), MAX_TREES,
                      evals=[(_xgb_matrix(x[stop_rows], y[stop_rows], cats), "stop")],
                      early_stopping_rounds=PATIENCE, verbose_eval=False)
    trees = max(int(inner.best_iteration) + 1, 1)
    full = xgb.train(params, _xgb_matrix(x, y, cats), trees)
    score = full.get_score(importance_type="total_gain")
    gain = np.array([score.get(f"f{i}", 0.0) for i in range(x.shape[1])], dtype=np.float64)
    return Model("xgboost", objective, n_classes, full, trees, gain, tuple(cats))


def _cat_frame(x: np.ndarray, cats) -> pd.DataFrame:
    """CatBoost's categorical columns must be text or integers: each code as text, missing as 'nan'."""
    frame = pd.DataFrame(x)
    for c in cats:
        frame[c] = [("nan" if np.isnan(v) else str(int(v))) for v in x[:, c]]
    return frame


def _fit_catboost(x, y, cats, objective, n_classes, seed) -> Model:
    import catboost  # lazy: an optional extra (--booster catboost)
    kind = catboost.CatBoostRegressor if objective == "regression" else catboost.CatBoostClassifier
    common = {"learning_rate": LEARNING_RATE, "depth": 4, "random_seed": seed, "thread_count": 2,
              "verbose": False, "allow_writing_files": False,
              "loss_function": {"regression": "RMSE", "binary": "Logloss", "multiclass": "MultiClass"}[objective]}
    fit_rows, stop_rows = inner_split(y, objective, seed)
    frame = _cat_frame(x, cats)
    inner = kind(iterations=MAX_TREES, od_type="Iter", od_wait=PATIENCE, use_best_model=True, **common)
    inner.fit(catboost.Pool(frame.iloc[fit_rows], y[fit_rows], cat_features=list(cats)),
              eval_set=catboost.Pool(frame.iloc[stop_rows], y[stop_rows], cat_features=list(cats)))
    trees = max(int(inner.get_best_iteration() or 0) + 1, 1)
    full = kind(iterations=trees, **common).fit(catboost.Pool(frame, y, cat_features=list(cats)))
    gain = np.asarray(full.get_feature_importance(), dtype=np.float64)
    return Model("catboost", objective, n_classes, full, trees, gain, tuple(cats))


FITS = {"lightgbm": _fit_lgb, "sklearn": _fit_sklearn, "xgboost": _fit_xgb, "catboost": _fit_catboost}


def fit(kind: str, x: np.ndarray, y: np.ndarray, cats: list[int], objective: str, n_classes: int,
        seed: int) -> Model:
    """A model fitted on these rows only (early stopping on an inner split of them, then refit)."""
    return FITS[kind](x, y, cats, objective, n_classes, seed)


def _class_probs(m: Model, p: np.ndarray, classes) -> np.ndarray:
    """A classifier's probabilities (scikit-learn or CatBoost, which know only the classes they saw) as the
    positive class's (binary) or all n_classes' (a class absent from the training rows keeps 0)."""
    classes = np.asarray(classes).astype(int)
    if m.objective == "binary":
        return p[:, list(classes).index(1)] if 1 in classes else np.zeros(len(p))
    out = np.zeros((len(p), m.n_classes))
    out[:, classes] = p
    return out


def predict(m: Model, x: np.ndarray) -> np.ndarray:
    if m.kind == "lightgbm":
        return np.asarray(m.model.predict(x), dtype=np.float64)
    if m.kind == "xgboost":
        return np.asarray(m.model.predict(_xgb_matrix(x, None, m.cats)), dtype=np.float64)
    data = _cat_frame(x, m.cats) if m.kind == "catboost" else x
    if m.objective == "regression":
        return np.asarray(m.model.predict(data), dtype=np.float64)
    return _class_probs(m, m.model.predict_proba(data), m.model.classes_)


def importance(m: Model) -> np.ndarray:
    """Each feature's importance: LightGBM's total split gain (feature_importance("gain")) or, with
    scikit-learn, the permutation importance on the inner split (IMPORTANCE names which)."""
    return m.importance
