"""How the package is put together: no import circles, one owner per name list."""
import ast
from pathlib import Path

import numpy as np
import pandas as pd

from conftest import SRC

PACKAGE = SRC / "foldkit"


# The floors of the house, lowest first (docs/ARCHITECTURE.md): a module imports only modules on its own
# floor or below, and never in a circle. The ground floor is the package's top-level modules.
FLOORS = [("ground",), ("runtime",), ("data",), ("folds",), ("stack",), ("predict",), ("train",),
          ("report", "audit", "export"), ("search",), ("cli",)]
FLOOR = {room: i for i, rooms in enumerate(FLOORS) for room in rooms}
# Imported where used, not at the top: optional extras (a missing one is a one-line error when asked for) and
# imports that measurably slow start-up (`--help` must stay instant; the bundle's onnxruntime runner has no torch).
OPTIONAL_OR_SLOW = {"optuna", "onnx", "onnxruntime", "mlflow", "tensorboard", "torch", "torchvision", "timm",
                    "faiss", "matplotlib", "kornia", "sklearn", "scipy", "cleanlab", "imagehash", "psycopg",
                    "nbformat", "openvino", "sqlalchemy", "safetensors", "cv2", "PIL", "tomllib", "tomli",
                    "iterstrat", "setuptools", "lightgbm"}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name below foldkit ("train.fit", "config")."""
    return {".".join(p.relative_to(PACKAGE).with_suffix("").parts): p
            for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}


def room(mod: str) -> str:
    """The subpackage a module lives in; "ground" for the top-level modules, "cli" for foldkit.cli and
    `python -m foldkit` (__main__)."""
    return "cli" if mod in ("cli", "__main__") else mod.split(".")[0] if "." in mod else "ground"


def foldkit_imports(path) -> set[str]:
    """The foldkit modules a module imports, at module level or inside a function alike."""
    mods = set(modules())
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("foldkit"):
            base = node.module[len("foldkit."):] if node.module != "foldkit" else ""
            for a in node.names:
                full = f"{base}.{a.name}" if base else a.name
                out.add(full if full in mods else base)
        elif isinstance(node, ast.Import):
            out |= {a.name[len("foldkit."):] for a in node.names if a.name.startswith("foldkit.")}
    here = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    return {m for m in out if m in mods} - {here}


def test_foldkit_has_no_import_circles():
    """Rule: module A depends on B when A imports B anywhere, at module level or inside a function
    (a lazy import is still a dependency). The dependency graph of the package must be acyclic."""
    graph = {m: foldkit_imports(p) for m, p in modules().items()}
    state: dict[str, int] = {}          # 1: on the current path, 2: done
    circles = []

    def visit(m, path):
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                circles.append(" -> ".join(path[path.index(d):] + [d]))
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, "import circles: " + "; ".join(circles)


def test_imports_go_down_the_floors():
    """A module imports modules of its own floor or the floors below, never above: the ground floor
    (errors, io, metrics, ...) imports no subpackage, data/ never imports train/, and so on."""
    upward = [f"{m} -> {d}" for m, p in sorted(modules().items()) for d in sorted(foldkit_imports(p))
              if FLOOR[room(d)] > FLOOR[room(m)]]
    assert not upward, "imports that go up a floor: " + "; ".join(upward)


def test_subpackages_import_each_other_without_circles():
    """The subpackages of one floor may use each other, but never both ways (report/ <-> audit/)."""
    edges = {(room(m), room(d)) for m, p in modules().items() for d in foldkit_imports(p) if room(m) != room(d)}
    both = sorted(f"{a} <-> {b}" for a, b in edges if (b, a) in edges and a < b)
    assert not both, "subpackages that import each other: " + "; ".join(both)


def test_every_subpackage_says_what_it_owns():
    """Each subpackage's __init__.py opens with a docstring: what it owns and what it may import."""
    bare = [p.parent.name for p in PACKAGE.glob("*/__init__.py")
            if len((ast.get_docstring(ast.parse(p.read_text())) or "").split()) < 12]
    assert not bare, "subpackages without a docstring saying what they own: " + ", ".join(bare)


