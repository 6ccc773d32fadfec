"""Exponential moving average of a model's weights (Eq. 19)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .runtime import unwrap
from .errors import UserValueError


def decay_from_half_life(half_life_images: float, batch_size: int) -> float:
    """beta = 0.5 ** (batch_size / half_life_images): the EMA weight of an image halves every
    ``half_life_images`` images seen (EDM's ema_halflife_kimg, in images)."""
    if half_life_images <= 0 or batch_size <= 0:
        raise UserValueError("half_life_images and batch_size must be positive")
    return 0.5 ** (batch_size / half_life_images)


class EMA:
    """theta_ema <- beta theta_ema + (1 - beta) theta after each step; buffers are copied.

    The averaged model is a separate copy in eval mode (``ema.model``), never written back into the
    live network. Give ``decay`` or ``half_life_images`` together with ``batch_size``.
    """

    def __init__(self, model: nn.Module, decay: float | None = None, *, half_life_images: float | None = None,
                 batch_size: int | None = None) -> None:
        if (decay is None) == (half_life_images is None):
            raise UserValueError("give exactly one of decay or half_life_images (with batch_size)")
        if decay is None:
            if batch_size is None or half_life_images is None:
                raise UserValueError("half_life_images needs batch_size")
            decay = decay_from_half_life(half_life_images, batch_size)
        if not 0.0 <= decay < 1.0:
            raise UserValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self.model = copy.deepcopy(unwrap(model)).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        live = unwrap(model)
        ema_params: list[torch.Tensor] = list(self.model.parameters())
        params = [p.detach() for p in live.parameters()]
        if ema_params:  # one fused multi-tensor kernel per group on CUDA (a loop on CPU)
            torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)
        for ema_b, b in zip(self.model.buffers(), live.buffers()):
            ema_b.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "decay": self.decay, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
