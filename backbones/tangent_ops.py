"""Hand-written forward-mode rules: (value, tangent) through common layers (Eq. 20).

``torch.func.jvp`` runs three convolutions for one convolution's JVP and adds per-op bookkeeping; a
backbone that knows its own structure can do better. A (value, tangent) pair travels *packed*: one
tensor zz = [z; dz] of 2B rows (value rows first), so that

* a linear layer L (convolution, spectral convolution, linear) maps it with one call,
  L(zz) = [L z + b; L dz] (:func:`linear_packed`: the bias b belongs to the value rows only);
* a nonlinearity writes its value and its tangent straight into the two halves of a new packed tensor
  (:func:`pointwise_packed`; no ``torch.cat`` copy when no graph is recorded), with the tangent computed
  by the nonlinearity's own backward kernel: gelu'(u) du is ``gelu_backward(du, u)``;
* GroupNorm's tangent is GroupNorm's own backward kernel applied to the tangent (its Jacobian is
  symmetric; :func:`modulated_norm_tangent`), from the value's statistics: a forward that keeps them gives
  the tangent without recomputing the value.

Every rule is tested against ``torch.func.jvp`` in float64, values, tangents and parameter gradients.
"""

from __future__ import annotations

from typing import Any, NamedTuple
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Pair = tuple[Tensor, Tensor]


def pack(z: Tensor, dz: Tensor) -> Tensor:
    """[z; dz] along the batch: (B, ...), (B, ...) -> (2B, ...)."""
    return torch.cat([z, dz])


def unpack(zz: Tensor) -> Pair:
    """(z, dz) as views of a packed (2B, ...) tensor."""
    z, dz = zz.chunk(2)
    return z, dz


