"""Blends, calibration and metric post-processing fitted on OOF: pure numpy, no model needed."""
import json

import numpy as np
import pytest
from scipy.special import softmax

from foldkit.predict import blend
from foldkit.predict import calibrate
from foldkit.experiment import Experiment
from foldkit.metrics import score

RNG_SEED = 0


def _sampled(n, c, scale, seed=RNG_SEED):
    """Logits and labels drawn from softmax(logits): a perfectly calibrated model."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * scale
    u = rng.random(n)[:, None]
    y = (softmax(logits, 1).cumsum(1) < u).sum(1)
    return logits, np.minimum(y, c - 1)


# ---------------------------------------------------------------- nested CV

def test_nested_cv_fits_on_the_other_folds_and_scores_the_held_out_one():
    folds = np.repeat(np.arange(4), 5)
    seen = []

    def fit(rows):
        seen.append(set(folds[rows].tolist()))
        return set(np.flatnonzero(rows).tolist())

    def predict(train_rows, rows):
        assert not train_rows & set(np.flatnonzero(rows).tolist())   # no scored row was fitted on
        return np.full((rows.sum(), 1), float(folds[rows][0]))

    out = blend.held_out(fit, predict, folds)
    assert seen == [{1, 2, 3}, {0, 2, 3}, {0, 1, 3}, {0, 1, 2}]
    assert out[:, 0].tolist() == folds.tolist()


@pytest.mark.parametrize("mode", ["hill", "optimize"])
def test_blend_gain_that_is_pure_overfitting_shows_no_nested_gain_and_the_kit_says_so(mode):
    """Eight experiments of pure noise: weights fitted on all rows 'beat' every single one in
    sample; fitted without the scored fold they do not, and the verdict names the best single."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    folds = np.arange(300) % 5
    noise = softmax(rng.normal(size=(8, 300, 2)), 2)
    res = blend.score_blends(noise, y, folds, "accuracy", mode)
    best_single = max(res["singles"].values())
    assert res["blend_in_sample"] > best_single
    assert res["blend_nested"] < best_single
    assert res["blend_in_sample"] - res["blend_nested"] > 0.05
    assert any("does not beat the best single experiment in nested CV" in v for v in res["verdicts"])
    assert any("do not beat the plain mean in nested CV" in v for v in res["verdicts"])


@pytest.mark.parametrize("mode", ["hill", "optimize"])
def test_fitted_weights_find_the_informative_experiment_and_gain_in_nested_cv(mode):
    logits, y = _sampled(600, 3, 2.0)
    rng = np.random.default_rng(1)
    good = softmax(logits + rng.normal(size=logits.shape) * 0.5, 1)
    weak = softmax(logits * 0.2 + rng.normal(size=logits.shape) * 2.0, 1)
    folds = np.arange(600) % 5
    opt = blend.score_blends(np.stack([weak, good]), y, folds, "logloss", mode, names=["weak", "good"])
    mean = blend.score_blends(np.stack([weak, good]), y, folds, "logloss", "mean", names=["weak", "good"])
    w = dict(zip(opt["names"], opt["plan"].weights))
    assert w["good"] > 0.7 and abs(sum(w.values()) - 1) < 1e-9 and min(w.values()) >= 0
    assert opt["blend_nested"] < mean["blend_nested"] and opt["mean_blend"] == mean["blend_nested"]
    assert not any("plain mean" in v for v in opt["verdicts"])


def _three(n=1500, c=10, seed=0):
    """Three experiments of one 10-class problem that differ in noise (independent errors): blends pay."""
    logits, y = _sampled(n, c, 2.0, seed)
    rng = np.random.default_rng(seed + 1)
    return np.stack([softmax(logits * a + rng.normal(size=logits.shape) * s, 1)
                     for a, s in ((1.0, 1.0), (1.0, 1.3), (1.0, 1.8))]), y


def test_hill_weights_are_counts_added_with_replacement_and_never_below_the_best_single():
    probs, y = _three()
    most = 0
    for metric in ("accuracy", "logloss"):
        w = blend.hill_climb(probs, y, metric)
        steps = next(k for k in range(1, blend.HILL_STEPS + 2) if np.allclose(w * k, np.round(w * k)))
        counts = np.round(w * steps)
        assert counts.sum() == steps and min(counts) >= 0
        best_single = max(blend._signed(metric)(y, p) for p in probs)
        assert blend._signed(metric)(y, blend.weighted_mean(probs, w)) >= best_single
        most = max(most, counts.max())
    assert most >= 2                                          # an experiment was added more than once
    assert blend.hill_climb(probs, y, "accuracy", max_steps=1).tolist() in ([.5, .5, 0], [.5, 0, .5], [0, .5, .5],
                                                                             [1, 0, 0], [0, 1, 0], [0, 0, 1])


