"""What the folds read back from the audit's files (foldkit.audit writes them): audit.json, which says
which competition an audit describes; duplicates.csv, whose clusters stay inside one fold; adversarial.csv,
whose p_test picks the test-like fold 0.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from foldkit.data.copies import CACHE_FILE, cluster_groups, find_duplicates
from foldkit.errors import FoldkitError

DUPLICATES_CSV = "duplicates.csv"
PAIRS_CSV = "pairs.csv"
AUDIT_JSON = "audit.json"
ADVERSARIAL_CSV = "adversarial.csv"
NO_SHIFT_AUC = 0.6        # below: no detectable shift
AUDIT_COMMAND = "python src/audit.py --embed-weights FILE"


class ShiftError(FoldkitError, ValueError):
    """The audit's adversarial validation is missing or describes other images."""


def audit_dir(cfg) -> Path:
    """Where the audit writes (reports/audit/ by default)."""
    return Path(cfg.audit_dir) if getattr(cfg, "audit_dir", "") else Path(cfg.reports_dir) / "audit"


def read_audit(out_dir: str | Path, input_dir: str | Path) -> dict | None:
    """The audit's audit.json when it describes this competition (its `input_dir`), else None: the one
    check every reader of the audit's files (duplicates.csv, adversarial.csv) makes first."""
    info = Path(out_dir) / AUDIT_JSON
    try:
        summary = json.loads(info.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("input_dir") != str(Path(input_dir).resolve()):
        return None
    return summary


def read_clusters(out_dir: str | Path, input_dir: str | Path) -> pd.DataFrame | None:
    """The audit's duplicates.csv when it describes this competition, else None."""
    csv = Path(out_dir) / DUPLICATES_CSV
    if not csv.is_file() or read_audit(out_dir, input_dir) is None:
        return None
    return pd.read_csv(csv, dtype={"id": str, "source": str}, keep_default_na=False)


def to_check_pairs(out_dir: str | Path) -> pd.DataFrame:
    """The audit's feature pairs "to check" (pairs.csv, verdict 'to check': more often look-alikes than
    copies, not in duplicates.csv) as two-row clusters numbered from 0: grouping a look-alike pair
    in one fold costs nothing, splitting a copy inflates CV."""
    try:
        p = pd.read_csv(Path(out_dir) / PAIRS_CSV, dtype={"id_a": str, "id_b": str}, keep_default_na=False)
        p = p[p["verdict"] == "to check"]
    except (OSError, ValueError, KeyError):
        return pd.DataFrame(columns=["cluster", "id", "split"])
    k = np.arange(len(p))
    return pd.DataFrame({"cluster": np.r_[k, k], "id": np.r_[p["id_a"].to_numpy(), p["id_b"].to_numpy()],
                         "split": np.r_[p["split_a"].to_numpy(), p["split_b"].to_numpy()]})


def fold_groups(cfg, table: pd.DataFrame, comp, log=print) -> tuple[np.ndarray | None, dict]:
    """Group labels for StratifiedGroupKFold that keep every train duplicate cluster in one fold
    (joined with --group-col groups), or None when duplicates are not grouped.

    cfg.group_duplicates: None = when an audit of this competition exists; True = always (the
    duplicate search runs now when there is no audit, with the hash cache); False = never."""
    mode = getattr(cfg, "group_duplicates", None)
    if mode is False:
        return None, {"grouped": False, "reason": "--no-group-duplicates"}
    where = audit_dir(cfg)
    clusters = read_clusters(where, cfg.input_dir)
    source = str(where / DUPLICATES_CSV)
    if clusters is not None:          # the pairs to check stay together too, numbered after the clusters
        check = to_check_pairs(where)
        check["cluster"] += int(pd.to_numeric(clusters["cluster"]).max()) + 1 if len(clusters) else 0
        clusters = pd.concat([clusters, check], ignore_index=True)
    if clusters is None:
        if mode is None:
            return None, {"grouped": False, "reason": "no audit of this competition (python src/audit.py)"}
        log("no audit of this competition: searching duplicates now (--group-duplicates; exact and hash copies "
            "only: python src/audit.py --embed-weights FILE also finds mirrored, cropped, recoloured ones)")
        clusters, _, _ = find_duplicates(comp, where / CACHE_FILE, cfg.near_threshold, log=log)
        source = "computed by make_folds"
    groups, n = cluster_groups(table, clusters, cfg.group_col)
    return groups, {"grouped": True, "source": source, "clusters_grouped": n,
                    "rows_in_clusters": int(clusters["id"].isin(table["id"]).sum()) if n else 0}


def test_like_scores(audit: dict | None, audit_dir: str | Path, input_dir: str | Path,
                     ids: pd.Series) -> tuple[np.ndarray, dict]:
    """(p_test of each training id, {source, adversarial_auc}) from the audit's adversarial.csv.
    audit: the audit's audit.json when it describes input_dir (foldkit.audit.duplicates.read_audit), else None.
    Refused in one line, naming the file and the audit to run: no audit of this competition, an
    audit without adversarial validation (no embedding weights, no test images), a missing or foreign
    adversarial.csv, training ids it does not score."""
    where = Path(audit_dir)
    csv = where / ADVERSARIAL_CSV
    if audit is None:
        raise ShiftError(f"--test-like-fold: no audit of {input_dir} in {where} (audit.json): run "
                         f"`{AUDIT_COMMAND}` first (it writes {ADVERSARIAL_CSV})")
    if "auc" not in (audit.get("shift") or {}):
        why = ("it saw no test images: put them in the competition folder, or drop --test-like-fold"
               if not audit.get("test_rows") else "it ran without embedding weights")
        raise ShiftError(f"--test-like-fold: {where / 'audit.json'} has no adversarial validation ({why}); "
                         f"run `{AUDIT_COMMAND}`")
    try:
        t = pd.read_csv(csv, dtype={"id": str}, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise ShiftError(f"--test-like-fold: cannot read {csv} ({type(e).__name__}): run `{AUDIT_COMMAND}` "
                         "again") from None
    if not {"id", "p_test"} <= set(t.columns):
        raise ShiftError(f"--test-like-fold: {csv} has no id and p_test columns (not the audit's file): run "
                         f"`{AUDIT_COMMAND}` again")
    p = pd.Series(pd.to_numeric(t["p_test"], errors="coerce").to_numpy(float), index=t["id"].to_numpy())
    got = p[~p.index.duplicated()].reindex(ids.astype(str).to_numpy())
    missing = got.isna().to_numpy()
    if missing.any():
        raise ShiftError(f"--test-like-fold: {csv} scores no p_test for {int(missing.sum())} of the {len(ids)} "
                         f"training rows (e.g. ids {ids.astype(str)[missing].head(5).tolist()}): it describes "
                         f"other images; run `{AUDIT_COMMAND}` again")
    return got.to_numpy(float), {"source": str(csv), "adversarial_auc": float(audit["shift"]["auc"])}

