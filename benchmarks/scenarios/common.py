"""Shared code of the tutorial scenarios: raw-file readers, the kit runner, result lines, RESULTS.md.

A scenario builds a competition folder from the raw files of ../shared/data/ into a scratch
folder, runs the kit's own command-line tools on it (make_folds.py -> train.py -> predict.py,
each in a subprocess with this interpreter), reads the scores the kit wrote
(reports/<experiment>/cv_scores.json) and prints one result line per model:

    RESULT dataset=mnist model=test_resnet@28px folds=2/5 rows=60000/60000 epochs=12 wall=640s
           cv_accuracy=0.99250 test_accuracy=0.99310 ref='Keras MLP 98.40%'   (one line)

With --record the line(s) are appended to benchmarks/RESULTS.md with the exact command, the
machine, the date and the kit commit. Nothing here imports torch at module level (--help is
instant); the figures all come from the kit's output files.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gzip
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
WEIGHTS = SHARED / "weights"
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
MARKER = ".foldkit-scenario"          # written into scratch folders this code may empty again
KIT_DIRS = ("input", "folds", "models", "submissions", "reports")

# idx type codes (http://yann.lecun.com/exdb/mnist/, "the IDX file format"): big-endian data
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


# --------------------------------------------------------------------------- raw files

def read_idx(path: str | Path) -> np.ndarray:
    """An idx file (.gz or plain) as a numpy array: (N,H,W) images or (N,) labels.

    Header: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then each
    dimension as a big-endian uint32 (16 bytes in all for images, 8 for labels), then the data.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an idx file (magic bytes {raw[:4].hex()})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    head = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = head + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: {len(raw)} bytes, but a {dims} {dtype} idx file has {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=head).reshape(dims).astype(dtype.newbyteorder("="))


def subset(n: int, limit: int = 0, seed: int = 0) -> np.ndarray:
    """Row indices of a scenario's data slice: all rows in file order, or `limit` rows drawn at
    random (seeded, kept in file order), so no slice depends on how a file happens to be sorted."""
    if not limit or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


def read_idx_splits(raw_dir: str | Path, names: tuple, limit: int = 0) -> tuple:
    """(x_train, y_train, x_test, y_test) from four idx files (train images, train labels, test
    images, test labels), each split cut to `limit` rows by `subset`."""
    raw = Path(raw_dir)
    x_tr, y_tr, x_te, y_te = (read_idx(raw / n) for n in names)
    tr, te = subset(len(x_tr), limit), subset(len(x_te), limit)
    return x_tr[tr], y_tr[tr], x_te[te], y_te[te]


def idx_to_numpy_layout(raw_dir: str | Path, names: tuple, out_dir: str | Path, limit: int = 0) -> Path:
    """The kit's numpy layout written from four idx files (see read_idx_splits)."""
    x_tr, y_tr, x_te, y_te = read_idx_splits(raw_dir, names, limit)
    return write_numpy_layout(out_dir, x_tr, y_tr.astype("int64"), x_te, y_te.astype("int64"))


def write_numpy_layout(out_dir: str | Path, x_train, y_train, x_test=None, y_test=None) -> Path:
    """The kit's numpy layout: x_train.npy, y_train.npy, x_test.npy, y_test.npy (test labels:
    the kit scores its test predictions with them)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    for name, a in arrays.items():
        if a is not None:
            np.save(out / f"{name}.npy", np.ascontiguousarray(a))
    return out


# --------------------------------------------------------------------------- command line

def scenario_parser(doc: str, dataset: str, raw_subdir: str = "") -> argparse.ArgumentParser:
    """The options every scenario has; a scenario adds its own. raw_subdir: the raw files'
    folder under ../shared/data/ (default: the dataset's name)."""
    raw_subdir = raw_subdir or dataset
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("budget", "full"), default="budget",
                   help="budget: a subset / fewer folds / fewer epochs, <= 15 min on 2 CPU cores; "
                        "full: all data, 5 folds, more epochs (meant for a GPU) (default: budget)")
    p.add_argument("--work", metavar="DIR", default="",
                   help="scratch folder for input/, folds/, models/, submissions/, reports/ "
                        "(default: a temporary folder, removed at the end unless --keep)")
    p.add_argument("--keep", action="store_true", help="keep the temporary scratch folder")
    p.add_argument("--record", action="store_true",
                   help=f"append the result line(s) to {RESULTS_MD.relative_to(REPO)}")
    p.add_argument("--data-dir", metavar="DIR", default=str(DATA / raw_subdir),
                   help=f"raw files (default: ../shared/data/{raw_subdir} beside the repository)")
    p.add_argument("--device", default="auto", help="passed to train.py/predict.py (default: auto)")
    return p