@pytest.mark.parametrize("metric", ["logloss", "accuracy"])
def test_hill_and_optimize_both_find_a_small_share_of_a_weak_experiment(metric):
    """A good experiment and a weak one with independent errors: an equal share of the weak one hurts, a
    small one (about 0.1) helps. optimize fits it continuously (SLSQP for log loss, Nelder-Mead for
    accuracy, a step function of the weights); hill reaches it as Caruana's selection does, by copies of
    the good one that change nothing first (it used to stop at the first addition that did not help and
    kept the good one alone, 1 : 0). Both report an honest nested CV."""
    logits, y = _sampled(1500, 10, 2.0)
    rng = np.random.default_rng(1)
    good = softmax(logits + rng.normal(size=logits.shape), 1)
    weak = softmax(logits * 0.7 + rng.normal(size=logits.shape) * 2.0, 1)
    probs = np.stack([good, weak])
    folds = np.arange(len(y)) % 5
    hill = blend.score_blends(probs, y, folds, metric, "hill")
    opt = blend.score_blends(probs, y, folds, metric, "optimize")
    w, h = opt["plan"].weights, hill["plan"].weights
    assert min(w) >= 0 and w.sum() == pytest.approx(1) and blend.BLENDS["optimize"].fitted
    assert 0.02 < w[1] < 0.3 and 0.02 < h[1] < 0.3
    sign = 1 if metric == "accuracy" else -1
    alone = blend._signed(metric)(y, good)
    assert sign * hill["blend_in_sample"] > alone + 0.002                 # the share of the weak one pays (signed)
    assert sign * (opt["blend_in_sample"] - hill["blend_in_sample"]) > -0.002   # optimize: at least as good
    assert opt["blend_nested"] is not None and hill["blend_nested"] is not None


def test_rank_blend_ignores_each_experiment_s_calibration():
    logits, y = _sampled(400, 2, 2.0)
    p = softmax(logits, 1)
    squashed = softmax(logits / 10, 1)                     # same order, other scale
    ranked = blend.BLENDS["rank"].combine(np.stack([p, squashed]), np.array([0.5, 0.5]))
    assert np.allclose(ranked.sum(1), 1)
    assert score("auc", y, ranked) == pytest.approx(score("auc", y, p))


# ---------------------------------------------------------------- post-processing

@pytest.mark.parametrize("t_true", [3.0, 0.4])          # under-confident (label smoothing) / over-confident
def test_temperature_fitted_on_oof_lowers_oof_log_loss_of_a_miscalibrated_model(t_true):
    logits, y = _sampled(1000, 4, 2.0)
    miscal = softmax(logits / t_true, 1)
    folds = np.arange(1000) % 5
    res = blend.score_blends(miscal[None], y, folds, "logloss", "mean", calibrate.steps_for("logloss"))
    t = res["plan"].steps[0][1]
    assert t == pytest.approx(1 / t_true, rel=0.2)
    assert res["final_in_sample"] < res["blend_in_sample"] - 0.02
    assert res["final_nested"] < res["blend_nested"] - 0.02          # holds on held-out folds too
    assert (calibrate.apply_temperature(miscal, t).argmax(1) == miscal.argmax(1)).all()


def test_binary_threshold_fitted_on_oof_improves_f1_on_skewed_classes():
    rng = np.random.default_rng(RNG_SEED)
    y = (rng.random(2000) < 0.1).astype(int)
    s = rng.normal(size=2000) + 1.5 * y
    p1 = 1 / (1 + np.exp(-(s - 2.5)))                      # positives under-scored: argmax misses most
    probs = np.stack([1 - p1, p1], 1)
    res = blend.score_blends(probs[None], y, np.arange(2000) % 5, "f1", "mean", calibrate.steps_for("f1"))
    assert res["steps"] == ["thresholds"]
    assert res["final_nested"] > res["blend_nested"] + 0.1
    assert res["plan"].describe(["m"])["thresholds"]["threshold"] < 0.5


def test_macro_f1_class_weights_help_the_rare_class():
    logits, y = _sampled(800, 3, 1.5)
    biased = softmax(logits + np.array([1.5, 0.0, -1.5]), 1)   # a prior shift against class 2
    res = blend.score_blends(biased[None], y, np.arange(800) % 5, "f1_macro", "mean", ("thresholds",))
    assert res["final_nested"] > res["blend_nested"] + 0.02


def test_qwk_cutpoints_fitted_on_oof_improve_qwk():
    rng = np.random.default_rng(RNG_SEED)
    z = rng.normal(size=600) * 1.5 + 2
    y = np.clip(np.round(z + rng.normal(size=600) * 0.5), 0, 4).astype(int)
    shrunk = softmax(-(np.arange(5)[None] - (0.5 * z[:, None] + 1)) ** 2, 1)   # pulled to the middle
    res = blend.score_blends(shrunk[None], y, np.arange(600) % 5, "qwk", "mean", calibrate.steps_for("qwk"))
    assert res["steps"] == ["cutpoints"]
    assert res["final_nested"] > res["blend_nested"] + 0.05


