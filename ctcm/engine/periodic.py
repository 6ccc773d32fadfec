"""Periodic tasks of the loop: which of log / grid / FID / checkpoint are due after a step."""

from __future__ import annotations

from dataclasses import dataclass


def due(step: int, every: int) -> bool:
    """Whether a task run every ``every`` steps (0: off) is due after ``step``."""
    return every > 0 and step % every == 0


@dataclass(frozen=True)
class Due:
    """The tasks due after one step."""

    log: bool
    grid: bool
    fid: bool
    checkpoint: bool


@dataclass
class Periodic:
    """Intervals in optimiser steps (0: off). The last step always logs and checkpoints; a checkpoint is
    never due inside a streak of skipped (non-finite) steps, except the final or emergency one."""

    log_every: int
    sample_every: int
    fid_every: int
    checkpoint_every: int
    grid: bool

    def after(self, step: int, last: bool, in_streak: bool) -> Due:
        return Due(log=due(step, self.log_every) or last,
                   grid=self.grid and due(step, self.sample_every),
                   fid=due(step, self.fid_every),
                   checkpoint=(due(step, self.checkpoint_every) and not in_streak) or last)
