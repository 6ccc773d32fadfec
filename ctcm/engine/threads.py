"""How many CPU threads a run uses: a number, torch's default, or ``auto`` (never slower than one thread
on a machine that other jobs keep busy)."""

from __future__ import annotations

import os


def pick_threads(requested: int | str | None) -> int | None:
    """``None``: leave torch's default; an int: that many; ``auto``: the cores that are idle now.

    ``auto`` takes the number of usable cores minus the 1-minute load average (at least 1): on an idle
    2-core machine 2, with one busy job beside it 1. torch's default (one thread per core) is 2.4-3.8x
    slower than one thread when the cores are busy, because its threads wait for each other.
    """
    if requested is None:
        return None
    if requested == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
        return max(1, min(cores, int(cores - load + 0.5)))
    return int(requested)