def test_switches_pick_the_steps_from_the_metric():
    assert calibrate.steps_for("accuracy") == ()
    assert calibrate.steps_for("logloss") == ("temperature",)
    assert calibrate.steps_for("logloss", calibrate="off") == ()
    assert calibrate.steps_for("f1_macro", thresholds="off") == ()
    assert calibrate.steps_for("accuracy", calibrate="on", thresholds="on") == ("temperature", "thresholds")


# ---------------------------------------------------------------- experiment folders

def _fake_experiment(models, name, probs, y, folds, sha):
    exp = Experiment(models / name)
    exp.dir.mkdir(parents=True)
    exp.config_path.write_text(json.dumps({"experiment": name, "metric": "accuracy", "classes": [0, 1],
                                           "folds_sha256": sha, "n_folds": 2, "model": "m"}))
    for k in np.unique(folds):
        m = folds == k
        rows = ["id,fold,label,pred,prob_0,prob_1"] + [
            f"r{i},{k},{y[i]},{probs[i].argmax()},{probs[i, 0]},{probs[i, 1]}" for i in np.flatnonzero(m)]
        exp.oof(k).write_text("\n".join(rows) + "\n")
        exp.summary_path(k).write_text(json.dumps({"fold": int(k), "seconds": 30.0}))
        exp.checkpoint(k).write_bytes(b"")
    return exp


def test_experiments_on_different_folds_fall_back_to_the_mean_and_say_so(tmp_path):
    logits, y = _sampled(40, 2, 2.0)
    p = softmax(logits, 1)
    folds = np.arange(40) % 2
    a = _fake_experiment(tmp_path, "a", p, y, folds, "sha-a")
    b = _fake_experiment(tmp_path, "b", p[::-1].copy(), y, folds, "sha-b")
    lines = []
    res = blend.from_experiments([a, b], [0, 1], "optimize", log=lines.append)
    assert res["cv"] is None and res["plan"].blend == "mean" and not res["plan"].steps
    assert any("cannot be blended on OOF" in s and "mean" in s for s in lines)


def test_one_finished_fold_gives_in_sample_figures_and_says_there_is_no_nested_cv():
    logits, y = _sampled(200, 3, 2.0)
    p = softmax(logits / 2, 1)
    res = blend.score_blends(np.stack([p, softmax(logits / 3, 1)]), y, np.zeros(200, int), "logloss", "optimize",
                         ("temperature",))
    assert res["blend_nested"] is None and res["final_nested"] is None
    assert res["final_in_sample"] < res["blend_in_sample"]
    assert res["verdicts"] == ["one fold only: no nested CV, the fitted figures are in-sample"]


@pytest.mark.parametrize("mode", ["hill", "optimize"])
def test_plan_round_trips_through_json_and_applies_bit_for_bit(mode):
    """The plan a bundle records is the plan predict.py applied: each experiment's folds combined,
    then the blend, then the post-processing, identical after to_json -> JSON text -> from_json."""
    logits, y = _sampled(120, 3, 2.0)
    rng = np.random.default_rng(1)
    members = [softmax(logits / t + rng.normal(scale=0.5, size=logits.shape), 1) for t in (1.5, 2.0, 3.0)]
    per_exp = np.stack([members[0], (members[1] + members[2]) / 2])
    fitted = blend.fit_plan(per_exp, y, "logloss", mode, ("temperature",))
    plan = blend.Plan(**{**fitted.__dict__, "experiments": ["a", "b"], "members": [("a", 0), ("b", 0), ("b", 1)],
                         "classes": [0, 1, 2]})
    back = blend.Plan.from_json(json.loads(json.dumps(plan.to_json())))
    assert np.array_equal(back.apply(members), plan.apply(members))
    assert np.allclose(plan.apply(members), plan.finish(per_exp))     # folds combined per experiment, not flat
    assert not np.allclose(plan.apply(members), plan.finish(np.stack([np.mean(members, 0)] * 2)))
    with pytest.raises(blend.PlanError, match="names \\['bagging'\\]"):
        blend.Plan.from_json(dict(plan.to_json(), blend="bagging"))


def test_post_processing_verdict_names_its_own_switch_and_ignores_a_tie():
    """A step that worsens nested CV names the switch that turns it off (regression clipping: --clip, not
    --thresholds); one that changes nothing (no prediction beyond the training range) is no overfitting."""
    from foldkit.predict.blend import verdicts
    res = {"metric": "rmse", "blend": "mean", "steps": ["clip"], "singles": {"a": 10.0}, "blend_nested": 10.0}
    [line] = verdicts({**res, "final_nested": 10.5})
    assert line.startswith("post-processing (clip) worsens nested CV") and line.endswith("(--clip off)")
    assert verdicts({**res, "final_nested": 10.0}) == []
