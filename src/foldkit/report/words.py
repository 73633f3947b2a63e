"""The report in sentences: the plan, the figures predict.py recorded, the verdicts, the first screen's lines.

Hand-written: a reader sees words and rounded numbers, never a key, a brace or a quote. This module must
not import torch.
"""
from __future__ import annotations

import html
from typing import Any

import numpy as np

from foldkit.metrics import METRICS
from foldkit.oof import humanise, in_words, value_text
from foldkit.report.page import sentence
from foldkit.tasks import TASKS

# the figures predict.py records in `extra` (blend.report_extra and the submission record), in words
_PLAN_SCORES = [("cv_final_nested", "in nested CV (fitted without the scored fold)"),
                ("cv_final_in_sample", "in-sample (fitted on all OOF rows)")]
_BEFORE_POST = [("cv_blend_nested", "nested"), ("cv_blend_in_sample", "in-sample")]
_KNOWN = {"plan", "cv_singles", "cv_rows", "verdicts", "cv_mean_blend", "submission", "test_accuracy",
          "test_score_before_postprocessing", *dict(_PLAN_SCORES), *dict(_BEFORE_POST)}


def _thresholds_in_words(step: Any) -> str:
    """Per-label thresholds in a sentence: how many and their range (each is in the per-label table)."""
    t = step.get("label_thresholds") if isinstance(step, dict) else None
    if not isinstance(t, list) or not t:
        return in_words(step)
    return (f"{len(t)} per-label thresholds from {in_words(min(t), 2)} to {in_words(max(t), 2)}, "
            f"median {in_words(float(np.median(t)), 2)}")


def plan_in_words(plan: dict) -> str:
    """blend.Plan.describe() as a sentence: which experiments, weights, post-processing."""
    weights = plan.get("weights") or {}
    steps = {k: v for k, v in plan.items() if k not in ("blend", "weights")}
    made = (f"the {plan.get('blend', 'mean')} blend of " + ", ".join(f"{n} (weight {w:.3f})" for n, w in weights.items())
            if len(weights) > 1 else f"the fold models of {', '.join(weights) or 'the experiment'}")
    post = "; ".join(f"{humanise(k)} ({_thresholds_in_words(v) if k == 'label_thresholds' else in_words(v)})"
                     for k, v in steps.items())
    return f"{made}, {'post-processed by ' + post if post else 'without post-processing'}"


def facts_in_words(extra: dict, metric: str) -> tuple[list[str], list[str]]:
    """(facts, verdicts) as sentences from cv_scores.json `extra`; a key the page does not know is
    told as `key in words: value in words`, never as JSON."""
    facts, verdicts, f = [], [sentence(v) for v in extra.get("verdicts") or []], in_words
    if "submission" in extra:
        facts.append(f"Submission file {extra['submission']}" + (f", made from {plan_in_words(extra['plan'])}."
                                                                 if "plan" in extra else "."))
    elif "plan" in extra:      # no test images: no submission was written
        facts.append(f"Predictions are made from {plan_in_words(extra['plan'])}.")
    scored = [f"{f(extra[k], 5)} {what}" for k, what in _PLAN_SCORES if extra.get(k) is not None]
    if scored:
        rows = f" on {extra['cv_rows']} OOF rows" if "cv_rows" in extra else ""
        what = "what is submitted" if "submission" in extra else "these predictions"
        facts.append(f"CV {metric} of {what}{rows}: " + ", ".join(scored) + ".")
    if (extra.get("plan") or {}).keys() - {"blend", "weights"}:
        before = [f"{f(extra[k], 5)} {what}" for k, what in _BEFORE_POST if extra.get(k) is not None]
        if before:
            facts.append(f"Before post-processing: {', '.join(before)}.")
    if len(extra.get("cv_singles") or {}) > 1:
        facts.append("Each experiment alone: " + ", ".join(f"{n} {f(v, 5)}" for n, v in extra["cv_singles"].items())
                     + (f"; their plain mean {f(extra['cv_mean_blend'], 5)}" if "cv_mean_blend" in extra else "") + ".")
    for k, v in extra.items():
        if k not in _KNOWN:
            facts.append(sentence(f"{humanise(k)}: {f(v)}"))
    return facts, verdicts


def test_line(r: dict) -> str:
    ts, extra, f = r["test_score"], r.get("extra") or {}, in_words
    if isinstance(ts, dict):
        return f"Test: {f(ts)}."
    more = [f"accuracy {f(extra['test_accuracy'])}"] if "test_accuracy" in extra and r["metric"] != "accuracy" else []
    if "test_score_before_postprocessing" in extra:
        more.append(f"{f(extra['test_score_before_postprocessing'], 5)} without post-processing")
    return (f"Test {r['metric']} on the labelled test images: <b>{f(ts, 5)}</b>"
            + (f" ({', '.join(html.escape(m) for m in more)})" if more else "") + ".")


def what_is_predicted(r: dict) -> str:
    if TASKS[r["task"]].label == "tags":
        return f"{len(r['classes'])} labels (multi-label, {r['tags_per_row']:.2f} tags per row on average)"
    if TASKS[r["task"]].label == "number":
        t = r["target"]
        return f"a numeric target from {value_text(t['min'])} to {value_text(t['max'])} (mean {value_text(t['mean'])})"
    return f"{len(r['classes'])} classes"


def other_scores(r: dict) -> str:
    """The first screen's sentence after the fold scores: single-label accuracy and log loss; the task's
    other metrics on all rows; for regression the mean-target baseline."""
    f = in_words
    if TASKS[r["task"]].exclusive:
        return f"Accuracy {f(r['accuracy'])}, log loss {f(r['logloss'])}."
    told = "On all rows: " + ", ".join(f"{m} {f(v)}" for m, v in r["all_rows"].items()) + "."
    if "mean_baseline" in r:
        base = r["mean_baseline"]
        others = ", ".join(f"{m} {f(v)}" for m, v in base.items() if m != r["metric"])
        told += (f" Predicting the mean target of the other folds scores {r['metric']} {f(base[r['metric']])}"
                 f" ({others}): the baseline to beat.")
    return told


def constant_in_words(r: dict) -> tuple[str, str]:
    """(sentence, warning) of the first screen about the constant answer (cv_scores.json `constant_answer`):
    what it is and scores, and a warning when the CV does not beat it ('' when there is nothing to say). The
    CV compared is what is submitted where predict.py recorded it (the plan's nested CV: post-processing
    such as fitted thresholds included), else the CV on all OOF rows."""
    const, metric, f = r.get("constant_answer") or {}, r["metric"], in_words
    if const.get("value") is None:
        return "", ""
    extra = r.get("extra") or {}
    cv, which = ((extra["cv_final_nested"], "the nested CV of what is submitted")
                 if extra.get("cv_final_nested") is not None else (r.get("cv"), "the CV on all OOF rows"))
    told = ("" if "mean_baseline" in r and const["what"] == "the mean target" else     # regression says it already
            f"The constant answer ({const['what']}, fitted on the other folds) scores {metric} "
            f"{f(const['value'], 5)}: the score to beat.")
    beaten = cv is None or (cv > const["value"] if METRICS[metric].greater_is_better else cv < const["value"])
    warn = "" if beaten else (f"{which[0].upper()}{which[1:]} ({metric} {f(cv, 5)}) does not beat the constant "
                              f"answer ({const['what']}: {f(const['value'], 5)}): the models have learned nothing "
                              "the submission can use.")
    return told, warn
