"""`foldkit <command>` (foldkit.cli) and the src/<command>.py scripts: one table, the same commands."""
import configparser
import contextlib
import io
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO, SRC
from foldkit import cli

ENV = {**os.environ, "PYTHONPATH": str(SRC)}


def options(help_text: str) -> list[str]:
    return sorted(set(re.findall(r"--[a-z][\w-]*", help_text)))


def script_help(name: str) -> str:
    """`python src/<name>.py --help` in this process (the script's main, as the scripts run it)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as e:
        cli.run_script(name, ["--help"])
    assert e.value.code == 0
    return out.getvalue()


def console(*argv, **kw):
    return subprocess.run([sys.executable, "-m", "foldkit", *argv], capture_output=True, text=True, env=ENV, **kw)


def test_every_command_has_a_script_and_every_script_a_command():
    scripts = {p.stem for p in SRC.glob("*.py")}
    assert scripts == set(cli.COMMANDS)
    for name in scripts:       # each script is the thin caller of its own command
        assert f'main = script("{name}")' in (SRC / f"{name}.py").read_text(), name


def test_the_console_entry_point_is_declared():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    entry = cfg["options.entry_points"]["console_scripts"].strip()
    assert entry == "foldkit = foldkit.cli:main"


def test_console_and_script_help_list_the_same_options():
    r = console("train", "--help")
    s = subprocess.run([sys.executable, str(SRC / "train.py"), "--help"], capture_output=True, text=True)
    assert r.returncode == s.returncode == 0
    assert options(r.stdout) == options(s.stdout) and "--lr-find" in r.stdout
    assert r.stdout.startswith("usage: foldkit train ") and s.stdout.startswith("usage: train.py ")
    assert "foldkit train --fold 0" in r.stdout and "python src/train.py --fold 0" in s.stdout
    for name in cli.COMMANDS:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            cli.main([name, "--help"])
        assert options(out.getvalue()) == options(script_help(name)), name


def test_help_lists_every_command_in_one_line_each():
    r = console("--help")
    assert r.returncode == 0
    for name, cmd in cli.COMMANDS.items():
        [line] = [line for line in r.stdout.splitlines() if line.split()[:1] == [name]]
        assert cmd.summary in line and "\n" not in cmd.summary


def test_help_and_flag_mistakes_import_no_torch():
    code = ("import sys\nfrom foldkit.cli import COMMANDS, main\n"
            "main(['--help'])\n"
            "for name in COMMANDS:\n"
            "    for argv in ([name, '--help'], [name, '--no-such-flag']):\n"
            "        try:\n            main(argv)\n        except SystemExit:\n            pass\n"
            "print('torch' in sys.modules, 'timm' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "False False"


def test_unknown_command_is_one_error_line_with_a_suggestion():
    r = console("trian", "--fold", "0")
    assert r.returncode == 2 and r.stdout == ""
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("error: unknown command 'trian'; did you mean train?")
    r = console()                                   # no command: the list, and the exit code of a mistake
    assert r.returncode == 2 and "make_folds" in r.stdout


def test_a_flag_mistake_names_the_console_command():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        cli.main(["make-folds", "--n-folds", "many"])          # make-folds is make_folds
    assert e.value.code == 2
    assert err.getvalue().strip().splitlines() == [
        "error: argument --n-folds: 'many' is not a whole number (see foldkit make_folds --help)"]


def test_console_make_folds_does_what_the_script_does(tmp_path, digits150):
    """foldkit make_folds and python src/make_folds.py: the same folds file and the same lines printed."""
    import make_folds

    def run(call, where):
        flags = ["--input-dir", str(digits150 / "in"), "--folds-dir", str(tmp_path / where), "--limit", "150",
                 "--n-folds", "3"]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            returned = call(flags)
        return returned, out.getvalue().replace(str(tmp_path / where), "<folds>")

    code, console_out = run(lambda flags: cli.main(["make_folds", *flags]), "console")
    meta, script_out = run(make_folds.main, "script")
    assert code == 0 and meta["rows"] == 150
    assert console_out == script_out and "3 folds" in console_out
    assert (tmp_path / "console" / "train_folds.csv").read_bytes() == \
        (tmp_path / "script" / "train_folds.csv").read_bytes()
