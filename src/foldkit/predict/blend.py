"""Blending experiments on their out-of-fold (OOF) predictions, with honest nested CV.

Pure functions over numpy arrays: ``probs`` is (E, N, C), one OOF probability matrix per
experiment on the same N training rows, ``y`` the (N,) class indexes, ``folds`` the (N,) fold
numbers. Nothing here touches a model, so every figure can be recomputed from the OOF files.

    BLENDS            the blend modes of foldkit.choices.BLEND_MODES, fitted and combined
    fit_plan          blend weights + post-processing (foldkit.predict.calibrate) fitted on given rows
    evaluate          in-sample and nested CV of single experiments, the blend and the plan
    held_out          nested CV: fit on K-1 folds' rows, predict the held-out fold, for each fold
    from_experiments  the above for experiment folders (their OOF files), as predict.py uses it

Nested CV is what tells a fitted blend or threshold from overfitting: the weights that score
fold k never saw fold k's rows. The submission itself uses the plan fitted on all OOF rows.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from foldkit.choices import BLEND_MODES
from foldkit.ensemble import ENSEMBLE_MODES, combine as combine_members, weighted_geometric, weighted_mean
from foldkit.errors import FoldkitError
from foldkit.metrics import METRICS, score, signed
from foldkit.oof import cv_summary, humanise, in_words, oof_arrays, oof_for_plan, score_text, test_like_score
from foldkit.predict.calibrate import POSTPROCESS, SWITCH_OF, cv_scorer, steps_for
from foldkit.tasks import TASKS, check_combination


def _equal_weights(probs: np.ndarray, y: np.ndarray, metric: str) -> np.ndarray:
    return np.full(len(probs), 1.0 / len(probs))


def rank_mean(probs: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted mean of each class column's ranks (scipy rankdata, scaled to (0, 1]) across rows,
    rows renormalised to sum to 1. For AUC only the order within a column counts; for a binary
    task the renormalisation keeps that order, for more classes it may move it slightly."""
    from scipy.stats import rankdata
    r = rankdata(probs, axis=1) / probs.shape[1]
    p = np.tensordot(w, r, axes=1)
    return p / p.sum(1, keepdims=True)


HILL_STEPS = 100        # hill: experiments added at most after the first (the weights' resolution is 1/(steps+1))
HILL_PATIENCE = 20      # hill: additions in a row that leave the best blend unbeaten before it stops (a share of 1/21)
SMOOTH = {"logloss", "rmse", "rmsle", "r2"}   # optimize: metrics smooth in the weights (SLSQP); others derivative-free


