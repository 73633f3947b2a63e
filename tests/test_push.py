"""export.py --push: the bundle onto Kaggle through the kaggle CLI, against a stand-in `kaggle` placed first on
PATH that records its arguments and the files it was given, checks the metadata as the real CLI does
(kaggle-api's datasets_metadata.md, kernels_metadata.md and its own checks) and answers as it does, errors
included. Nothing here reaches the network."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

STAND_IN = r'''#!{python}
"""A stand-in for the Kaggle CLI: kaggle datasets status/create/version, kernels push."""
import argparse, json, os, re, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
state = json.loads((HERE / "state.json").read_text())


def record(entry):
    with open(HERE / "record.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")


def fail(msg):                       # the real CLI: a ValueError's message on stderr, exit code 1
    print(msg, file=sys.stderr)
    sys.exit(1)


def slugify(text):
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


def as_bool(meta, key):
    v = meta.get(key)
    if v is not None and not isinstance(v, bool) and str(v).lower() not in ("true", "false"):
        fail("Invalid boolean value: " + str(v))


def check_dataset(meta):
    owner, _, slug = meta["id"].partition("/")
    if len(meta.get("licenses", [])) != 1:
        fail("Please specify exactly one license")
    if not 6 <= len(slug) <= 50:
        fail("The dataset slug must be between 6 and 50 characters")
    if not 6 <= len(meta["title"]) <= 50:
        fail("The dataset title must be between 6 and 50 characters")


def check_kernel(folder, meta):
    if len(meta.get("title", "")) < 5:
        fail("Title must be at least five characters")
    if not (folder / meta.get("code_file", "")).is_file():
        fail("Source file not found: " + str(folder / meta.get("code_file", "")))
    if slugify(meta["title"]) != meta["id"].split("/")[1]:
        fail("Your kernel title does not resolve to the specified id.")
    if meta.get("language") not in ("python", "r", "rmarkdown"):
        fail("A valid language must be specified in the metadata.")
    if meta.get("kernel_type") not in ("script", "notebook"):
        fail("A valid kernel type must be specified in the metadata.")
    for key in ("is_private", "enable_gpu", "enable_internet"):
        as_bool(meta, key)
    for ref in meta.get("dataset_sources", []):
        if len(ref.split("/")) != 2:
            fail("Invalid dataset specification: " + ref)


record({"argv": sys.argv[1:]})
if state["mode"] == "sleep":
    time.sleep(60)
if state["mode"] == "no-credentials":     # kaggle < 1.8: the config check at import, as a traceback
    print("Traceback (most recent call last):\n  File \"kaggle\", line 5, in <module>\n"
          "    api.authenticate()\nOSError: Could not find kaggle.json. Make sure it's located in "
          "/home/someone/.kaggle. Or use the environment method. See setup instructions at "
          "https://github.com/Kaggle/kaggle-api/", file=sys.stderr)
    sys.exit(1)
if state["mode"] == "no-credentials-new":  # kaggle >= 1.8: the help text on stdout
    print("Authentication required to call the Kaggle API.\n\nFirst, you will need a Kaggle account.")
    sys.exit(1)

p = argparse.ArgumentParser(prog="kaggle")
sub = p.add_subparsers(dest="group")
d = sub.add_parser("datasets").add_subparsers(dest="cmd")
st = d.add_parser("status")
st.add_argument("dataset")
for name in ("create", "version"):
    c = d.add_parser(name)
    c.add_argument("-p", "--path", default=".")
    c.add_argument("-r", "--dir-mode", choices=["skip", "zip", "tar"], default="skip")
    c.add_argument("-q", "--quiet", action="store_true")
    c.add_argument("-t", "--keep-tabular", action="store_true")
    if name == "create":
        c.add_argument("-u", "--public", action="store_true")
    else:
        c.add_argument("-m", "--message", required=True)
        c.add_argument("-d", "--delete-old-versions", action="store_true")
k = sub.add_parser("kernels").add_subparsers(dest="cmd")
kp = k.add_parser("push")
kp.add_argument("-p", "--path", default=".")
kp.add_argument("-t", "--timeout")
a = p.parse_args()

if a.cmd == "status":
    if a.dataset in state["datasets"]:
        print("ready")
        sys.exit(0)
    print("404 Client Error: Not Found for url: https://api.kaggle.com/v1/datasets.DatasetApiService/"
          "GetDatasetStatus\n\nThe resource was not found. Check the spelling of the reference you passed.",
          file=sys.stderr)
    sys.exit(1)
folder = Path(a.path)
meta_name = "kernel-metadata.json" if a.group == "kernels" else "dataset-metadata.json"
if not (folder / meta_name).is_file():
    fail("Metadata file not found: " + str(folder / meta_name))
meta = json.loads((folder / meta_name).read_text())
files = sorted(str(f.relative_to(folder)) for f in folder.rglob("*") if f.is_file())
record({"argv": sys.argv[1:], "files": files, "metadata": meta})
if a.group == "kernels":
    check_kernel(folder, meta)
    if state["mode"] == "kernel-error":   # the real CLI says it on stdout and exits 0
        print("Kernel push error: Notebook not found")
        sys.exit(0)
    print(f"Kernel version 3 successfully pushed.  Please check progress at https://www.kaggle.com/code/{meta['id']}")
    sys.exit(0)
check_dataset(meta)
if a.cmd == "create":
    if meta["id"] in state["datasets"]:
        print("Dataset creation error: The requested title is already in use")
        sys.exit(0)
    state["datasets"].append(meta["id"])
    (HERE / "state.json").write_text(json.dumps(state))
    print(f"Your private Dataset is being created. Please check progress at https://www.kaggle.com/{meta['id']}")
else:
    print(f"Dataset version is being created. Please check progress at https://www.kaggle.com/{meta['id']}")
'''

DATASET = "someone/tiny-bundle"
KERNEL = "someone/tiny-notebook"


def _kaggle(tmp_path, mode="ok", datasets=()):
    """The stand-in `kaggle` in tmp_path/bin; its state and record beside it."""
    (tmp_path / "bin").mkdir(exist_ok=True)
    exe = tmp_path / "bin" / "kaggle"
    exe.write_text(STAND_IN.replace("{python}", sys.executable))
    exe.chmod(0o755)
    (tmp_path / "state.json").write_text(json.dumps({"mode": mode, "datasets": list(datasets)}))
    return tmp_path


def _calls(tmp_path) -> list[dict]:
    path = tmp_path / "record.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _env(tmp_path, path=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    return dict(env, PATH=path if path is not None else f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")


def _export(tmp_path, args, path=None, timeout=120):
    return subprocess.run([sys.executable, str(REPO / "src" / "export.py"), *args], capture_output=True,
                          text=True, timeout=timeout, env=_env(tmp_path, path))


def _fake_bundle(tmp_path):
    """A folder shaped like a bundle (what push reads and uploads), without the minutes of a real export."""
    b = tmp_path / "bundle"
    for rel, text in {"foldkit_bundle.json": json.dumps({"experiments": ["tiny"], "foldkit": "0.1",
                                                          "created": "2025-01-01T00:00:00+00:00"}),
                      "checkpoints/tiny__fold0.pt": "weights", "wheels/foldkit-0.1-py3-none-any.whl": "wheel",
                      "predict_offline.py": "print()", "predict_offline.ipynb": '{"cells": []}',
                      "README.md": "#"}.items():
        (b / rel).parent.mkdir(parents=True, exist_ok=True)
        (b / rel).write_text(text)
    return b


def _one_line_error(r, *words):
    assert r.returncode == 2, r.stdout + r.stderr
    err = r.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in err, err
    return err


def test_an_existing_dataset_gets_a_new_version(tmp_path):
    b = _fake_bundle(_kaggle(tmp_path, datasets=[DATASET]))
    r = _export(tmp_path, ["--bundle", str(b), "--push", DATASET, "--push-message", "second try"])
    assert r.returncode == 0, r.stdout + r.stderr
    calls = _calls(tmp_path)
    assert [c["argv"] for c in calls if "files" not in c] == [
        ["datasets", "status", DATASET], ["datasets", "version", "-p", str(b), "-m", "second try", "--dir-mode", "zip"]]
    (version,) = [c for c in calls if "files" in c]
    assert version["files"] == ["README.md", "checkpoints/tiny__fold0.pt", "dataset-metadata.json",
                                "foldkit_bundle.json", "predict_offline.ipynb", "predict_offline.py",
                                "wheels/foldkit-0.1-py3-none-any.whl"]
    assert version["metadata"]["id"] == DATASET and 6 <= len(version["metadata"]["title"]) <= 50
    assert f"dataset {DATASET}: new version" in r.stdout and "--kernel <owner>/<notebook-slug>" in r.stdout


@pytest.mark.parametrize("args, words", [
    (["--push", "Someone/Tiny-Bundle"], ["--push 'Someone/Tiny-Bundle'", "lowercase", "someone/tiny-bundle"]),
    (["--push", "someone/tiny"], ["6-50 characters"]),
    (["--push", DATASET, "--kernel", "someone/My_Notebook", "--competition", "digits-demo"], ["--kernel"]),
    (["--push", DATASET, "--kernel", KERNEL], ["--competition SLUG"]),
    (["--kernel", KERNEL, "--competition", "digits-demo"], ["add --push"]),
])
def test_flags_that_cannot_push_are_refused_before_the_cli_runs(tmp_path, args, words):
    b = _fake_bundle(_kaggle(tmp_path))
    _one_line_error(_export(tmp_path, ["--bundle", str(b), *args]), *words)
    assert _calls(tmp_path) == []


@pytest.mark.parametrize("mode", ["no-credentials", "no-credentials-new"])
def test_no_credentials_is_one_line_saying_how_to_set_them_up(tmp_path, mode):
    b = _fake_bundle(_kaggle(tmp_path, mode=mode))
    err = _one_line_error(_export(tmp_path, ["--bundle", str(b), "--push", DATASET]),
                          "kaggle datasets status", "no credentials", "kaggle.json", "KAGGLE_USERNAME")
    assert "KAGGLE_KEY=" not in err


def test_a_timeout_a_missing_cli_and_a_push_error_are_one_line_each(tmp_path):
    b = _fake_bundle(_kaggle(tmp_path, mode="sleep"))
    _one_line_error(_export(tmp_path, ["--bundle", str(b), "--push", DATASET, "--kaggle-timeout", "1"]),
                    "kaggle datasets status", "did not finish in 1 s", "--kaggle-timeout")
    (tmp_path / "empty").mkdir()
    _one_line_error(_export(tmp_path, ["--bundle", str(b), "--push", DATASET], path=str(tmp_path / "empty")),
                    "pip install kaggle")
    _kaggle(tmp_path, mode="kernel-error", datasets=[DATASET])
    _one_line_error(_export(tmp_path, ["--bundle", str(b), "--push", DATASET, "--kernel", KERNEL, "--competition",
                                       "digits-demo"]), "kaggle kernels push", "Kernel push error: Notebook not found")
