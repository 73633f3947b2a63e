"""export.py --push: the bundle onto Kaggle in one command, through the Kaggle CLI.

    check_push(cfg)            the flags, before any work: slugs, --kernel needs --push and --competition
    push_bundle(cfg, folder)   dataset-metadata.json -> `kaggle datasets status` (exists?) ->
                               `kaggle datasets create` or `kaggle datasets version` (--dir-mode zip: the
                               bundle has folders); with --kernel a folder <bundle>-kernel/ holding the
                               bundle's notebook and kernel-metadata.json -> `kaggle kernels push`; then the
                               commands that watch the notebook and submit its output

The kaggle executable is run as a subprocess (the `kaggle` package is not imported, nor needed to export),
so its own credentials apply (`kaggle auth login`, ~/.kaggle/kaggle.json, KAGGLE_USERNAME/KAGGLE_KEY):
the kit never reads, stores or prints them. The CLI's documented arguments are the contract
(github.com/Kaggle/kaggle-api docs/datasets.md, kernels.md, kernels_metadata.md, competitions.md). Every
failure is one line naming the command and the CLI's own message.
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import foldkit
from foldkit.errors import FoldkitError
from foldkit.export.bundle import MANIFEST

SLUG = re.compile(r"[a-z0-9-]{6,50}")
OWNER = re.compile(r"[a-z0-9][a-z0-9_-]*")
COMPETITION = re.compile(r"[a-z0-9][a-z0-9-]*")
NOTEBOOK = "predict_offline.ipynb"
# What the CLI says when it has no credentials: kaggle >= 1.8 ("Authentication required ..."), older
# versions ("OSError: Could not find kaggle.json ..."), and a rejected key (HTTP 401).
NO_CREDENTIALS = ("could not find kaggle.json", "authentication required", "you must log in",
                  "401 client error", "unauthorized")
SETUP = ("set up its credentials: `kaggle auth login`, or an API token from kaggle.com/settings (API) in "
         "~/.kaggle/kaggle.json, or KAGGLE_USERNAME and KAGGLE_KEY in the environment")


class PushError(FoldkitError, ValueError):
    """A push that cannot be done as asked, or a Kaggle CLI call that failed; one line says why."""


def _ref(value: str, flag: str, what: str) -> str:
    """`owner/slug` as Kaggle accepts it: lowercase letters, digits and hyphens, a slug of 6-50 characters."""
    owner, _, slug = value.partition("/")
    if not OWNER.fullmatch(owner) or not SLUG.fullmatch(slug) or slug.strip("-") != slug or "--" in slug:
        raise PushError(f"{flag} {value!r} is not a Kaggle {what}: <owner>/<slug>, lowercase letters, digits and "
                        f"hyphens, a slug of 6-50 characters (e.g. {flag} {value.lower().replace('_', '-')})")
    return value


def check_push(cfg) -> None:
    """Refuse, in one line and before any work, flags that cannot push."""
    if cfg.push:
        _ref(cfg.push, "--push", "dataset")
        if cfg.kaggle_dataset and cfg.kaggle_dataset != cfg.push:
            raise PushError(f"--kaggle-dataset {cfg.kaggle_dataset} and --push {cfg.push} name two datasets: "
                            "give only --push")
    if cfg.kernel or cfg.kernel_gpu:
        if not cfg.push:
            raise PushError("--kernel pushes a notebook that reads the bundle's dataset: add --push <owner>/<slug>")
        if not cfg.kernel:
            raise PushError("--kernel-gpu without --kernel: add --kernel <owner>/<notebook-slug>")
        _ref(cfg.kernel, "--kernel", "notebook")
        if not cfg.competition:
            raise PushError("--kernel needs the competition the notebook reads: add --competition SLUG "
                            "(the last part of its kaggle.com/competitions/<slug> address)")
    if cfg.competition and not COMPETITION.fullmatch(cfg.competition):
        raise PushError(f"--competition {cfg.competition!r} is not a Kaggle competition slug (lowercase letters, "
                        "digits and hyphens, as in kaggle.com/competitions/<slug>)")
    if cfg.bundle and not cfg.push:
        raise PushError("export.py --bundle DIR pushes an existing bundle: add --push <owner>/<slug>")


# --------------------------------------------------------------------------- the CLI

def _one_line(text: str) -> str:
    """The CLI's message in one line: a traceback's last line, else its first line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return "no message"
    line = lines[-1] if any(ln.startswith("Traceback") for ln in lines) else lines[0]
    return line[:300]