def _signed(metric: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """metrics.signed, with NaN (not scorable) as -inf: a blend that cannot be scored is never picked."""
    s = signed(metric)

    def finite(y, p):
        v = s(y, p)
        return v if np.isfinite(v) else -np.inf
    return finite


def hill_climb(probs: np.ndarray, y: np.ndarray, metric: str, combine: Callable = weighted_mean,
               max_steps: int = HILL_STEPS) -> np.ndarray:
    """`hill`: Caruana et al. 2004 ensemble selection ("Ensemble selection from libraries of models"), the
    Kaggle recipe on OOF. Starts from the best single experiment and adds, with replacement, `max_steps`
    times the experiment whose extra copy makes the blend's `metric` best, even when no copy improves it
    (as the paper does: copies of the leader that change nothing let a later copy of another experiment
    take a finer share, 1/10 rather than 1/2), stopping after HILL_PATIENCE additions in a row that beat
    nothing; returns the counts / their sum of the best blend met on the way (the paper's "ensemble with
    maximum performance"; the earliest of equals, so the fewest copies). Caruana's sorted initialisation
    and bagging are not used.
    Hand-written: no library of the kit's dependencies does ensemble selection on arbitrary metrics."""
    signed = _signed(metric)
    singles = np.array([signed(y, p) for p in probs])
    counts = np.zeros(len(probs))
    counts[int(np.argmax(singles))] = 1
    best, kept, since = float(np.max(singles)), counts.copy(), 0
    for _ in range(max_steps):
        if since >= HILL_PATIENCE:
            break
        trials = []
        for e in range(len(probs)):
            c = counts.copy()
            c[e] += 1
            trials.append(signed(y, combine(probs, c / c.sum())))
        e = int(np.argmax(trials))
        counts[e] += 1
        since += 1
        if trials[e] > best + 1e-12:
            best, kept, since = trials[e], counts.copy(), 0
    return kept / kept.sum()


def _simplex(z: np.ndarray) -> np.ndarray:
    """Softmax of z: non-negative weights summing to 1; weights under 1e-6 dropped to exactly 0."""
    w = np.exp(z - z.max())
    w = w / w.sum()
    w[w < 1e-6] = 0.0
    return w / w.sum()


def _minimise(loss: Callable[[np.ndarray], float], start: np.ndarray, smooth: bool) -> np.ndarray:
    """Weights from one start: SLSQP on the simplex (bounds 0..1, sum 1) for a smooth metric; Nelder-Mead
    on softmax-parametrised weights otherwise (accuracy, F1, QWK, AUC are step functions of the weights,
    where a gradient is zero), from a simplex of steps 0.5 in log-weight so that it sees past the steps."""
    from scipy.optimize import minimize
    e = len(start)
    if smooth:
        r = minimize(loss, start, method="SLSQP", bounds=[(0.0, 1.0)] * e,
                     constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}], options={"maxiter": 200})
        w = np.clip(r.x, 0.0, None)
        return w / w.sum() if w.sum() > 0 else start
    z0 = np.log(np.maximum(start, 1e-3))
    simplex = np.vstack([z0, z0 + 0.5 * np.eye(e)])
    r = minimize(lambda z: loss(_simplex(z)), z0, method="Nelder-Mead",
                 options={"initial_simplex": simplex, "maxfev": 200 * e, "xatol": 1e-4, "fatol": 1e-9})
    return _simplex(r.x)


def optimize_weights(probs: np.ndarray, y: np.ndarray, metric: str, combine: Callable = weighted_mean) -> np.ndarray:
    """`optimize`: continuous non-negative weights summing to 1 that maximise the OOF `metric`
    (scipy.optimize.minimize, the weight recipe of Kaggle blends), from two starts: equal weights and the
    `hill` solution. Returns the best of the starts and their optima, so in sample it never scores below
    `hill` (ties keep `hill`'s weights)."""
    if len(probs) == 1:
        return np.ones(1)
    signed = _signed(metric)

    def loss(w):    # SLSQP may try points off the simplex: scored renormalised (sum 1, as the plan is)
        w = np.clip(w, 0.0, None)
        return np.inf if w.sum() <= 0 else -signed(y, combine(probs, w / w.sum()))
    hill = hill_climb(probs, y, metric, combine)
    starts = [hill, np.full(len(probs), 1.0 / len(probs))]
    candidates = starts + [_minimise(loss, s, metric in SMOOTH) for s in starts]
    losses = [loss(w) for w in candidates]
    return candidates[int(np.argmin(losses))]      # the first best: hill on a tie


@dataclass(frozen=True)
class Blend:
    fit: Callable[[np.ndarray, np.ndarray, str], np.ndarray]   # (probs, y, metric) -> weights (E,)
    combine: Callable[[np.ndarray, np.ndarray], np.ndarray]    # (probs, weights) -> (N, C)
    fitted: bool                                               # weights learnt from OOF?
    help: str


BLENDS: dict[str, Blend] = {     # the names and help of foldkit.choices.BLEND_MODES
    "mean": Blend(_equal_weights, weighted_mean, False, BLEND_MODES["mean"]),
    "geometric": Blend(_equal_weights, weighted_geometric, False, BLEND_MODES["geometric"]),
    "hill": Blend(hill_climb, weighted_mean, True, BLEND_MODES["hill"]),
    "optimize": Blend(optimize_weights, weighted_mean, True, BLEND_MODES["optimize"]),
    "rank": Blend(_equal_weights, rank_mean, False, BLEND_MODES["rank"]),
}


