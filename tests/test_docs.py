"""The README and docs/ pages stay true: every relative link reaches a file (and heading) that exists, and
every `src/*.py` command they show exists and its flags parse with the script's own parser."""
import json
import re
import shlex
import subprocess
import sys

from conftest import REPO

README = REPO / "README.md"
PAGES = [README] + sorted((REPO / "docs").glob("*.md"))

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
COMMAND = re.compile(r"(?:^|\s)src/(\w+)\.py(?=\s|$)")

# Runs each command's script under its real parser in one process: argparse's parse_known_args is wrapped so
# that a completed parse stops the script before it does anything (it never trains or writes), while flags
# argparse does not know are still reported as `unrecognized arguments`, exactly as parse_args reports them.
PARSE_ONLY = r"""
import argparse, contextlib, io, json, runpy, sys

class Parsed(Exception):
    pass

original = argparse.ArgumentParser.parse_known_args

def parse_known_args(self, args=None, namespace=None):
    ns, extras = original(self, args, namespace)
    if extras:
        self.error("unrecognized arguments: " + " ".join(extras))
    raise Parsed

argparse.ArgumentParser.parse_known_args = parse_known_args
results = []
for script, args in json.load(sys.stdin):
    err = io.StringIO()
    sys.argv = [script] + args
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(script, run_name="__main__")
        code = "finished without parsing"
    except Parsed:
        code = 0
    except SystemExit as e:
        code = e.code
    except Exception as e:
        code = f"{type(e).__name__}: {e}"
    results.append([code, err.getvalue().strip()])
print(json.dumps(results))
"""


def prose(text: str) -> str:
    """The page without its fenced code blocks and inline code (a link inside code is no link)."""
    return INLINE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page) -> set[str]:
    text = FENCE.sub("", page.read_text())
    seen: dict[str, int] = {}
    out = set()
    for h in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M):
        s = slug(h)
        out.add(s if s not in seen else f"{s}-{seen[s]}")
        seen[s] = seen.get(s, 0) + 1
    return out


def broken_links(page, root=REPO) -> list[str]:
    """The links of a page whose file or heading does not exist, named relative to `root`."""
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):           # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{page.relative_to(root)}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{page.relative_to(root)}: {target} (no heading #{anchor} in {dest.name})")
    return broken


def commands(text: str) -> list[tuple[str, list[str]]]:
    """(script, args) of every `src/X.py ...` command in the text's code blocks and inline code spans:
    shell comments and line continuations handled; commands with placeholders (<name>, [optional]) left out."""
    lines = []
    for block in FENCE.findall(text):
        lines += block.replace("\\\n", " ").splitlines()[1:-1]
    lines += [" ".join(span.split()) for span in INLINE.findall(FENCE.sub("", text))]
    out = []
    for line in lines:
        m = COMMAND.search(line)
        if not m:
            continue
        try:
            words = shlex.split(line[m.end():], comments=True)
        except ValueError:
            continue
        if not any(re.search(r"[<>\[\]|]", w) for w in words):
            out.append((m.group(1), words))
    return out


def parse_results(cmds: list[tuple[str, list[str]]]) -> list:
    """[exit code, stderr] of each command's parse, in order (0: the script's parser accepted the flags)."""
    todo = [[str(REPO / "src" / f"{s}.py"), args] for s, args in cmds]
    r = subprocess.run([sys.executable, "-c", PARSE_ONLY], input=json.dumps(todo), capture_output=True,
                       text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_every_relative_link_points_to_a_file_that_exists():
    broken = [b for page in PAGES for b in broken_links(page)]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_a_broken_link_is_found(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# A heading\n")
    page.write_text("[ok](there.md) [ok](there.md#a-heading) [web](https://example.com) `[code](nowhere.md)`\n"
                    "[gone](missing.md) [no heading](there.md#no-such-heading)\n")
    found = broken_links(page, root=tmp_path)
    assert found == ["page.md: missing.md (no such file)",
                     "page.md: there.md#no-such-heading (no heading #no-such-heading in there.md)"]


def test_readme_is_a_five_minute_read_with_the_test_command():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    assert "python -m pytest" in text.splitlines()          # the command CI runs (.ci/run)
    assert "pip install -e \".[dev]\" -c constraints.txt && python src/demo.py" in text


def test_every_command_shown_exists_and_its_flags_parse():
    cmds = [c for page in PAGES for c in commands(page.read_text())]
    readme_scripts = {s for s, _ in commands(README.read_text())}
    assert {"audit", "make_folds", "train", "predict", "leaderboard", "demo"} <= readme_scripts
    missing = sorted({s for s, _ in cmds if not (REPO / "src" / f"{s}.py").is_file()})
    assert not missing, f"commands shown for scripts that do not exist: {missing}"
    failed = [f"src/{s}.py {' '.join(args)}: {code} {err}"
              for (s, args), (code, err) in zip(cmds, parse_results(cmds)) if code != 0]
    assert not failed, "commands whose flags do not parse:\n" + "\n".join(failed)


def test_an_unknown_flag_or_a_bad_value_is_rejected():
    """The check really parses: an unknown flag and a value the setting refuses both fail, a good one passes."""
    text = "```\npython src/train.py --fold 0 --no-such-flag 3\npython src/train.py --balance weight\n" \
           "python src/train.py --fold 0 --balance weights\n```\n"
    cmds = commands(text)
    assert [s for s, _ in cmds] == ["train"] * 3
    (unknown, e1), (bad_value, e2), (good, _) = parse_results(cmds)
    assert unknown == 2 and "unrecognized arguments: --no-such-flag 3" in e1
    assert bad_value == 2 and "--balance" in e2 and "weights" in e2
    assert good == 0
