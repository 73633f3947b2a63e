"""What a training label is when --task is auto: the evidence the labels give for single-label,
multi-label or regression, and the one line that says what was inferred and which flag overrides it.

Two questions only the labels can answer (see docs/input.md, "What a label is"):

* Text with a separator: tags or class names with spaces? Tags combine freely, so some rows' tag
  sets are the union of two other rows' sets ('clear primary water' = 'clear primary' + 'water');
  the words of single-label class names ('male adult', 'female child') almost never are.
* Integers with many distinct values: a quantity or class ids? AutoGluon's rule first (many distinct
  values for the rows: a quantity), then order: a quantity's neighbouring values have similar
  counts (ages 30 and 31 are about as common), class ids' counts follow no order.

When the evidence is thin either way the reader asks for --task in one line instead of guessing.
"""
from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np
import pandas as pd

from foldkit.data.images import InputError
from foldkit.tags import split_tags, tag_names

LABEL_SEPS = (" ", "|", ";", ",")       # tag separators tried, in this order (--label-sep overrides)
REGRESSION_MIN_DISTINCT = 20            # up to this many distinct numbers: class ids, never a question
TAG_UNIONS = 3                          # tag sets that are unions of two others: tags, not class names
TAG_UNION_SHARE = 0.05                  # ... and at least this share of the multi-tag sets
# AutoGluon's infer_problem_type: integers whose distinct values are more than this share of the rows
# (0.1 up to 1,000 rows, 0.05 above), or more than 1,000 of them, are a quantity
UNIQUE_SHARE_SMALL, UNIQUE_SHARE_LARGE, LARGE_ROWS, MAX_CLASSES = 0.1, 0.05, 1000, 1000
ORDERED_R, UNORDERED_R = 0.5, 0.25      # neighbouring counts' correlation: quantity above, class ids below
MAX_SPAN = 1_000_000                    # integer ranges wider than this are not histogrammed (no order seen)


def guess_sep(text: pd.Series) -> str:
    """The separator of a tags column, or '' when the values do not look like tag sets: the candidate
    found in most rows whose tokens are fewer than the distinct values (tags recur in combinations;
    'golden retriever' / 'toy poodle' class names mostly do not)."""
    best, rows = "", 0
    for sep in LABEL_SEPS:
        has = int(text.str.contains(sep, regex=False).sum())
        if has > rows and len(tag_names(text, sep)) < text.nunique():
            best, rows = sep, has
    return best


def tag_unions(text: pd.Series, sep: str) -> tuple[list, int]:
    """(the distinct tag sets that are the union of two smaller observed sets, as (set, part, part)
    tuples; the number of distinct sets with two or more tags)."""
    sets = {frozenset(t.strip() for t in tags) for tags in split_tags(text, sep)} - {frozenset()}
    holding = defaultdict(list)            # tag -> the sets holding it, to find subsets without n^2
    for s in sets:
        for t in s:
            holding[t].append(s)
    found, multi = [], 0
    for s in sets:
        if len(s) < 2:
            continue
        multi += 1
        subs = {a for t in s for a in holding[t] if a < s}
        pair = next(((a, b) for a, b in itertools.combinations(subs, 2) if a | b == s), None)
        if pair:
            found.append((s, *sorted(pair, key=sorted)))
    return sorted(found, key=lambda f: (len(f[0]), sorted(f[0]))), multi


def tags_or_names(text: pd.Series, sep: str, where: str) -> tuple[str, str]:
    """(task, note) of a text column whose values hold `sep`: multilabel when tags combine (TAG_UNIONS
    sets are unions of others), single-label class names when none do, else one line asking."""
    found, multi = tag_unions(text, sep)
    shown = repr(sep)

    def words(s):
        return sep.join(sorted(s))
    if len(found) >= TAG_UNIONS and len(found) >= TAG_UNION_SHARE * multi:
        s, a, b = found[0]
        return "multilabel", (f"labels read as tags separated by {shown}: {len(found)} of {multi} tag sets are the "
                              f"union of two others (e.g. '{words(s)}' = '{words(a)}' + '{words(b)}'); pass "
                              "--task single if each label is one class")
    if not found:
        return "single", (f"labels with {shown} read as class names, one class a row: no label's words are the "
                          f"union of two other labels' (pass --task multilabel --label-sep {shown} if they are tags)")
    raise InputError(f"{where}: the labels hold {shown}, but only {len(found)} of {multi} word sets are the union of "
                     "two others: tags (multi-label) or class names with spaces? Pass --task multilabel or "
                     "--task single.")


def neighbour_r(y: np.ndarray) -> float:
    """Correlation of the counts of neighbouring values (in steps of the values' common divisor): high
    for a quantity's histogram, about 0 for class ids; 0.0 when it cannot say (flat counts, wide span)."""
    lo = int(y.min())
    step = int(np.gcd.reduce((y - lo).astype(np.int64))) or 1
    pos = (y - lo) // step
    if pos.max() + 1 > MAX_SPAN:
        return 0.0
    c = np.bincount(pos.astype(np.int64)).astype(float)
    if len(c) < 3 or c[:-1].std() == 0 or c[1:].std() == 0:
        return 0.0
    return float(np.corrcoef(c[:-1], c[1:])[0, 1])


def integers_task(y: np.ndarray, where: str) -> tuple[str, str]:
    """(task, note) of integer labels with more than REGRESSION_MIN_DISTINCT distinct values; one line
    asking when AutoGluon's rule and the order of the counts do not settle it."""
    k, n = len(np.unique(y)), len(y)
    if set(y.tolist()) == set(range(k)):      # class ids 0..K-1: single-label as before
        return "single", (f"{k} integer labels 0..{k - 1} read as class ids (pass --task regression if they "
                          "are a quantity)")
    span = f"{k} distinct integers from {int(y.min())} to {int(y.max())} in {n} rows"
    share = UNIQUE_SHARE_LARGE if n > LARGE_ROWS else UNIQUE_SHARE_SMALL
    if k > MAX_CLASSES or k / n > share:
        return "regression", (f"{span}, more distinct values than {share:.0%} of the rows (AutoGluon's rule): "
                              "read as a quantity, regression (pass --task single if they are class ids)")
    r = neighbour_r(y)
    if r >= ORDERED_R:
        return "regression", (f"{span}: neighbouring values have similar counts (r = {r:.2f}), as a quantity's "
                              "do: read as regression (pass --task single if they are class ids)")
    if r < UNORDERED_R:
        return "single", (f"{span}: few distinct values for the rows and counts in no order (r = {r:.2f}): read "
                          "as class ids (pass --task regression if they are a quantity)")
    raise InputError(f"{where}: the labels are {span}, few for the rows (class ids by AutoGluon's rule) but "
                     f"neighbouring values' counts are somewhat alike (r = {r:.2f}): a quantity (an age, a score, "
                     "a count) or class ids? Pass --task regression or --task single.")