# --------------------------------------------------------------------------- plan = blend + post-processing

class PlanError(FoldkitError, ValueError):
    """A recorded plan that cannot be read (corrupt or from another foldkit); the message says which."""


@dataclass
class Plan:
    """Everything that turns the members' test probabilities into the uploaded file, in order:
    each experiment's folds combined (`ensemble`), the experiments blended (`blend`, `weights`),
    the post-processing steps fitted on OOF (`steps`: [(name, params)], foldkit.predict.calibrate), the
    submission mode. `members` [(experiment, fold)] is the order of the per-member probabilities
    `apply` takes; `tta` the views each member was run with. predict.py and export.py fit it
    (predicting.make_plan); predict.py, the bundle's torch and ONNX runners and --image apply it;
    it is recorded as plain JSON (`to_json` / `from_json`) in the bundle manifest and the blend's
    cv_scores.json."""
    blend: str
    weights: np.ndarray
    steps: list = field(default_factory=list)
    experiments: list = field(default_factory=list)
    members: list = field(default_factory=list)
    ensemble: str = "mean"
    tta: list = field(default_factory=lambda: ["none"])
    submission_mode: str = "label"
    classes: list = field(default_factory=list)
    metric: str | None = None
    task: str = "single"         # foldkit.tasks: single (N, C) softmax, multilabel (N, L) sigmoid, regression (N, 1)
    label_sep: str = ""          # multi-label: the separator the tags of a label-mode submission are joined by
    positive: str = ""           # binary: the class whose probability a one-column file holds ('' = the second)

    def finish(self, per_exp: np.ndarray, raw: bool = False) -> np.ndarray:
        """(E, N, C) experiment probabilities -> blend -> post-processing (not with raw)."""
        p = BLENDS[self.blend].combine(np.asarray(per_exp, dtype=np.float64), self.weights)
        return p if raw else self.post(p)

    def post(self, p: np.ndarray) -> np.ndarray:
        """The fitted post-processing steps alone, in order (a lone experiment's report cuts its OOF rows
        with them, as its submission is cut)."""
        for name, params in self.steps:
            p = POSTPROCESS[name].apply(p, params)
        return p

    def per_experiment(self, per_member: list[np.ndarray]) -> np.ndarray:
        """(E, N, C): each experiment's folds combined with the ensemble mode."""
        if len(per_member) != len(self.members):
            raise PlanError(f"the plan has {len(self.members)} member(s) but {len(per_member)} were predicted")
        return np.stack([combine_members([np.asarray(p, dtype=np.float64) for (e, _), p
                                          in zip(self.members, per_member) if e == name], self.ensemble)
                         for name in self.experiments])

    def apply(self, per_member: list[np.ndarray], raw: bool = False) -> np.ndarray:
        """The probabilities the submission is written from: per_experiment, then finish."""
        return self.finish(self.per_experiment(per_member), raw)

    def describe(self, names: list[str] | None = None) -> dict:
        names = names or self.experiments
        return {"blend": self.blend, "weights": {n: round(float(w), 4) for n, w in zip(names, self.weights)},
                **{name: POSTPROCESS[name].describe(params) for name, params in self.steps}}

    def to_json(self) -> dict:
        """Plain JSON types; floats round-trip exactly, so a plan read back applies bit for bit."""
        def plain(v):
            return np.asarray(v).tolist() if isinstance(v, (np.ndarray, np.generic)) else v
        d = dataclasses.asdict(self)
        d.update(weights=plain(self.weights), steps=[[n, plain(p)] for n, p in self.steps],
                 members=[[str(e), int(k)] for e, k in self.members])
        json.dumps(d)   # fails here, not in a half-written manifest, if something is not plain
        return d

    @classmethod
    def from_json(cls, d: dict, where: str = "the plan") -> "Plan":
        try:
            plan = cls(**{**d, "weights": np.asarray(d["weights"], dtype=np.float64),
                          "steps": [(n, np.asarray(p, dtype=np.float64) if isinstance(p, list) else p)
                                    for n, p in d.get("steps", [])],
                          "members": [(e, int(k)) for e, k in d["members"]]})
        except (KeyError, TypeError, ValueError) as e:
            raise PlanError(f"{where} cannot be read ({type(e).__name__}: {e}): re-export or re-run predict.py "
                            "with this foldkit") from None
        if plan.task not in TASKS:
            raise PlanError(f"{where} is for a task kind {plan.task!r} that this foldkit does not know: use the "
                            "foldkit it was written with")
        check_combination(plan.task, plan.ensemble, plan.blend)
        unknown = ([plan.blend] if plan.blend not in BLENDS else []) + \
                  ([plan.ensemble] if plan.ensemble not in ENSEMBLE_MODES else []) + \
                  [n for n, _ in plan.steps if n not in POSTPROCESS]
        if unknown or len(plan.weights) != len(plan.experiments):
            raise PlanError(f"{where} names {unknown or 'weights for other experiments'} that this foldkit "
                            "does not know: use the foldkit it was written with")
        return plan


