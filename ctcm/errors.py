"""The one error path of every command line: a known error prints one line (the problem and the fix) and
exits 2; ``--debug`` shows the traceback instead. Anything else is a bug and keeps its traceback."""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable

USAGE_EXIT = 2  # an everyday mistake: bad option, config, path, device, checkpoint, data
FAILED_EXIT = 1  # the run itself failed (training diverged: NonFiniteError)


def known_errors() -> tuple[type[BaseException], ...]:
    """Exception types whose message is written for the user (each names the problem and the fix)."""
    from .atomic import DiskFullError
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data.sources import DataError
    from .devices import DeviceError
    from .engine.rundir import RunFolderError
    from .metrics.network import FeatureNetworkError
    from .registry import ArgumentError, RegistryError

    return (ConfigError, CheckpointError, DataError, DeviceError, RegistryError, ArgumentError, RunFolderError,
            DiskFullError, FeatureNetworkError, FileNotFoundError, PermissionError, ValueError)


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
    """Call ``entry(argv)``; a known error becomes ``prog: error: ...`` on stderr and exit 2 (a diverged run:
    exit 1). With ``--debug`` in ``argv`` the exception propagates with its traceback."""
    from .engine.trainer import NonFiniteError

    debug = "--debug" in argv
    try:
        return int(entry(argv) or 0)
    except NonFiniteError as exc:
        if debug:
            raise
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return FAILED_EXIT
    except known_errors() as exc:
        if debug:
            raise
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return USAGE_EXIT
    except OSError as exc:  # disk full, read-only file system, ...: the OS names the problem and the file
        if debug:
            raise
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return USAGE_EXIT
