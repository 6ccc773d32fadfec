"""The non-finite guard of the training loop: the error that stops a diverged run, the check of the weights,
and the message that says how to go on."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import FAILED_EXIT, UserError


class NonFiniteError(UserError, RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient norm, or non-finite weights (the run
    failed: exit 1 on the command line; the message says how to resume with gentler settings)."""

    exit_code = FAILED_EXIT


def weights_finite_flag(module: nn.Module) -> torch.Tensor:
    """A 0-dim bool tensor on the weights' device: every parameter and floating buffer of ``module`` is finite
    (no host sync: the training step reads it together with its next guard).

    x * 0 is 0 for finite x and NaN for inf / NaN, so the norms of the zeroed tensors are all finite
    exactly when the weights are: a few fused multi-tensor kernels on CUDA instead of two per tensor."""
    tensors = [t.detach() for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    if not tensors:
        return torch.ones((), dtype=torch.bool)
    return torch.stack(torch._foreach_norm(torch._foreach_mul(tensors, 0.0))).isfinite().all()


def weights_finite(module: nn.Module) -> bool:
    """Whether every parameter and floating buffer of ``module`` is finite (one device sync)."""
    return bool(weights_finite_flag(module))


def nonfinite_message(what: str, last_good: Path | None) -> str:
    """``what`` went wrong, the run stops, and how to resume from ``last_good`` with gentler settings."""
    return (f"{what}, so the run stops without writing a checkpoint. The last good checkpoint is "
            f"{last_good if last_good is not None else '(none written yet)'}, left untouched. Lower optim.lr, raise "
            f"optim.warmup_steps or lower the weight of the objective term whose column in train.csv grows, then "
            f"resume from it (--resume optim.lr=...).")