def fit_plan(probs: np.ndarray, y: np.ndarray, metric: str, blend: str = "mean", steps: tuple = ()) -> Plan:
    """Blend weights and post-processing fitted on these OOF rows (the per-experiment probabilities)."""
    w = BLENDS[blend].fit(probs, y, metric)
    p = BLENDS[blend].combine(probs, w)
    fitted = []
    for name in steps:
        params = POSTPROCESS[name].fit(p, y, metric)
        p = POSTPROCESS[name].apply(p, params)
        fitted.append((name, params))
    return Plan(blend, w, fitted, metric=metric)


def held_out(fit: Callable[[np.ndarray], object], predict: Callable[[object, np.ndarray], np.ndarray],
             folds: np.ndarray) -> np.ndarray:
    """Nested CV predictions: for each fold k, fit(rows not in k) then predict(params, rows in k).
    `fit` and `predict` take boolean row masks; returns the held-out predictions of every row."""
    folds = np.asarray(folds)
    out = None
    for k in np.unique(folds):
        test = folds == k
        p = predict(fit(~test), test)
        if out is None:
            out = np.zeros((len(folds),) + p.shape[1:])
        out[test] = p
    return out


def _nested_plan(probs, y, folds, metric, blend, steps) -> tuple[np.ndarray, np.ndarray]:
    """Held-out predictions of the blend alone and of the whole plan (one fit per fold)."""
    both = held_out(lambda rows: fit_plan(probs[:, rows], y[rows], metric, blend, steps),
                    lambda plan, rows: np.stack([plan.finish(probs[:, rows], raw=True), plan.finish(probs[:, rows])], 1),
                    folds)
    return both[:, 0], both[:, 1]


def score_blends(probs: np.ndarray, y: np.ndarray, folds: np.ndarray, metric: str, blend: str = "mean",
             steps: tuple = (), names: list[str] | None = None) -> dict:
    """Every CV figure of a blend: each experiment alone, the blend in-sample (weights fitted on
    all rows) and nested (weights fitted without the scored fold), the same with the
    post-processing steps, and the plan fitted on all rows (the one the submission uses)."""
    probs = np.asarray(probs, dtype=np.float64)
    names = names or [f"exp{i}" for i in range(len(probs))]
    plan = fit_plan(probs, y, metric, blend, steps)
    singles = {n: score(metric, y, p) for n, p in zip(names, probs)}
    nested = (None, None)                          # one fold: nothing to hold out
    if len(np.unique(folds)) > 1:
        nested = tuple(score(metric, y, p) for p in _nested_plan(probs, y, folds, metric, blend, steps))
    res = {
        "metric": metric, "blend": blend, "steps": list(steps), "singles": singles,
        "blend_in_sample": score(metric, y, plan.finish(probs, raw=True)),
        "blend_nested": nested[0],
        "final_in_sample": score(metric, y, plan.finish(probs)),
        "final_nested": nested[1],
        "plan": plan, "names": names, "rows": int(len(y)), "folds": sorted(int(f) for f in np.unique(folds)),
    }
    if BLENDS[blend].fitted and len(probs) > 1:   # unfitted: its nested CV is its in-sample CV
        res["mean_blend"] = score(metric, y, weighted_mean(probs, _equal_weights(probs, y, metric)))
    res["verdicts"] = verdicts(res)
    return res


