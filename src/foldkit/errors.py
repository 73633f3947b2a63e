"""One base class for every error a user can cause, and the one place CLIs turn it into a line.

Each module raises its own subclass (InputError, FoldsError, TrainError, ...) with a message
that names the file, row or value and says what to do. Every CLI runs its work through
`cli_run`, which prints `error: <message>` on stderr and exits with code 2: a user never sees a
traceback for something they can fix. Anything else is a bug in the kit and keeps its traceback.

This module imports nothing heavy (config's `--help` stays instant).
"""
from __future__ import annotations

import difflib
import sys
from typing import Any, Callable, TypeVar

T = TypeVar("T")

EXIT_USER_ERROR = 2


class FoldkitError(Exception):
    """Something the user can fix (input files, flags, settings); the message says what and how."""


class ConfigError(FoldkitError, ValueError):
    """A setting, flag or config file that cannot be used as given."""


def did_you_mean(value: Any, names) -> str:
    """'; did you mean x?' with the closest of `names` (difflib), or '': the tail of a message that
    refuses a name."""
    close = difflib.get_close_matches(str(value), [str(n) for n in names], n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def cli_run(fn: Callable[[], T]) -> T:
    """Run a CLI's work; a FoldkitError becomes one line on stderr and exit code 2."""
    try:
        return fn()
    except FoldkitError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
