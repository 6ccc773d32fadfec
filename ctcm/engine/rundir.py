"""The run folder: where a run's files live, who owns them, and how they are written (atomically).

A folder holds at most one run. A fresh run refuses a folder that already holds one (``--resume``,
``--overwrite`` or another ``--out``); pruning deletes only periodic checkpoints that this run wrote
(their names travel in every checkpoint, so a resumed run knows its own files).
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path
from typing import Any
from collections.abc import Callable

from ..atomic import atomic_link, atomic_write_text
from ..errors import UserError

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"
PERIODIC = re.compile(r"step_(\d+)\.pt$")
# everything a run writes (relative to OUT): what --overwrite removes and what marks a folder as a run
RUN_FILES = ("config.yaml", "train.csv", "metrics.json", "loss.png", "fid.png")
RUN_DIRS = (CHECKPOINT_DIR, "samples", "tensorboard")


class RunFolderError(UserError, RuntimeError):
    """A run folder that holds another run, or that cannot be written."""


def checkpoint_dir(out: str | Path) -> Path:
    return Path(out) / CHECKPOINT_DIR


def step_of(name: str) -> int:
    """The step of a periodic checkpoint's file name ``step_N.pt``."""
    match = PERIODIC.search(name)
    if match is None:
        raise ValueError(f"{name} is not a periodic checkpoint name (step_N.pt)")
    return int(match.group(1))


def latest_checkpoint(out: str | Path) -> Path | None:
    """``OUT/checkpoints/latest.pt`` if present, else the periodic checkpoint with the highest step, else None."""
    folder = checkpoint_dir(out)
    if (folder / LATEST).is_file():
        return folder / LATEST
    periodic = sorted(folder.glob("step_*.pt"), key=lambda p: step_of(p.name))
    return periodic[-1] if periodic else None


class RunFolder:
    """Paths, ownership and atomic writes of one run's output folder ``out``.

    Args:
        out: the folder.
        run_id: identifies the run across resumes (new runs get a fresh one).
        owned: names of the periodic checkpoints this run has written (restored on resume).
    """

    def __init__(self, out: str | Path, run_id: str | None = None, owned: list[str] | None = None) -> None:
        self.out = Path(out)
        self.run_id = run_id or uuid.uuid4().hex
        self.owned: list[str] = list(owned or [])

    # -- paths ----------------------------------------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return checkpoint_dir(self.out)

    @property
    def latest(self) -> Path:
        return self.checkpoints / LATEST

    def path(self, name: str) -> Path:
        return self.out / name

    def periodic(self, step: int) -> Path:
        return self.checkpoints / f"step_{step:08d}.pt"

    def grid(self, step: int) -> Path:
        return self.out / "samples" / f"step_{step:08d}.png"

    # -- claiming the folder ------------------------------------------------------------------------------------
    def holds_run(self) -> bool:
        """Whether ``out`` already holds (part of) a run."""
        return any(self.path(n).exists() for n in RUN_FILES) or any(self.checkpoints.glob("*.pt"))

    def claim(self, *, resume: bool, overwrite: bool = False) -> None:
        """Make ``out`` this run's folder: refuse one that holds another run (unless ``overwrite``, which
        deletes that run's files, and only those), then check that it can be written.

        Raises:
            RunFolderError: the folder holds a run and neither ``resume`` nor ``overwrite`` was given, or
                it cannot be created or written.
        """
        if not resume and self.holds_run():
            if not overwrite:
                raise RunFolderError(
                    f"{self.out} already holds a run (checkpoints, train.csv or config.yaml); continue it with "
                    f"--resume, replace it with --overwrite, or choose another --out")
            self.clear()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / f".write-test-{self.run_id}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise RunFolderError(f"cannot write to the run folder {self.out} ({exc.strerror or exc}); "
                                 f"choose another --out or fix its permissions") from exc

    def clear(self) -> None:
        """Delete the files a run writes (never anything else in ``out``)."""
        for name in RUN_FILES:
            self.path(name).unlink(missing_ok=True)
        for name in RUN_DIRS:
            shutil.rmtree(self.path(name), ignore_errors=True)

    # -- writing --------------------------------------------------------------------------------------------------
    def write_text(self, name: str, text: str) -> Path:
        """Write ``OUT/name`` atomically (temporary file, fsync, rename)."""
        return atomic_write_text(self.path(name), text)

    def write_json(self, name: str, data: Any) -> Path:
        return self.write_text(name, json.dumps(data, indent=2) + "\n")

    def save_checkpoint(self, step: int, write: Callable[[Path], Path], keep: int) -> Path:
        """``write(path)`` the checkpoint of ``step`` (atomically), point ``latest.pt`` at it, then delete
        all but the ``keep`` newest periodic checkpoints of this run (``keep`` <= 0: keep all).

        The list of this run's files is updated before ``write`` so that the checkpoint records exactly the
        files that exist once it is written."""
        path = self.periodic(step)
        if path.name not in self.owned:
            self.owned.append(path.name)
        doomed = self._beyond(keep)
        self.owned = [n for n in self.owned if n not in doomed]
        write(path)
        atomic_link(path, self.latest)
        for name in doomed:
            (self.checkpoints / name).unlink(missing_ok=True)
        return path

    def _beyond(self, keep: int) -> list[str]:
        """This run's periodic checkpoints older than the ``keep`` newest (none when ``keep`` <= 0)."""
        if keep <= 0:
            return []
        return sorted(self.owned, key=step_of)[:-keep]

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint stores about the folder: the run's id and the names of its checkpoints."""
        return {"run_id": self.run_id, "checkpoints": list(self.owned)}