def verdicts(res: dict) -> list[str]:
    """Plain-language warnings: a blend or post-processing that does not pay off in nested CV."""
    metric, up = res["metric"], METRICS[res["metric"]].greater_is_better
    better = (lambda a, b: a > b) if up else (lambda a, b: a < b)
    if res["blend_nested"] is None:
        fitted = BLENDS[res["blend"]].fitted and len(res["singles"]) > 1
        return [f"one fold only: no nested CV, the {'fitted ' if fitted or res['steps'] else ''}figures are "
                "in-sample"] if fitted or res["steps"] else []
    out = []
    best_name = (max if up else min)(res["singles"], key=res["singles"].get)
    best = res["singles"][best_name]
    if len(res["singles"]) > 1 and not better(res["blend_nested"], best):
        out.append(f"the {res['blend']} blend does not beat the best single experiment in nested CV "
                   f"({metric} {res['blend_nested']:.5f} vs {best_name} {best:.5f}): submit {best_name} alone "
                   f"(predict.py --experiments {best_name})")
    if "mean_blend" in res and not better(res["blend_nested"], res["mean_blend"]):
        out.append(f"the fitted {res['blend']} weights do not beat the plain mean in nested CV "
                   f"({metric} {res['blend_nested']:.5f} vs {res['mean_blend']:.5f}): prefer --blend mean")
    if res["steps"] and better(res["blend_nested"], res["final_nested"]):   # a tie: it changed nothing
        flags = " / ".join(dict.fromkeys(SWITCH_OF[s] + " off" for s in res["steps"]))
        out.append(f"post-processing ({', '.join(res['steps'])}) worsens nested CV "
                   f"({metric} {res['final_nested']:.5f} vs {res['blend_nested']:.5f} without): it overfits "
                   f"the OOF; turn it off ({flags})")
    return out



# --------------------------------------------------------------------------- experiment folders