def run_kaggle(args: list[str], timeout: float, check_output: bool = True) -> str:
    """`kaggle ARGS` -> its stdout; PushError (one line naming the command) when it cannot run, times
    out, has no credentials, exits non-zero or reports an error on stdout (as `datasets create` does)."""
    name = "kaggle " + " ".join(a for a in args[:2])
    exe = shutil.which("kaggle")
    if not exe:
        raise PushError(f"{name}: the kaggle CLI is not installed: pip install kaggle, then {SETUP}")
    try:
        r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise PushError(f"{name} did not finish in {timeout:g} s (network? a large bundle: raise "
                        f"--kaggle-timeout): {shlex.join(['kaggle', *args])}") from None
    except OSError as e:
        raise PushError(f"{name}: the kaggle CLI could not start ({e}): reinstall it, pip install kaggle") from None
    said = f"{r.stdout}\n{r.stderr}"
    if any(p in said.lower() for p in NO_CREDENTIALS):
        raise PushError(f"{name}: the kaggle CLI has no credentials ({_one_line(r.stderr or r.stdout)}); {SETUP}")
    if r.returncode != 0:
        raise PushError(f"{name} failed (exit {r.returncode}): {_one_line(r.stderr or r.stdout)}")
    # the CLI reports some failures on stdout with exit code 0 ("Dataset creation error: ...", "Kernel push
    # error: ...", "The following are not valid dataset sources ...")
    bad = [ln.strip() for ln in r.stdout.splitlines()
           if check_output and re.search(r"\berror:|not valid (dataset|competition|kernel|model) sources", ln, re.I)]
    if bad:
        raise PushError(f"{name} failed: {bad[0][:300]}")
    return r.stdout


def dataset_exists(ref: str, timeout: float) -> bool:
    """`kaggle datasets status owner/slug`: exits 0 with the dataset's status when it exists; a 404 (not
    found) means it does not. Any other failure is an error."""
    try:
        run_kaggle(["datasets", "status", ref], timeout, check_output=False)   # "error": exists, failed
        return True
    except PushError as e:
        if re.search(r"\b404\b|not found", str(e), re.I) and "credentials" not in str(e):
            return False
        raise


def wait_ready(ref: str, timeout: float, log=print, every: float = 10.0) -> None:
    """Poll `kaggle datasets status` until the new dataset version is processed ("ready"), so the notebook
    pushed next reads it; "error" stops, a deadline of `timeout` seconds says so in one line."""
    deadline = time.monotonic() + timeout
    while True:
        status = run_kaggle(["datasets", "status", ref], timeout, check_output=False).strip().lower()
        if status.endswith("ready") or status.endswith("complete"):
            return
        if status.endswith("error"):
            raise PushError(f"kaggle datasets status {ref}: error: Kaggle could not process the upload; see "
                            f"kaggle.com/datasets/{ref} and push again")
        if time.monotonic() + every > deadline:
            raise PushError(f"kaggle datasets status {ref}: still {status or 'pending'} after {timeout:g} s; push "
                            "the notebook once it is ready (the command below) or raise --kaggle-timeout")
        log(f"dataset {ref}: {status or 'pending'}, waiting")
        time.sleep(every)


# --------------------------------------------------------------------------- metadata

def dataset_title(names: list[str]) -> str:
    """The dataset's title (Kaggle: 6-50 characters)."""
    title = ("foldkit " + " + ".join(names))[:50].strip()
    return title if len(title) >= 6 else title + " bundle"


def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise PushError(f"{folder} is not a foldkit bundle (no {MANIFEST}): write one with "
                        "python src/export.py --out DIR")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PushError(f"{path} is not valid JSON ({e}): re-export the bundle") from None