def add_to_values_(zz: Tensor, bias: Tensor) -> Tensor:
    """zz[:B] += bias (per channel, dim 1) in place and return zz: a bias shifts the value, not the tangent."""
    zz[: zz.shape[0] // 2] += bias.view((1, -1) + (1,) * (zz.ndim - 2))
    return zz


def linear_packed(layer: nn.Module, zz: Tensor) -> Tensor:
    """[L z + b; L dz] for a ``Conv2d`` or ``Linear`` L with bias b: one call on the 2B rows, the bias then
    added to the value rows (adding it to all and subtracting it from the tangent would cost the tangent
    digits where |dz| << |b|)."""
    y = linear_without_bias(layer, zz)
    return y if layer.bias is None else add_to_values_(y, layer.bias)


def linear_without_bias(layer: nn.Module, z: Tensor) -> Tensor:
    """L z for a ``Conv2d`` or ``Linear`` L, its bias left out: the layer's tangent."""
    if isinstance(layer, nn.Conv2d):
        return layer._conv_forward(z, layer.weight, None)
    if isinstance(layer, nn.Linear):
        return F.linear(z, layer.weight)
    raise TypeError(f"no forward-mode rule for {type(layer).__name__}; use torch.func.jvp instead")


def _silu_tangent(du: Tensor, u: Tensor) -> Tensor:
    """silu'(u) du = s(u) (1 + u (1 - s(u))) du in differentiable ops (``silu_backward`` has no derivative)."""
    s = torch.sigmoid(u)
    return du * s * (1 + u * (1 - s))


class _Pointwise(NamedTuple):
    value: Any  # aten op with an ``.out`` overload
    kernel: Any  # f's backward kernel, (du, u) -> f'(u) du, with a ``.grad_input`` (out=) overload
    differentiable: Callable[[Tensor, Tensor], Tensor]  # the same tangent, differentiable again


_POINTWISE = {
    "gelu": _Pointwise(torch.ops.aten.gelu, torch.ops.aten.gelu_backward, torch.ops.aten.gelu_backward),
    "silu": _Pointwise(torch.ops.aten.silu, torch.ops.aten.silu_backward, _silu_tangent),
}


def _recording(*tensors: Tensor) -> bool:
    """Whether autograd records a graph through any of ``tensors``."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def pointwise_tangent(name: str, u: Tensor, du: Tensor) -> Tensor:
    """f'(u) du for f = ``gelu`` or ``silu``: f's backward kernel, or differentiable ops when a graph is recorded."""
    f = _POINTWISE[name]
    return f.differentiable(du, u) if _recording(u, du) else f.kernel(du, u)


def pointwise_packed(name: str, u: Tensor, du: Tensor) -> Tensor:
    """[f(u); f'(u) du] for f = ``gelu`` (exact, erf form; gelu'(u) = Phi(u) + u phi(u)) or ``silu``, packed.

    The tangent is f's backward kernel applied to du. Without a graph to record, both halves are written
    in place into one new (2B, ...) tensor (``out=`` kernels); with one, they are concatenated (``out=``
    is not differentiable) and the tangent uses ops that are differentiable again. Same numbers.
    """
    f = _POINTWISE[name]
    if _recording(u, du):
        return torch.cat([f.value(u), f.differentiable(du, u)])
    out = u.new_empty((2 * u.shape[0], *u.shape[1:]))
    b = u.shape[0]
    f.value.out(u, out=out[:b])
    f.kernel.grad_input(du, u, grad_input=out[b:])
    return out


class NormStats(NamedTuple):
    """GroupNorm(h) without affine and what its tangent needs. Shapes: y (B, C, ...); rstd, 1/s per (sample,
    channel), (B, C, 1, ...); h, the input in float32 at least; mean_g, rstd_g per (sample, group), (B, G)."""
    y: Tensor
    rstd: Tensor
    h: Tensor
    mean_g: Tensor
    rstd_g: Tensor


def group_norm_stats(h: Tensor, groups: int, eps: float) -> NormStats:
    """y = GroupNorm(h) without affine, with its statistics, in float32 at least (a bf16 variance loses the
    tangent's cancellations). Differentiable. Shapes: h (B, C, ...)."""
    h = h.to(torch.promote_types(h.dtype, torch.float32))
    b, c = h.shape[:2]
    y, mean, rstd = torch.native_group_norm(h, None, None, b, c, h[0, 0].numel(), groups, eps)
    return NormStats(y, _per_channel(rstd, h), h, mean, rstd)


def _per_channel(stat: Tensor, like: Tensor) -> Tensor:
    """A per-(sample, group) statistic (B, G) -> per (sample, channel) (B, C, 1, ...) of ``like``."""
    b, c = like.shape[:2]
    return stat.repeat_interleave(c // stat.shape[1], dim=1).view((b, c) + (1,) * (like.ndim - 2))


def modulated_norm_tangent(stats: NormStats, dh: Tensor, groups: int, scale: Tensor | float,
                           dscale: Tensor | float, dshift: Tensor | float, out: Tensor | None = None) -> Tensor:
    """The tangent of u = y scale + shift, y = GroupNorm(h) (Eq. 20, 30), from the value's
    :func:`group_norm_stats`: du = dy scale + y dscale + dshift with dy = (dh - mean(dh) - y mean(y dh)) / s.
    The normalisation's Jacobian is symmetric (Eq. 20), so without a graph to record dy is GroupNorm's own
    backward kernel applied to dh (one fused pass); with one, dy scale is written as dh (scale / s) +
    y (-scale mean(y dh) / s) - scale mean(dh) / s, in differentiable ops. The last pass is written into
    ``out`` if given (no graph: ``out=`` is not differentiable). Shapes: dh (B, C, H, W); scale, dscale,
    dshift (B, C, 1, 1) or floats."""
    y, rstd = stats.y, stats.rstd
    dh = dh.to(y.dtype)
    moving = isinstance(dscale, Tensor) or dscale != 0.0 or isinstance(dshift, Tensor) or dshift != 0.0
    if not _recording(dh, y, *(v for v in (scale, dscale, dshift) if isinstance(v, Tensor))):
        b, c = y.shape[:2]
        dy = torch.ops.aten.native_group_norm_backward(dh, stats.h, stats.mean_g, stats.rstd_g, None, b, c,
                                                      y[0, 0].numel(), groups, [True, False, False])[0]
        if not moving:
            return torch.mul(dy, scale, out=out) if out is not None else dy.mul_(scale)
        return torch.addcmul(torch.addcmul(dshift, y, dscale), dy, scale, out=out)
    yg, dhg = y.view(y.shape[0], groups, -1), dh.reshape(y.shape[0], groups, -1)
    mean_dh = _per_channel(dhg.mean(-1), y)
    mean_ydh = _per_channel(torch.linalg.vecdot(yg, dhg) / yg.shape[-1], y)  # one pass (einsum: 6x slower)
    a = scale * rstd
    return torch.addcmul(torch.addcmul(dshift - a * mean_dh, dh, a), y, dscale - a * mean_ydh, out=out)


def modulated_norm_pair(h: Tensor, dh: Tensor, groups: int, eps: float, scale: Tensor, shift: Tensor,
                        dscale: Tensor | float, dshift: Tensor | float) -> Pair:
    """u = y scale + shift with y = GroupNorm(h) (no affine), and its tangent (:func:`modulated_norm_tangent`).
    Shapes: h, dh (B, C, H, W); scale, shift, dscale, dshift (B, C, 1, 1)."""
    stats = group_norm_stats(h, groups, eps)
    return torch.addcmul(shift, stats.y, scale), modulated_norm_tangent(stats, dh, groups, scale, dscale, dshift)


def _norm_affine(norm: nn.GroupNorm, y: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor | float]:
    """(y gamma + beta, gamma) for GroupNorm's affine map (gamma, beta shaped (1, C, 1, ...)); (y, 1) without one.
    The value is written into ``out`` if given."""
    if not norm.affine:
        return (y if out is None else out.copy_(y)), 1.0
    shape = (1, -1) + (1,) * (y.ndim - 2)
    gamma, beta = norm.weight.view(shape), norm.bias.view(shape)
    return torch.addcmul(beta, y, gamma, out=out), gamma


def group_norm_pair(norm: nn.GroupNorm, h: Tensor, dh: Tensor) -> Pair:
    """GroupNorm and its tangent: y gamma + beta and dy gamma, gamma as the scale of
    :func:`modulated_norm_tangent` (no pass of its own); computed in float32 at least, returned in h's dtype
    (as ``nn.GroupNorm``)."""
    stats = group_norm_stats(h, norm.num_groups, norm.eps)
    value, gamma = _norm_affine(norm, stats.y)
    return value.to(h.dtype), modulated_norm_tangent(stats, dh, norm.num_groups, gamma, 0.0, 0.0).to(h.dtype)


def group_norm_packed(norm: nn.GroupNorm, zz: Tensor) -> Tensor:
    """:func:`group_norm_pair` of a packed pair, packed: without a graph to record (and in float32 or wider)
    both halves are written into one new (2B, ...) tensor, no ``torch.cat`` copy."""
    h, dh = unpack(zz)
    if _recording(zz, *norm.parameters()) or zz.dtype != torch.promote_types(zz.dtype, torch.float32):
        return pack(*group_norm_pair(norm, h, dh))
    stats = group_norm_stats(h, norm.num_groups, norm.eps)
    out = torch.empty_like(zz)
    _, gamma = _norm_affine(norm, stats.y, out=out[: h.shape[0]])
    modulated_norm_tangent(stats, dh, norm.num_groups, gamma, 0.0, 0.0, out=out[h.shape[0]:])
    return out


def sequential_packed(seq: nn.Sequential, zz: Tensor) -> Tensor:
    """Push a packed pair through a Sequential of GroupNorm, GELU, SiLU, Conv2d and Linear layers (a
    GroupNorm's (y, dy) stay unpacked for the nonlinearity that follows it)."""
    z: Tensor | Pair = zz
    for i, layer in enumerate(seq):
        if isinstance(layer, nn.GroupNorm):
            followed_by_linear = i + 1 < len(seq) and not _needs_input(seq[i + 1])
            z = group_norm_packed(layer, _as_packed(z)) if followed_by_linear else group_norm_pair(layer, *_as_pair(z))
        elif isinstance(layer, nn.GELU) and layer.approximate == "none":
            z = pointwise_packed("gelu", *_as_pair(z))
        elif isinstance(layer, nn.SiLU):
            z = pointwise_packed("silu", *_as_pair(z))
        else:
            z = linear_packed(layer, _as_packed(z))
    return _as_packed(z)


def _as_pair(z: Tensor | Pair) -> Pair:
    return z if isinstance(z, tuple) else unpack(z)


def _as_packed(z: Tensor | Pair) -> Tensor:
    return pack(*z) if isinstance(z, tuple) else z


def sequential_pair(seq: nn.Sequential, z: Tensor, dz: Tensor) -> Pair:
    """:func:`sequential_packed` for an unpacked pair: (z, dz) -> (seq(z), its tangent along dz)."""
    return unpack(sequential_packed(seq, pack(z, dz)))


def _needs_input(layer: nn.Module) -> bool:
    """Whether a layer's tangent depends on its input (GroupNorm, GELU, SiLU) rather than on its weights alone."""
    return isinstance(layer, (nn.GroupNorm, nn.GELU, nn.SiLU))


def sequential_saving(seq: nn.Sequential, z: Tensor) -> tuple[Tensor, list[Tensor | None]]:
    """seq(z), computed by its own layers (the same numbers and graph as ``seq(z)``), and the inputs of the
    layers whose tangent needs them (:func:`sequential_tangent`); the graph keeps them anyway."""
    inputs: list[Tensor | None] = []
    for layer in seq:
        inputs.append(z if _needs_input(layer) else None)
        z = layer(z)
    return z, inputs


def sequential_tangent(seq: nn.Sequential, inputs: list[Tensor | None], dz: Tensor) -> Tensor:
    """The tangent of ``seq`` along dz at the point :func:`sequential_saving` saved, on the B tangent rows only:
    a linear layer maps dz without its bias, GELU/SiLU multiply by f'(u) (u saved), GroupNorm takes one
    statistics pass over its saved input (:func:`modulated_norm_tangent`, the affine weight as the scale).
    Without a graph it costs one pass of the linear layers instead of :func:`sequential_packed`'s two."""
    for layer, u in zip(seq, inputs):
        if isinstance(layer, nn.GroupNorm):
            assert u is not None
            stats = group_norm_stats(u, layer.num_groups, layer.eps)
            scale = layer.weight.view((1, -1) + (1,) * (u.ndim - 2)) if layer.affine else 1.0
            dz = modulated_norm_tangent(stats, dz, layer.num_groups, scale, 0.0, 0.0).to(u.dtype)
        elif isinstance(layer, (nn.GELU, nn.SiLU)) and u is not None:
            if isinstance(layer, nn.GELU) and layer.approximate != "none":
                raise TypeError("no forward-mode rule for the tanh-approximate GELU; use torch.func.jvp instead")
            dz = pointwise_tangent("gelu" if isinstance(layer, nn.GELU) else "silu", u, dz)
        else:
            dz = linear_without_bias(layer, dz)
    return dz


class _DetachedPairBmm(torch.autograd.Function):
    """[x; dx] @ w as one ``bmm``, split into (x @ w, dx @ w); the gradient flows from x @ w alone."""

    @staticmethod
    def forward(x: Tensor, dx: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        y = torch.bmm(torch.cat([x, dx], dim=1), w)
        return y[:, : x.shape[1]], y[:, x.shape[1]:]

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor, Tensor], output: tuple[Tensor, Tensor]) -> None:
        x, _, w = inputs
        ctx.save_for_backward(x, w)
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx: Any, gy: Tensor, _: Tensor) -> tuple[Tensor | None, None, Tensor | None]:
        x, w = ctx.saved_tensors  # bmm's own rules: grad x = gy w^H, grad w = x^H gy (complex: conjugates)
        gx = torch.bmm(gy, w.mH) if ctx.needs_input_grad[0] else None
        gw = torch.bmm(x.mH, gy) if ctx.needs_input_grad[2] else None
        return gx, None, gw


def detached_pair_bmm(x: Tensor, dx: Tensor, w: Tensor) -> Pair:
    """(x @ w with its graph, dx @ w without one) from one batched product: where a product is bound by reading
    its weight (the spectral mode mixing at small batches), a value and its stop-gradient tangent share the
    read; the backward is ``bmm``'s for x @ w alone (no work for the tangent rows).
    Shapes: x (k, n, i), dx (k, n', i), w (k, i, o) -> (k, n, o), (k, n', o)."""
    return _DetachedPairBmm.apply(x, dx.detach(), w)