def from_experiments(exps: list, classes: list, blend: str = "mean", calibrate: str = "auto",
                     thresholds: str = "auto", log=print, clip: str = "auto", metric: str | None = None,
                     tta: list | None = None) -> dict:
    """Fit and evaluate the plan of predict.py on the experiments' OOF files (finished folds only).

    Experiments trained on other folds cannot be blended on OOF (their rows do not line up): the
    log says so and the plan falls back to an unfitted mean without post-processing, CV None.
    Experiments with fewer finished folds than others are compared on the rows all have.
    calibrate / thresholds / clip: on, off or auto (foldkit.predict.calibrate.steps_for, from the metric and the
    task kind). metric: the one the plan is fitted and scored for (submission.file_metric: the metric of the
    file written; default the first experiment's). Returns score_blends()'s dict plus "cv" (the honest
    figure: nested CV of the whole plan). tta: the views the test is predicted with (the OOF rows
    fitted on: foldkit.oof.oof_for_plan)."""
    oofs = []
    task, sep = exps[0].task()
    metric = metric or exps[0].config().get("metric", "accuracy")
    for e in exps:
        m = e.config().get("metric", "accuracy")
        if e.task()[0] != task:
            raise FoldkitError(f"experiment {e.name} is {e.task()[0]} but {exps[0].name} is {task}: experiments of "
                               "different task kinds cannot be blended")
        oof = oof_for_plan(e, tta, log)
        rep = cv_summary(oof, classes, m, task, sep, cv_scorer(m, task, len(classes)))
        oofs.append(oof.set_index("id"))
        test_like = test_like_score(rep, e.config())
        log(f"{e.name}: CV {rep['metric']}{'@thr' if rep['scored_at_threshold'] else ''} {score_text(rep['cv'])} (folds {score_text(rep['cv_mean'])} ± "
            f"{score_text(rep['cv_std'])}, {len(rep['folds'])} fold(s): {rep['folds']})"
            + (f"; test-like estimate (fold 0, the most test-like rows) {score_text(test_like)}" if test_like is not None else ""))
    names = [e.name for e in exps]
    fallback = {"metric": metric, "cv": None, "plan": Plan("mean", np.full(len(exps), 1.0 / len(exps)), metric=metric),
                "names": names, "verdicts": []}
    if len({e.config().get("folds_sha256") for e in exps}) > 1:
        log("experiments were trained on different folds: they cannot be blended on OOF (their rows do not "
            "line up); falling back to the mean blend, without post-processing and without a combined CV")
        return fallback
    common = oofs[0].index
    for o in oofs[1:]:
        common = common.intersection(o.index, sort=False)
    if len(common) == 0:
        log("experiments share no finished fold: mean blend, no combined CV")
        return fallback
    if sorted({len(o) - len(common) for o in oofs}) != [0]:
        log(f"blend fitted and scored on the {len(common)} OOF rows every experiment has; "
            f"{', '.join(f'{n}: {len(o) - len(common)}' for n, o in zip(names, oofs))} row(s) left out")
    rows = [o.loc[common].reset_index() for o in oofs]
    arrays = [oof_arrays(r, classes, task, sep) for r in rows]      # (y, predictions) of each experiment
    probs, y = np.stack([p for _, p in arrays]), arrays[0][0]
    folds = rows[0]["fold"].to_numpy()
    res = score_blends(probs, y, folds, metric, blend, steps_for(metric, calibrate, thresholds, task, clip), names)
    res["cv"] = res["final_nested"] if res["final_nested"] is not None else res["final_in_sample"]
    for line in summary_lines(res):
        log(line)
    return res


def summary_lines(res: dict) -> list[str]:
    m, plan = res["metric"], res["plan"]
    lines = []
    if len(res["names"]) > 1:
        w = ", ".join(f"{n} {x:.3f}" for n, x in zip(res["names"], plan.weights))
        lines.append(f"{res['blend']} blend of {len(res['names'])} experiments on {res['rows']} OOF rows "
                     f"(folds {res['folds']}), weights: {w}")
        lines.append(f"  blend CV {m}: in-sample {score_text(res['blend_in_sample'])}, nested {score_text(res['blend_nested'])} "
                     "(weights fitted without the scored fold)")
    if res["steps"]:
        fitted = "; ".join(f"{humanise(n)} ({in_words(POSTPROCESS[n].describe(p))})" for n, p in plan.steps)
        lines.append(f"  post-processing fitted on OOF: {fitted}")
        lines.append(f"  CV {m} before -> after: in-sample {score_text(res['blend_in_sample'])} -> "
                     f"{score_text(res['final_in_sample'])}, nested {score_text(res['blend_nested'])} -> {score_text(res['final_nested'])}")
    lines += [f"note: {v}" for v in res["verdicts"]]
    return lines


def report_extra(res: dict) -> dict:
    """The figures recorded in cv_scores.json `extra` and report.html."""
    if res.get("plan") is None or "blend_nested" not in res:
        return {"blend": "mean (not fitted: experiments on different folds)"} if len(res.get("names", [])) > 1 else {}
    return {"plan": res["plan"].describe(res["names"]), "cv_singles": res["singles"],
            "cv_blend_in_sample": res["blend_in_sample"], "cv_blend_nested": res["blend_nested"],
            "cv_final_in_sample": res["final_in_sample"], "cv_final_nested": res["final_nested"],
            "cv_rows": res["rows"], "verdicts": res["verdicts"],
            **({"cv_mean_blend": res["mean_blend"]} if "mean_blend" in res else {})}