def write_dataset_metadata(folder: Path, ref: str, man: dict) -> dict:
    """dataset-metadata.json as `kaggle datasets create/version` reads it: id, a 6-50 character title,
    exactly one license."""
    meta = {"title": dataset_title(list(man.get("experiments") or [])), "id": ref,
            "licenses": [{"name": "CC0-1.0"}]}
    (folder / "dataset-metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def kernel_metadata(cfg) -> dict:
    """kernel-metadata.json (Kaggle's kernels_metadata.md): the title resolves to the notebook's slug,
    private, internet off (the CLI's default is on), the bundle's dataset and the competition as sources."""
    title = " ".join(w.capitalize() for w in cfg.kernel.split("/", 1)[1].split("-"))
    return {"id": cfg.kernel, "title": title, "code_file": NOTEBOOK, "language": "python",
            "kernel_type": "notebook", "is_private": "true", "enable_gpu": "true" if cfg.kernel_gpu else "false",
            "enable_internet": "false", "dataset_sources": [cfg.push], "competition_sources": [cfg.competition],
            "kernel_sources": [], "model_sources": []}


def write_kernel_folder(cfg, folder: Path) -> Path:
    """<bundle>-kernel/ beside the bundle: the bundle's notebook and kernel-metadata.json (what
    `kaggle kernels push -p` uploads; push it again from there after editing the notebook)."""
    if not (folder / NOTEBOOK).is_file():
        raise PushError(f"{folder / NOTEBOOK} does not exist: re-export the bundle")
    kdir = folder.parent / f"{folder.name}-kernel"
    ours = {NOTEBOOK, "kernel-metadata.json"}
    if kdir.exists() and (not kdir.is_dir() or {p.name for p in kdir.iterdir()} - ours):
        raise PushError(f"{kdir} exists with other files: move it away (the notebook's folder is written there)")
    kdir.mkdir(exist_ok=True)
    shutil.copyfile(folder / NOTEBOOK, kdir / NOTEBOOK)
    (kdir / "kernel-metadata.json").write_text(json.dumps(kernel_metadata(cfg), indent=2) + "\n")
    return kdir


# --------------------------------------------------------------------------- the whole push

def push_dataset(cfg, folder: Path, man: dict, log=print) -> str:
    """Create the dataset, or a new version of it when `kaggle datasets status` finds it; returns which."""
    write_dataset_metadata(folder, cfg.push, man)
    t = cfg.kaggle_timeout
    exists = dataset_exists(cfg.push, t)
    dirs = ["--dir-mode", "zip"] if any(p.is_dir() for p in folder.iterdir()) else []   # else folders are skipped
    if exists:
        msg = cfg.push_message or (f"foldkit {man.get('foldkit', foldkit.__version__)}: "
                                   f"{' + '.join(man.get('experiments') or [])}, exported {man.get('created', '')}")
        said = run_kaggle(["datasets", "version", "-p", str(folder), "-m", msg, *dirs], t)
    else:
        said = run_kaggle(["datasets", "create", "-p", str(folder), *dirs], t)
    log(f"dataset {cfg.push}: {'new version' if exists else 'created, private'} ({_one_line(said)})")
    return "version" if exists else "create"


def push_kernel(cfg, folder: Path, log=print) -> int | None:
    """The bundle's notebook pushed (and run by Kaggle) once the dataset is ready; its version number."""
    kdir = write_kernel_folder(cfg, folder)
    wait_ready(cfg.push, cfg.kaggle_timeout, log)
    said = run_kaggle(["kernels", "push", "-p", str(kdir)], cfg.kaggle_timeout)
    found = re.search(r"Kernel version (\d+)", said)
    log(f"notebook {cfg.kernel}: pushed and running on {'GPU' if cfg.kernel_gpu else 'CPU'}, internet off, "
        f"reading {cfg.push} and {cfg.competition} ({_one_line(said)})")
    return int(found.group(1)) if found else None


def next_steps(cfg, folder: Path, version: int | None) -> list[str]:
    """The commands that follow: watch the notebook and submit its output, or push a notebook."""
    if not cfg.kernel:
        return [f"next: a notebook that reads it: python src/export.py --bundle {shlex.quote(str(folder))} "
                f"--push {cfg.push} --kernel <owner>/<notebook-slug> --competition <slug> (or add the dataset and "
                "the competition to a notebook on kaggle.com, internet off)"]
    comp = cfg.competition
    submit = ["kaggle", "competitions", "submit", comp, "-k", cfg.kernel, "-f", "submission.csv",
              "-v", str(version or "<version>"), "-m", f"foldkit {cfg.push}"]
    return [f"watch it: kaggle kernels status {cfg.kernel}",
            f"its log and submission.csv when complete: kaggle kernels output {cfg.kernel} "
            f"-p {cfg.kernel.split('/')[1]}/",
            f"submit it (code competition): {shlex.join(submit)}",
            f"  or on kaggle.com/code/{cfg.kernel}: Submit to competition (kaggle CLI versions without -k)"]


def push_bundle(cfg, folder: str | Path, log=print) -> dict:
    """export.py --push: the bundle as a Kaggle dataset, with --kernel its notebook, then what to run next."""
    folder = Path(folder)
    man = _read_manifest(folder)
    action = push_dataset(cfg, folder, man, log)
    version = push_kernel(cfg, folder, log) if cfg.kernel else None
    for line in next_steps(cfg, folder, version):
        log(line)
    return {"dataset": cfg.push, "dataset_action": action, "kernel": cfg.kernel or None, "kernel_version": version}
