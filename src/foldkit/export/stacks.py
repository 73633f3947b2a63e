"""A stacked experiment (stack.py) in the offline bundle: its trees and feature spec written at export, read
back and applied by the bundle's runners.

    write_stacks   each stacked fold of the plan as trees/<exp>__fold<k>.json (the feature spec: the
                   stack's spec minus its models, plus a record of each model) and one file per model:
                   LightGBM's own text model (model_to_string), scikit-learn's HistGradientBoosting
                   through joblib; a fold's --target-encode encoders (scikit-learn's TargetEncoder) through
                   joblib too; the manifest's `boosters` pins the libraries' versions
    check_boosters at prediction time: the booster library importable and (scikit-learn, whose joblib
                   files are only read back by the version that wrote them) the same version; one line if not
    plan_inputs    the per-member predictions the plan applies, in its order: an image model's as a runner
                   predicted it, a stacked fold's its trees on the test rows' features, built by
                   foldkit.predict.stacked.test_features: the one feature builder predict.py uses too

Torch is never imported here: the onnx runner applies the trees as well.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np

from foldkit.errors import FoldkitError
from foldkit.predict.stacked import StackedFold, feature_key, test_features, trees_predict
from foldkit.stack import boost

# the library each booster's files are read with, by import name and distribution name
LIBRARIES = {"lightgbm": ("lightgbm", "lightgbm"), "sklearn": ("sklearn", "scikit-learn"),
             "xgboost": ("xgboost", "xgboost"), "catboost": ("catboost", "catboost")}
# read back only by the version that wrote them (joblib pickles): every library but LightGBM's text model
SAME_VERSION = ("sklearn", "xgboost", "catboost")


class StackBundleError(FoldkitError, ValueError):
    """A bundle's stacked experiment that cannot be applied here; the message says what to do."""


def image_entries(man: dict) -> list[dict]:
    """The manifest's image models the runners predict with, each once: `images` when the plan holds a
    stacked experiment (its members then include the stacked folds), else its members."""
    return man.get("images") or man["members"]


def _version(kind: str) -> str:
    return importlib.import_module(LIBRARIES[kind][0]).__version__


def _dump_model(m: boost.Model, path: Path) -> str:
    """One booster in a file: LightGBM's text model (readable by any later LightGBM); scikit-learn's,
    XGBoost's and CatBoost's estimator with joblib (skops is not a dependency of the kit; joblib comes with
    scikit-learn), read back by the same library version (check_boosters)."""
    if m.kind == "lightgbm":
        path = path.with_suffix(".txt")
        path.write_text(m.model.model_to_string())
    else:
        import joblib   # lazy: only scikit-learn boosters
        path = path.with_suffix(".joblib")
        joblib.dump(m.model, path)
    return path.name


def _load_model(rec: dict, folder: Path) -> boost.Model:
    path = folder / rec["file"]
    if rec["kind"] == "lightgbm":
        import lightgbm as lgb   # lazy: the booster's library, checked by check_boosters
        model = lgb.Booster(model_str=path.read_text())
    else:
        import joblib   # lazy: only scikit-learn boosters
        model = joblib.load(path)
    return boost.Model(rec["kind"], rec["objective"], rec["n_classes"], model, rec["trees"], np.zeros(0),
                       tuple(rec.get("cats", ())))


def _jsonable(v):
    """A spec value JSON cannot hold as is (numpy arrays and numbers) as a list or number."""
    if hasattr(v, "tolist"):
        return v.tolist()
    raise TypeError(f"a stacked experiment's feature spec holds {type(v).__name__}, which a bundle cannot write")


