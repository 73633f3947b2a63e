"""Every default of the kit in one place, plus config-file and CLI overrides.

A setting is a dataclass field with a help text and the group it belongs to.
Each script asks for the groups it uses (`build_parser(["data", "folds"])`),
so `--help` documents every option a script takes, and `resolve()` applies the
precedence  defaults < config file (TOML) < command line.

This module must not import torch: it keeps `--help` instant.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

# The repository root: default paths live under it, whatever the working directory.
ROOT = Path(__file__).resolve().parents[2]


def _opt(default: Any, help: str, group: str, choices: list | None = None, nargs: str | None = None):
    return field(default=default, metadata={"help": help, "group": group, "choices": choices, "nargs": nargs})


@dataclass
class Config:
    # ---- paths (every path can be changed by a flag or the config file) ----
    input_dir: str = _opt(str(ROOT / "input"), "competition folder (any of the four layouts, see README)", "paths")
    folds_dir: str = _opt(str(ROOT / "folds"), "where train_folds.csv and folds_meta.json live", "paths")
    models_dir: str = _opt(str(ROOT / "models"), "experiments folder: models/<experiment>/fold{k}.pt ...", "paths")
    submissions_dir: str = _opt(str(ROOT / "submissions"), "where submission CSVs are written", "paths")
    reports_dir: str = _opt(str(ROOT / "reports"), "where reports/<experiment>/ are written", "paths")

    # ---- reading the competition ----
    id_col: str = _opt("", "id/filename column of train.csv (default: auto-detect)", "data")
    label_col: str = _opt("", "label column of train.csv (default: auto-detect)", "data")
    image_ext: str = _opt("", "extension added to ids that have none (default: inferred from train/)", "data")
    skip_bad_images: bool = _opt(False, "drop missing/empty/truncated/non-image files (prints which) instead of stopping", "data")

    # ---- folds ----
    n_folds: int = _opt(5, "number of cross-validation folds", "folds")
    seed: int = _opt(42, "random seed (folds; training seeds derive from it and the fold)", "folds")
    group_col: str = _opt("", "column of train.csv whose groups must not span folds (StratifiedGroupKFold)", "folds")
    limit: int = _opt(0, "keep a stratified subsample of N training rows (0 = all)", "folds")
    force: bool = _opt(False, "replace a folds file that trained models depend on", "folds")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


GROUP_TITLES = {
    "paths": "paths",
    "data": "reading the competition",
    "folds": "cross-validation folds",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser(groups: list[str], description: str, prog: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one option per Config field of `groups`.

    Defaults are suppressed so `resolve` can tell what the user typed; the help
    text still shows each default.
    """
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--config", metavar="FILE.toml", help="TOML file of settings (flat keys or [sections]); "
                   "command-line flags override it", default=argparse.SUPPRESS)
    for g in groups:
        ag = p.add_argument_group(GROUP_TITLES.get(g, g))
        for f in fields(Config):
            if f.metadata["group"] != g:
                continue
            shown = f.default
            if isinstance(shown, str) and shown.startswith(str(ROOT)):
                shown = "<repo>" + shown[len(str(ROOT)):]
            kw: dict[str, Any] = {"help": f.metadata["help"] + f" (default: {shown!r})"}
            if isinstance(f.default, bool):
                kw["action"] = argparse.BooleanOptionalAction
            else:
                kw["type"] = type(f.default) if f.default is not None else str
                if f.metadata["choices"]:
                    kw["choices"] = f.metadata["choices"]
                if f.metadata["nargs"]:
                    kw["nargs"] = f.metadata["nargs"]
            ag.add_argument(_flag(f.name), dest=f.name, **kw)
    return p


def load_file(path: str | Path) -> dict:
    """Read a TOML config file into a flat dict of Config fields ([sections] are flattened)."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"error: config file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SystemExit(f"error: config file {path} is not valid TOML: {e}")
    flat: dict[str, Any] = {}
    for k, v in raw.items():
        if isinstance(v, dict):
            flat.update(v)
        else:
            flat[k] = v
    return flat


def resolve(args: argparse.Namespace | dict | None = None, **overrides) -> Config:
    """Defaults < config file (args.config) < explicitly given args < overrides."""
    given = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args or {})
    values: dict[str, Any] = {}
    cfg_file = given.pop("config", None)
    if cfg_file:
        values.update(load_file(cfg_file))
    values.update(given)
    values.update(overrides)
    known = {f.name: f for f in fields(Config)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise SystemExit(f"error: unknown setting(s) {', '.join(unknown)}"
                         + (f" in {cfg_file}" if cfg_file else "") + "; see --help for the valid names")
    for k, v in list(values.items()):
        d = known[k].default
        if isinstance(d, bool) and not isinstance(v, bool):
            raise SystemExit(f"error: setting {k} must be true or false, got {v!r}")
        if isinstance(d, float) and isinstance(v, int) and not isinstance(v, bool):
            values[k] = float(v)
        if isinstance(d, (list, tuple)) and isinstance(v, (list, tuple)):
            values[k] = type(d)(v)
    return Config(**values)


def save(cfg: Config | dict, path: str | Path) -> None:
    from foldkit.io import atomic_write_text
    d = cfg.to_dict() if isinstance(cfg, Config) else cfg
    atomic_write_text(path, json.dumps(d, indent=2, sort_keys=True) + "\n")
