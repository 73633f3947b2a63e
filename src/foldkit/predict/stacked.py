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


def test_rows(fold: StackedFold, comp, log=print) -> np.ndarray:
    """The test rows' table features of a stacked fold, in the order of the test images: built by the training
    side's own function (features.table_matrix: the columns, their --norm-by z-scores within the test table,
    the fold's target encoders)."""
    spec = fold.spec
    path = Path(fold.stacked.get("test_table") or Path(comp.root) / "test.csv")
    ids = comp.test["id"].astype(str).tolist()
    columns = ([spec["norm_by"]] if spec.get("norm_by") else []) + list(spec.get("target_encode", []))
    rows = rows_for_test(read_test_table(path), comp.id_col, ids, spec_features(spec), path, log, tuple(columns))
    return table_matrix(rows, spec, spec.get("encoders"))


def per_member(members: list, images: list, per_image: list, comp, ensemble: str, log=print) -> list:
    """The plan's per-member test predictions: image models' as predicted (per_image, in `images`' order),
    stacked folds' from their trees on the test rows' features (the image predictions combined once per
    stacked experiment, the table's rows once or per fold)."""
    by_path = {str(m.path): p for m, p in zip(images, per_image)}
    image_blocks: dict[str, list] = {}
    table_rows: dict[tuple, np.ndarray] = {}
    out = []
    for m in members:
        if not isinstance(m, StackedFold):
            out.append(by_path[str(m.path)])
            continue
        if m.experiment not in image_blocks:
            image_blocks[m.experiment] = []
            for name in m.spec["members"]:
                preds = [by_path[str(im.path)] for im in m.inputs if im.path.parent.name == name]
                image_blocks[m.experiment].append(combine([np.asarray(p, dtype=np.float64) for p in preds], ensemble)
                                                  .reshape(len(comp.test), -1))
        # the table's rows once per experiment, or per fold when its folds have target encoders of their own
        key = (m.experiment, m.fold if m.spec.get("encoders") else None)
        if key not in table_rows:
            table_rows[key] = test_rows(m, comp, log)
        features = np.concatenate([table_rows[key], *image_blocks[m.experiment]], axis=1)
        pred = apply(m.spec["models"], features, m.task, m.spec["n_classes"], m.spec.get("transform", "none"))
        out.append(pred)
    return out
