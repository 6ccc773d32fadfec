"""Hand-written forward-mode rules: (value, tangent) pairs through common layers (Eq. 20).

``torch.func.jvp`` runs three convolutions for one convolution's JVP and adds per-op bookkeeping; a
backbone that knows its own structure can do better: a linear layer L (convolution, spectral
convolution, linear) maps the pair as one call on the doubled batch, L([z; dz]) = [L z; L dz + b] (the
bias b belongs to the value only), and the nonlinearities use their closed-form derivatives. Every rule is
tested against ``torch.func.jvp`` in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Pair = tuple[Tensor, Tensor]


def linear_pair(layer: nn.Module, z: Tensor, dz: Tensor) -> Pair:
    """(L z, L dz) for a linear layer with an optional ``bias``, in one call on the doubled batch."""
    y, dy = layer(torch.cat([z, dz])).chunk(2)
    bias = getattr(layer, "bias", None)
    if bias is not None:
        dy = dy - bias.view((1, -1) + (1,) * (dy.ndim - 2))
    return y, dy


def _group_stats(h: Tensor, dh: Tensor, groups: int, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """y = GroupNorm(h) without affine, and per (sample, channel) rstd, mean(dh), mean(y dh) of each channel's
    group (B, C, 1, ...), in float32 at least (a bf16 variance loses the tangent's cancellations)."""
    compute = torch.promote_types(h.dtype, torch.float32)
    h, dh = h.to(compute), dh.to(compute)
    b, c = h.shape[:2]
    y, _, rstd = torch.native_group_norm(h, None, None, b, c, h[0, 0].numel(), groups, eps)
    yg, dhg = y.view(b, groups, -1), dh.reshape(b, groups, -1)
    mean_dh = dhg.mean(-1)
    mean_ydh = torch.einsum("bgn,bgn->bg", yg, dhg) / yg.shape[-1]  # one pass, no y * dh temporary
    shape = (b, c) + (1,) * (h.ndim - 2)
    per_channel = lambda s: s.repeat_interleave(c // groups, dim=1).view(shape)  # noqa: E731
    return y, per_channel(rstd), per_channel(mean_dh), per_channel(mean_ydh)


def normalize_pair(h: Tensor, dh: Tensor, groups: int, eps: float) -> Pair:
    """GroupNorm without its affine map, and its tangent (Eq. 20): with y = (h - mu) / s per (sample, group),
    dy = (dh - mean(dh) - y mean(y dh)) / s. Statistics in float32 at least (bf16 / fp16 inputs are
    promoted). Shapes: h, dh (B, C, ...) -> (B, C, ...)."""
    y, rstd, mean_dh, mean_ydh = _group_stats(h, dh, groups, eps)
    return y, torch.addcmul(torch.addcmul(-rstd * mean_dh, dh, rstd), y, -rstd * mean_ydh)


def modulated_norm_pair(h: Tensor, dh: Tensor, groups: int, eps: float, scale: Tensor, shift: Tensor,
                        dscale: Tensor, dshift: Tensor) -> Pair:
    """u = y scale + shift with y = GroupNorm(h) (no affine), and its tangent du = dy scale + y dscale + dshift
    (Eq. 20, 24), written as du = dh (scale / s) + y (dscale - scale mean(y dh) / s) + (dshift - scale
    mean(dh) / s): two fused passes. Shapes: h, dh (B, C, H, W); scale, shift, dscale, dshift (B, C, 1, 1)."""
    y, rstd, mean_dh, mean_ydh = _group_stats(h, dh, groups, eps)
    a = scale * rstd
    du = torch.addcmul(torch.addcmul(dshift - a * mean_dh, dh, a), y, dscale - a * mean_ydh)
    return torch.addcmul(shift, y, scale), du


def group_norm_pair(norm: nn.GroupNorm, h: Tensor, dh: Tensor) -> Pair:
    """GroupNorm and its tangent: :func:`normalize_pair`, then the affine map (which scales the tangent by gamma)."""
    y, dy = normalize_pair(h, dh, norm.num_groups, norm.eps)
    if norm.affine:
        shape = (1, -1) + (1,) * (h.ndim - 2)
        y = torch.addcmul(norm.bias.view(shape), y, norm.weight.view(shape))
        dy = dy * norm.weight.view(shape)
    return y, dy


def gelu_pair(u: Tensor, du: Tensor) -> Pair:
    """GELU (exact, erf form) and its tangent gelu'(u) du, gelu'(u) = Phi(u) + u phi(u): the tangent is
    GELU's own backward kernel applied to du (one fused pass, differentiable)."""
    return F.gelu(u), torch.ops.aten.gelu_backward(du, u)


def silu_pair(u: Tensor, du: Tensor) -> Pair:
    """SiLU and its tangent silu'(u) du, silu'(u) = s(u) (1 + u (1 - s(u))): SiLU's own backward kernel."""
    return F.silu(u), torch.ops.aten.silu_backward(du, u)


def sequential_pair(seq: nn.Sequential, z: Tensor, dz: Tensor) -> Pair:
    """Push a pair through a Sequential of GroupNorm, GELU, SiLU, Conv2d and Linear layers."""
    for layer in seq:
        if isinstance(layer, nn.GroupNorm):
            z, dz = group_norm_pair(layer, z, dz)
        elif isinstance(layer, nn.GELU) and layer.approximate == "none":
            z, dz = gelu_pair(z, dz)
        elif isinstance(layer, nn.SiLU):
            z, dz = silu_pair(z, dz)
        elif isinstance(layer, (nn.Conv2d, nn.Linear)):
            z, dz = linear_pair(layer, z, dz)
        else:
            raise TypeError(f"no forward-mode rule for {type(layer).__name__}; use torch.func.jvp instead")
    return z, dz
