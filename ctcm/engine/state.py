"""Run state that checkpoints carry besides the weights: RNG states, data-order position, checkpoint paths.

Everything here is ``weights_only``-safe: tensors, ints, floats, strings, lists and dicts.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"
PERIODIC = re.compile(r"step_(\d+)\.pt$")


def capture_rng(objective_generator: torch.Generator) -> dict[str, Any]:
    """The CPU, CUDA, NumPy and Python RNG states plus the objective's generator, as plain data."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "objective": objective_generator.get_state(),
    }


def restore_rng(state: dict[str, Any], objective_generator: torch.Generator) -> None:
    """Inverse of :func:`capture_rng`. CUDA states are restored when as many devices are visible."""
    torch.set_rng_state(state["torch_cpu"])
    cuda = state.get("torch_cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    objective_generator.set_state(state["objective"])


def checkpoint_dir(out: str | Path) -> Path:
    return Path(out) / CHECKPOINT_DIR


def periodic_path(out: str | Path, step: int) -> Path:
    return checkpoint_dir(out) / f"step_{step:08d}.pt"


def latest_checkpoint(out: str | Path) -> Path | None:
    """``OUT/checkpoints/latest.pt`` if present, else the periodic checkpoint with the highest step, else None."""
    folder = checkpoint_dir(out)
    if (folder / LATEST).is_file():
        return folder / LATEST
    periodic = sorted(folder.glob("step_*.pt"), key=lambda p: int(PERIODIC.search(p.name).group(1)))
    return periodic[-1] if periodic else None


def prune_periodic(out: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest periodic checkpoints (``keep`` <= 0: keep all)."""
    if keep <= 0:
        return
    periodic = sorted(checkpoint_dir(out).glob("step_*.pt"), key=lambda p: int(PERIODIC.search(p.name).group(1)))
    for path in periodic[:-keep]:
        path.unlink(missing_ok=True)
