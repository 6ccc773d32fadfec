"""Where a model runs: the module inside DDP / ``torch.compile`` wrappers, and this process's rank."""

from __future__ import annotations

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / compiled wrapper (``model`` itself when unwrapped)."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    orig = getattr(model, "_orig_mod", model)  # torch.compile's OptimizedModule keeps the original here
    return orig if isinstance(orig, nn.Module) else model


def rank_world(distributed: bool = True) -> tuple[int, int]:
    """(rank, world size) of the initialised ``torch.distributed`` group; (0, 1) without one or when
    ``distributed`` is False."""
    if distributed and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
