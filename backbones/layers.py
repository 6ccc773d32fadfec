"""Layers shared by the reference backbones."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels: per-sample, safe under torch.func."""
    groups = max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


def coordinate_grid(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 2, H, W): the coordinates (y, x) of a regular grid on [0, 1]^2 (endpoints included)."""
    b, _, h, w = x.shape
    gy = torch.linspace(0.0, 1.0, h, device=x.device, dtype=x.dtype)
    gx = torch.linspace(0.0, 1.0, w, device=x.device, dtype=x.dtype)
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij"))
    return grid.unsqueeze(0).expand(b, 2, h, w)