def test_no_module_is_longer_than_600_lines():
    long = [f"{m} ({n})" for m, p in modules().items() if (n := len(p.read_text().splitlines())) > 600]
    assert not long, "modules over 600 lines: " + ", ".join(long)


def test_no_private_name_is_imported_across_modules():
    """A name starting with _ is its module's own: no other module imports it."""
    private = []
    for m, p in modules().items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("foldkit"):
                private += [f"{m}: {a.name} from {node.module}" for a in node.names if a.name.startswith("_")]
    assert not private, "private names imported across modules: " + "; ".join(private)


def test_imports_sit_at_the_top_of_the_file():
    """Imports inside functions only for optional extras and imports that measurably slow start-up, or with
    the reason on the line as `# lazy: why` (a torch-free path that must not load torch, --help)."""
    inner = []
    for m, p in modules().items():
        source = p.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        in_functions = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                        for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) in in_functions:
                names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                said = "# lazy:" in lines[node.lineno - 1] or "# lazy:" in lines[node.end_lineno - 1]
                if not said and not any(n and n.split(".")[0] in OPTIONAL_OR_SLOW for n in names):
                    inner.append(f"{m}:{node.lineno} {names[0]}")
    assert not inner, f"{len(inner)} imports inside functions: " + "; ".join(inner)


def test_a_metric_registered_later_is_ranked_in_its_own_direction(tmp_path, monkeypatch):
    """The registry is the one owner of a metric's direction: a metric added to METRICS (a plugin, a
    notebook) picks the best epoch, the report's direction and the blend's sign from its entry."""
    from foldkit import metrics
    from foldkit.oof import cv_summary, log_summary

    mae = metrics.Metric(lambda y, p: float(np.abs(p.argmax(1) - y).mean()), False)
    monkeypatch.setitem(metrics.METRICS, "mae", mae)
    assert metrics.is_better("mae", 0.1, 0.2) and not metrics.is_better("mae", 0.3, 0.2)
    oof = pd.DataFrame({"id": ["a", "b"], "fold": [0, 0], "label": [0, 1], "pred": [0, 0],
                        "prob_0": [0.9, 0.6], "prob_1": [0.1, 0.4]})
    assert cv_summary(oof, [0, 1], "mae")["greater_is_better"] is False
    pd.DataFrame({"epoch": [1, 2, 3], "train_loss": 1.0, "valid_loss": 1.0, "valid_accuracy": 0.5,
                  "valid_metric": [0.5, 0.2, 0.4], "lr": 0.1, "seconds": 1.0}).to_csv(tmp_path / "log_fold0.csv")
    logs, problems = log_summary(tmp_path, "mae")
    assert not problems and logs.loc[0, "best_epoch"] == 2


def test_experiment_file_names_are_spelled_only_by_the_experiment_module():
    """models/<exp>/ file names (config.json, fold{k}.pt, oof_fold{k}.csv, ...) are a contract with one
    owner, foldkit.experiment: every other module asks an Experiment for them. Names inside messages
    (text with spaces) are not paths and do not count."""
    import re

    file_name = re.compile(r"(^|[^\w])(oof_|log_|curve_)?fold(\{\}|\(\\d\+\)|\\d|\*)(_last)?\\?\.(pt|json|csv|png)"
                           r"|config\.json")

    def texts(tree):                   # string constants, an f-string as one text with {} for its fields
        parts = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                parts |= {id(v) for v in node.values}
                yield node.lineno, "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in parts:
                yield node.lineno, node.value

    spelled = [f"{p.name}:{line} {t}" for p in sorted(PACKAGE.rglob("*.py")) if p.name != "experiment.py"
               for line, t in texts(ast.parse(p.read_text())) if not re.search(r"\s", t) and file_name.search(t)]
    assert not spelled, "experiment file names spelled outside foldkit.experiment: " + "; ".join(spelled)
