"""The one atomic-write helper of the library: write a temporary file next to the target, fsync, rename.

A crash (or a full disk) mid-write leaves the previous file intact, never a half-written one; the folder
is fsynced too, so the rename itself survives a power cut.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import BinaryIO
from collections.abc import Callable

from .errors import UserError


class DiskFullError(UserError, OSError):
    """No space left while writing a file; the previous version of the file is kept."""


def fsync_dir(folder: Path) -> None:
    """fsync a folder so that a rename inside it is durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(fh)`` on a temporary file in ``path``'s folder, fsync it, then rename it over ``path``.

    Raises:
        DiskFullError: the disk filled up (the message names the file and that the old one is kept).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise DiskFullError(errno.ENOSPC, f"no space left on the device while writing {path} (the previous "
                                              f"version, if any, is kept); free some space and retry") from exc
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of a UTF-8 string."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def atomic_link(src: Path, dst: Path) -> Path:
    """Make ``dst`` the same file as ``src`` atomically: a hard link (no second write; it survives the
    deletion of ``src``), or a durable copy on file systems without hard links."""
    tmp = dst.with_name(f".{dst.name}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        with open(src, "rb") as fh:
            data = fh.read()
        return atomic_write(dst, lambda out: out.write(data))
    os.replace(tmp, dst)
    fsync_dir(dst.parent)
    return dst