def check_raw(data_dir: str | Path, *names: str) -> Path:
    d = Path(data_dir)
    missing = [n for n in names if not (d / n).exists()]
    if missing:
        raise SystemExit(f"error: raw files missing in {d}: {', '.join(missing)} "
                         "(see ../shared/data/README.md, or pass --data-dir)")
    return d


class Workspace:
    """The scratch folder. A given --work DIR must be empty, new, or one this code made before
    (it then empties only the kit's folders inside it)."""

    def __init__(self, work: str, keep: bool, name: str):
        self.temporary = not work
        self.keep = keep
        if self.temporary:
            self.root = Path(tempfile.mkdtemp(prefix=f"foldkit-{name}-"))
        else:
            self.root = Path(work).resolve()
            if self.root.exists() and any(self.root.iterdir()) and not (self.root / MARKER).exists():
                raise SystemExit(f"error: --work {self.root} is not empty and was not made by a scenario "
                                 f"(no {MARKER} file): choose a new or empty folder")
            self.root.mkdir(parents=True, exist_ok=True)
            for d in KIT_DIRS:
                if (self.root / d).exists():
                    shutil.rmtree(self.root / d)
        (self.root / MARKER).write_text("scratch folder of benchmarks/scenarios; its contents may be deleted\n")
        self.input = self.root / "input"
        self.folds = self.root / "folds"
        self.models = self.root / "models"
        self.submissions = self.root / "submissions"
        self.reports = self.root / "reports"

    def paths(self, input_dir: Path | None = None, folds_dir: Path | None = None) -> list[str]:
        """Every path flag of the kit, under the scratch folder."""
        return ["--input-dir", str(input_dir or self.input), "--folds-dir", str(folds_dir or self.folds),
                "--models-dir", str(self.models), "--submissions-dir", str(self.submissions),
                "--reports-dir", str(self.reports)]

    def close(self) -> None:
        if self.temporary and not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            print(f"scratch folder kept: {self.root}", flush=True)


# --------------------------------------------------------------------------- running the kit

def kit(script: str, *args: str) -> float:
    """Run src/<script> with this interpreter from the repository root; stream its output;
    return its wall time. A failure stops the scenario with the command and its exit status."""
    cmd = [sys.executable, str(SRC / script), *map(str, args)]
    print("$ " + shlex.join(["python", f"src/{script}", *map(str, args)]), flush=True)
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, cwd=REPO).returncode
    dt = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"error: src/{script} exited with status {rc} after {dt:.0f}s "
                         f"(command: {shlex.join(cmd)})")
    return dt


def read_scores(reports_dir: Path, experiment: str) -> dict:
    path = Path(reports_dir) / experiment / "cv_scores.json"
    if not path.is_file():
        raise SystemExit(f"error: predict.py wrote no {path}")
    return json.loads(path.read_text())


