"""The training DataLoader, made safe for preemption.

``timeout``/SLURM send SIGTERM to the whole process group: DataLoader workers would die first, and the
main process's SIGCHLD watchdog would then raise "DataLoader worker ... is killed by signal" wherever it
happens to be, e.g. inside the emergency ``torch.save``. Workers therefore ignore SIGINT/SIGTERM (the main
process stops them), and :func:`close_loader` stops them before the emergency checkpoint is written.
"""

from __future__ import annotations

import signal
from typing import Any
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def ignore_stop_signals(worker_id: int) -> None:
    """``worker_init_fn``: a worker leaves SIGINT/SIGTERM to the main process, which shuts it down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(dataset: Dataset, batch_sampler: Sampler, num_workers: int, pin_memory: bool) -> Iterator[Any]:
    """An iterator over the batches of ``batch_sampler``; workers (if any) ignore stop signals."""
    return iter(DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, pin_memory=pin_memory,
                           worker_init_fn=ignore_stop_signals if num_workers > 0 else None))


def close_loader(loader: Iterator[Any]) -> None:
    """Stop the workers of a loader iterator and unregister them from the SIGCHLD watchdog (idempotent)."""
    shutdown = getattr(loader, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def next_batch(loader: Iterator[Any], stopping: bool) -> torch.Tensor | None:
    """The next batch, or None when a stop was requested and the workers are gone (the run then saves)."""
    try:
        return next(loader)
    except RuntimeError:
        if stopping:
            return None
        raise
