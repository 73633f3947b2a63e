"""How the package is put together: no import circles, one owner per name list."""
import ast
import json

import numpy as np
import pandas as pd

from conftest import SRC

PACKAGE = SRC / "foldkit"


def foldkit_imports(path) -> set[str]:
    """The foldkit modules a module imports, at module level or inside a function alike."""
    mods = {p.stem for p in PACKAGE.glob("*.py")}
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "foldkit":
            out |= {a.name for a in node.names if a.name in mods}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("foldkit."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("foldkit.")}
    return out - {path.stem}


def test_foldkit_has_no_import_circles():
    """Rule: module A depends on B when A imports B anywhere, at module level or inside a function
    (a lazy import is still a dependency). The dependency graph of the package must be acyclic."""
    graph = {p.stem: foldkit_imports(p) for p in PACKAGE.glob("*.py")}
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


def test_a_metric_registered_later_is_ranked_in_its_own_direction(tmp_path, monkeypatch):
    """The registry is the one owner of a metric's direction: a metric added to METRICS (a plugin, a
    notebook) picks the best epoch, the report's direction and the blend's sign from its entry."""
    from foldkit import metrics
    from foldkit.report import cv_summary, log_summary

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

    spelled = [f"{p.name}:{line} {t}" for p in sorted(PACKAGE.glob("*.py")) if p.name != "experiment.py"
               for line, t in texts(ast.parse(p.read_text())) if not re.search(r"\s", t) and file_name.search(t)]
    assert not spelled, "experiment file names spelled outside foldkit.experiment: " + "; ".join(spelled)