@dataclass
class Result:
    dataset: str
    model: str                # e.g. test_resnet@28px, mobilenetv2_100@224px+imagenet
    n_folds: int
    folds: list               # folds trained (from cv_scores.json)
    rows: int                 # training rows used (make_folds --limit)
    rows_total: int
    epochs: int
    wall_s: float             # data build + make_folds + train + predict, measured here
    metric: str
    cv: float | None
    test: float | None
    reference: str = ""
    complete: bool = False
    extra: dict = field(default_factory=dict)

    def line(self) -> str:
        f = lambda v: "n/a" if v is None else f"{v:.5f}"   # noqa: E731
        parts = [f"dataset={self.dataset}", f"model={self.model}",
                 f"folds={len(self.folds)}/{self.n_folds}", f"rows={self.rows}/{self.rows_total}",
                 f"epochs={self.epochs}", f"wall={self.wall_s:.0f}s",
                 f"cv_{self.metric}={f(self.cv)}", f"test_{self.metric}={f(self.test)}"]
        if self.reference:
            parts.append(f"ref={self.reference!r}")
        return "RESULT " + " ".join(parts)

    def row(self) -> str:
        """The markdown table row of RESULTS.md."""
        pct = lambda v: "n/a" if v is None else f"{100 * v:.2f}%"   # noqa: E731
        folds = ",".join(map(str, self.folds))
        return (f"| {self.dataset} | {self.model} | {folds} of {self.n_folds} | {self.rows:,} of {self.rows_total:,} "
                f"| {self.epochs} | {fmt_seconds(self.wall_s)} | {pct(self.cv)} | {pct(self.test)} "
                f"| {self.reference or '-'} |")


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def run_pipeline(ws: Workspace, *, dataset: str, experiment: str, model_label: str, n_folds: int,
                 limit: int, train_folds: str, epochs: int, train_args: list[str], predict_args: list[str] = (),
                 reference: str = "", t_start: float | None = None, make_folds: bool = True,
                 device: str = "auto") -> Result:
    """make_folds -> train -> predict with explicit paths and experiment; the Result from
    the kit's cv_scores.json. Wall time runs from t_start (default: now)."""
    t0 = time.perf_counter() if t_start is None else t_start
    if make_folds:
        kit("make_folds.py", *ws.paths(), "--n-folds", str(n_folds), "--limit", str(limit))
    kit("train.py", *ws.paths(), "--experiment", experiment, "--fold", train_folds, "--epochs", str(epochs),
        "--device", device, "--no-progress", *train_args)
    kit("predict.py", *ws.paths(), "--experiments", experiment, "--device", device, "--no-progress",
        *predict_args)
    wall = time.perf_counter() - t0
    scores = read_scores(ws.reports, experiment)
    meta = json.loads((ws.folds / "folds_meta.json").read_text())
    return Result(dataset=dataset, model=model_label, n_folds=n_folds, folds=scores.get("folds", []),
                  rows=int(meta.get("rows", 0)), rows_total=int(meta.get("rows_read", 0)), epochs=epochs,
                  wall_s=wall, metric=scores.get("metric", "?"), cv=scores.get("cv"),
                  test=scores.get("test_score"), reference=reference, complete=bool(scores.get("complete")),
                  extra={"cv_mean": scores.get("cv_mean"), "cv_std": scores.get("cv_std"),
                         "fold_scores": scores.get("fold_scores")})


# --------------------------------------------------------------------------- provenance

def machine() -> str:
    """GPU name (torch.cuda) when one is used, else the CPU model from /proc/cpuinfo."""
    gpu = ""
    try:
        import torch
        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001
        pass
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or platform.machine()
    cpu = f"{cpu or 'unknown CPU'}, {os.cpu_count()} cores"
    return f"{gpu} (host: {cpu})" if gpu else cpu


def kit_commit() -> str:
    """`git rev-parse --short HEAD`, marked when src/ differs from that commit."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=REPO, capture_output=True,
                               text=True).stdout.strip()
        return sha + (" (src/ with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def versions() -> str:
    try:
        import timm
        import torch
        return f"torch {torch.__version__}, timm {timm.__version__}, Python {platform.python_version()}"
    except Exception:  # noqa: BLE001
        return f"Python {platform.python_version()}"


def this_command() -> str:
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(REPO)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])


RESULTS_HEADER = """# Scenario results

