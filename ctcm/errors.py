"""Errors written for the user, and the one error path of every command line.

Every error ctcm raises for a mistake in what it was given (an option, a config, a path, data, a checkpoint,
a device) subclasses :class:`UserError`; its message names the problem and the fix. A command prints such an
error on one line and exits with its ``exit_code`` (2; a diverged run: 1); ``--debug`` shows the traceback
instead. Anything else (a ``TypeError`` or ``ValueError`` from a bug, in ctcm or in torch) is not caught and
keeps its traceback. Operating-system errors (``OSError``: a missing file, no permission, a full disk) are
the environment's and are also reported on one line.

This module is the bottom layer: it imports nothing from ctcm, so every module may raise these errors and
the error path hides no import-time failure of the rest of the library.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable

USAGE_EXIT = 2  # an everyday mistake: bad option, config, path, device, checkpoint, data
FAILED_EXIT = 1  # the run itself failed (training diverged: ctcm.engine.NonFiniteError)


class UserError(Exception):
    """A mistake of the user's, with a message that names the problem and the fix (one line on the CLI).

    Library errors subclass it together with the built-in type a caller would expect (``ConfigError`` is a
    ``UserError`` and a ``ValueError``), so ``except ValueError`` keeps working in Python code."""

    exit_code: int = USAGE_EXIT


class UserValueError(UserError, ValueError):
    """A value outside what a function, constructor or option accepts (plugins raise it for bad arguments)."""


class UserTypeError(UserError, TypeError):
    """An object of the wrong kind where the user supplies one (a plain ``nn.Module`` as a backbone, ...)."""


def one_line(exc: BaseException) -> str:
    """The exception's message on one line."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC and "no space" not in str(exc).lower():
        return f"no space left on the device ({exc.filename or 'while writing'}); free some space and retry"
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    text = str(exc).strip() or type(exc).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def add_debug_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback instead of one line")


def run_cli(prog: str, entry: Callable[[list[str]], int | None], argv: list[str]) -> int:
    """Call ``entry(argv)``; a :class:`UserError` or ``OSError`` becomes ``prog: error: ...`` on stderr and its
    exit code (``OSError``: 2). Every other exception propagates with its traceback, and so does every
    exception when ``--debug`` is in ``argv``."""
    try:
        return int(entry(argv) or 0)
    except (UserError, OSError) as exc:
        if "--debug" in argv:
            raise
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code if isinstance(exc, UserError) else USAGE_EXIT
