"""Run state that checkpoints carry besides the weights: the RNG states (paths live in :mod:`.rundir`).

Everything here is ``weights_only``-safe: tensors, ints, floats, strings, lists and dicts.
"""

from __future__ import annotations

import random
from typing import Any, cast

import numpy as np
import torch


def capture_rng(objective_generator: torch.Generator) -> dict[str, Any]:
    """The CPU, CUDA, NumPy and Python RNG states plus the objective's generator, as plain data."""
    np_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))
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