def write_stacks(members: list, folder: Path, slug) -> dict:
    """The plan's stacked folds into folder/trees/. Returns {(experiment, fold): manifest entry}."""
    out = {}
    for m in members:
        if not isinstance(m, StackedFold):
            continue
        stem = f"{slug(m.experiment, 80)}__fold{m.fold}"
        rel = Path("trees") / f"{stem}.json"
        (folder / "trees").mkdir(parents=True, exist_ok=True)
        models = [[{"kind": b.kind, "objective": b.objective, "n_classes": b.n_classes, "trees": b.trees,
                    "cats": [int(c) for c in b.cats],
                    "file": _dump_model(b, folder / "trees" / f"{stem}__seed{s}_label{j}")}
                   for j, b in enumerate(per_label)] for s, per_label in enumerate(m.spec["models"])]
        spec = {**{k: v for k, v in m.spec.items() if k not in ("models", "encoders")}, "models": models}
        if m.spec.get("encoders"):
            import joblib   # lazy: only target-encoded stacks (scikit-learn's encoders)
            spec["encoders_file"] = f"{stem}__encoders.joblib"
            joblib.dump(m.spec["encoders"], folder / "trees" / spec["encoders_file"])
        (folder / rel).write_text(json.dumps(spec, indent=1, default=_jsonable) + "\n")
        table = m.stacked.get("test_table")
        out[(m.experiment, m.fold)] = {
            "experiment": m.experiment, "fold": m.fold, "trees": rel.as_posix(), "booster": m.stacked["booster"],
            "inputs": [[im.path.parent.name, int(im.fold)] for im in m.inputs],
            # the test table the runner reads in the competition folder: test.csv, or the file name of the
            # --test-table stack.py was given (its folder is the training machine's)
            "test_table": Path(table).name if table else "test.csv",
            # scikit-learn reads its encoders back (pinned in `boosters` like its trees)
            "encoders": bool(m.spec.get("encoders"))}
    return out


def boosters(entries) -> dict:
    """The manifest's `boosters`: {library: version} of the stacked folds' boosters (pinned)."""
    kinds = sorted({e["booster"] for e in entries} | ({"sklearn"} if any(e.get("encoders") for e in entries) else set()))
    return {LIBRARIES[k][1]: _version(k) for k in kinds}


def check_boosters(man: dict) -> None:
    """Every booster library of the bundle importable; scikit-learn's the version that wrote its files."""
    for kind, (module, dist) in LIBRARIES.items():
        want = (man.get("boosters") or {}).get(dist)
        if not want:
            continue
        try:
            have = _version(kind)
        except ImportError:
            raise StackBundleError(f"the bundle's stacked experiment needs {dist} {want} (its trees): pip install "
                                   f"{dist}=={want} (on Kaggle it is installed)") from None
        if kind in SAME_VERSION and have != want:
            raise StackBundleError(f"the bundle's trees were written by {dist} {want}, this Python has {have}, "
                                   f"which may read them wrongly: pip install {dist}=={want}, or re-export "
                                   f"the bundle where {dist} is the version the notebook has")


def load_spec(bundle_dir: Path, entry: dict) -> dict:
    path = bundle_dir / entry["trees"]
    spec = json.loads(path.read_text())
    spec["models"] = [[_load_model(rec, path.parent) for rec in per_label] for per_label in spec["models"]]
    if spec.get("encoders_file"):
        import joblib   # lazy: only target-encoded stacks
        spec["encoders"] = joblib.load(path.parent / spec["encoders_file"])
    return spec


def plan_inputs(bundle_dir: Path, man: dict, comp, per_image: list, log=print) -> list:
    """The plan's per-member predictions (what Plan.apply takes) from the image models' (per_image, in
    image_entries' order): a stacked fold's are its trees on its test features (once per experiment, or
    per fold when its folds have target encoders: predict.stacked.feature_key, as predict.py builds them).
    The runner checks the booster libraries first (check_boosters, before any image is predicted)."""
    if "images" not in man:
        return per_image
    by_key = {(e["experiment"], e["fold"]): p for e, p in zip(image_entries(man), per_image)}
    features: dict[tuple, np.ndarray] = {}
    out = []
    for e in man["members"]:
        if "trees" not in e:
            out.append(by_key[(e["experiment"], e["fold"])])
            continue
        spec = load_spec(bundle_dir, e)
        key = feature_key(e["experiment"], e["fold"], spec)
        if key not in features:
            features[key] = test_features(
                spec, Path(comp.root) / e["test_table"], comp,
                lambda name, e=e: [by_key[(x, k)] for x, k in e["inputs"] if x == name],
                man["plan"].ensemble, log)
        out.append(trees_predict(spec, features[key]))
    return out
