"""A stacked experiment (stack.py, config.json `stacked`) as members of predict.py's plan.

    StackedFold     fold k of a stacked experiment: its trees and feature spec (trees_fold{k}.pkl) and the
                    image models of the experiments it stacks (their members, loaded once per stack)
    load_stacked    the StackedFolds of a stacked experiment, in fold order
    image_members   the image models the test images go through: the plan's own and every stack's inputs,
                    each once (one decode of each test image for all of them)
    per_member      every member's test predictions in the plan's order: an image model's as predicted, a
                    stacked fold's its trees applied to the test rows' features
    test_rows       a stacked fold's table features of the test rows (features.table_matrix, the training
                    side's own function, with the fold's spec and target encoders)

A stacked fold's features of the test rows are built as its OOF features were: the test table's columns
(test.csv, or the --test-table stack.py was given), joined by id in the order of the test images, then
each stacked image experiment's prediction, its folds combined with the plan's --ensemble mode (the fold
ensemble predict.py would submit for it alone, before post-processing, as the OOF features are). The
plan then combines the stacked folds (every fold's trees averaged), blends and post-processes as for any
other experiment.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from foldkit.ensemble import combine
from foldkit.experiment import Experiment, find_experiments
from foldkit.stack.features import read_test_table, rows_for_test, spec_features, table_matrix
from foldkit.stack.stacking import apply


class StackedFold:
    """Fold k of a stacked experiment, standing in the plan where an image model's fold stands."""

    def __init__(self, exp: Experiment, k: int, inputs: list):
        spec = pickle.loads(exp.trees(k).read_bytes())
        cfg = exp.config()
        self.path, self.fold, self.experiment = exp.trees(k), k, exp.name
        self.classes = cfg.get("classes", [])
        self.task = spec["task"]
        self.folds_sha256 = cfg.get("folds_sha256")
        self.stacked = cfg["stacked"]
        self.spec = spec
        self.inputs = inputs          # the Members of the image experiments it stacks, all folds


def load_stacked(exp: Experiment, load_members) -> list[StackedFold]:
    """The folds of a stacked experiment; load_members (predict's) loads the image experiments it stacks."""
    names = exp.config()["stacked"]["members"]
    inputs = load_members(find_experiments(exp.dir.parent, names))
    return [StackedFold(exp, k, inputs) for k in exp.finished_folds()]


def image_members(members: list) -> list:
    """The image models of the plan and of every stacked fold's inputs, each once, in first-seen order."""
    out, seen = [], set()
    for m in members:
        for im in (m.inputs if isinstance(m, StackedFold) else [m]):
            if str(im.path) not in seen:
                seen.add(str(im.path))
                out.append(im)
    return out


def table_path(stacked_record: dict, root) -> Path:
    """The test table of a stacked experiment: the --test-table stack.py was given, else test.csv of the
    competition folder `root`."""
    return Path(stacked_record.get("test_table") or Path(root) / "test.csv")


def test_rows(spec: dict, path: Path, comp, log=print) -> np.ndarray:
    """The test rows' table features of a stacked fold (its spec), in the order of the test images: built by
    the training side's own function (features.table_matrix: the columns, their --norm-by z-scores within
    the test table, the fold's target encoders)."""
    ids = comp.test["id"].astype(str).tolist()
    columns = ([spec["norm_by"]] if spec.get("norm_by") else []) + list(spec.get("target_encode", []))
    rows = rows_for_test(read_test_table(path), comp.id_col, ids, spec_features(spec), path, log, tuple(columns))
    return table_matrix(rows, spec, spec.get("encoders"))


def test_features(spec: dict, path: Path, comp, preds_of, ensemble: str, log=print) -> np.ndarray:
    """The test rows' features of a stacked fold, as its OOF features were built: the test table's columns
    (`path`), then each stacked image experiment's fold ensemble (preds_of(name): its folds' test
    predictions). predict.py and the offline bundle's runners (foldkit.export.bundle) both build them here."""
    blocks = [test_rows(spec, path, comp, log)]
    for name in spec["members"]:
        blocks.append(combine([np.asarray(p, dtype=np.float64) for p in preds_of(name)], ensemble)
                      .reshape(len(comp.test), -1))
    return np.concatenate(blocks, axis=1)


def trees_predict(spec: dict, x: np.ndarray) -> np.ndarray:
    """A stacked fold's trees (its spec's models) on feature rows, in the task's shape."""
    return apply(spec["models"], x, spec["task"], spec["n_classes"], spec.get("transform", "none"))


def feature_key(experiment: str, fold: int, spec: dict) -> tuple:
    """Which stacked folds share their test features: all folds of an experiment, unless its folds have
    target encoders of their own (--target-encode), which encode the test rows per fold."""
    return (experiment, fold if spec.get("encoders") else None)


def per_member(members: list, images: list, per_image: list, comp, ensemble: str, log=print) -> list:
    """The plan's per-member test predictions: image models' as predicted (per_image, in `images`' order),
    stacked folds' from their trees on the test rows' features (built once per stacked experiment, or once
    per fold when its folds have target encoders of their own: feature_key)."""
    by_path = {str(m.path): p for m, p in zip(images, per_image)}
    features: dict[tuple, np.ndarray] = {}
    out = []
    for m in members:
        if not isinstance(m, StackedFold):
            out.append(by_path[str(m.path)])
            continue
        key = feature_key(m.experiment, m.fold, m.spec)
        if key not in features:
            features[key] = test_features(
                m.spec, table_path(m.stacked, comp.root), comp,
                lambda name, m=m: [by_path[str(im.path)] for im in m.inputs if im.path.parent.name == name],
                ensemble, log)
        out.append(trees_predict(m.spec, features[key]))
    return out