Measured by `benchmarks/scenarios/*.py --record` (one section per run, appended; never edited by
hand). Each scenario builds a competition from the raw public files of `../shared/data/`, runs
`make_folds.py -> train.py -> predict.py` and reads the scores from the kit's
`reports/<experiment>/cv_scores.json`. CV = accuracy over the out-of-fold rows of the folds
trained; test = accuracy of the fold ensemble's submission on the held-out test set. Wall time =
data build + make_folds + train + predict, measured by the script (only meaningful on an otherwise
idle machine: see the load average). Budget mode trains on a subset and/or fewer folds (see the
"folds trained" and "training rows" columns) on CPU; full mode is all data and 5 folds. Reference
figures are the published ones quoted in `../shared/data/README.md` (Kannada: the dataset's paper).
"""


def record(results: list[Result], mode: str, total_s: float, notes: str = "") -> None:
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines = [f"\n## {results[0].dataset} ({mode}), {now}\n",
             f"- command: `{this_command()}`",
             f"- machine: {machine()}; {versions()}",
             f"- kit commit: {kit_commit()}",
             f"- script wall time: {fmt_seconds(total_s)}; load average at the end (1/5/15 min): "
             + ", ".join(f"{v:.2f}" for v in os.getloadavg())]
    if notes:
        lines.append(f"- notes: {notes}")
    lines += ["", "| dataset | model | folds trained | training rows | epochs | wall time | CV accuracy | "
              "test accuracy | reference |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [r.row() for r in results]
    lines += ["", "```"] + [r.line() for r in results] + ["```", ""]
    text = "\n".join(lines)
    if not RESULTS_MD.exists():
        RESULTS_MD.write_text(RESULTS_HEADER)
    with open(RESULTS_MD, "a") as f:
        f.write(text)
    print(f"recorded in {RESULTS_MD.relative_to(REPO)}", flush=True)


def finish(results: list[Result], args, t_start: float, notes: str = "") -> None:
    """Print the result line(s); append them to RESULTS.md with --record."""
    total = time.perf_counter() - t_start
    print(f"scenario wall time: {fmt_seconds(total)}", flush=True)
    for r in results:
        print(r.line(), flush=True)
    if args.record:
        record(results, args.mode, total, notes)


# --------------------------------------------------------------------------- one-model scenarios

def main_single(argv, *, doc: str, dataset: str, raw_subdir: str, raw_names: tuple, build, modes: dict,
                reference: str, what: str = "") -> list[Result]:
    """The whole of a one-model scenario: parse the options, build the competition, run the
    kit, print (and with --record append) the result line.

    modes: {"budget": {...}, "full": {...}} with n_folds, limit (make_folds --limit, 0 = all),
    folds (train.py --fold), epochs, model, img (px), args (more train.py flags)."""
    args = scenario_parser(doc, dataset, raw_subdir).parse_args(argv)
    raw = check_raw(args.data_dir, *raw_names)
    m = modes[args.mode]
    t0 = time.perf_counter()
    ws = Workspace(args.work, args.keep, dataset)
    try:
        print(f"building {what or dataset} in {ws.input}", flush=True)
        build(raw, ws.input)
        result = run_pipeline(
            ws, dataset=dataset, experiment=f"{dataset}-{m['model']}-{args.mode}",
            model_label=f"{m['model']}@{m['img']}px", n_folds=m["n_folds"], limit=m["limit"],
            train_folds=m["folds"], epochs=m["epochs"],
            train_args=["--model", m["model"], "--no-pretrained", "--img-size", str(m["img"]), *m["args"]],
            reference=reference, t_start=t0, device=args.device)
    finally:
        ws.close()
    finish([result], args, t0)
    return [result]
