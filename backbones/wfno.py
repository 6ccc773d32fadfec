"""Weighted FNO-2D backbone (Eq. 18): lifting, N weighted Fourier blocks with per-sample FiLM, projection."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctcm.interfaces import Backbone

from .dropout import SharedDropout
from .layers import group_norm
from .spectral import SPECTRAL_IMPLEMENTATIONS, SpectralConv2d
from .tangent_ops import (add_to_values_, group_norm_stats, linear_packed, modulated_norm_pair,
                          modulated_norm_tangent, pack, pointwise_packed, pointwise_tangent, sequential_packed,
                          unpack)
from .time_embedding import TimeEmbedding


def to_compute_dtype(z: Tensor, stream: Tensor) -> Tensor:
    """z in the dtype the block's linear layers compute in: autocast's when autocast is on (the fp32
    activation feeds two layers, 3x3 convolution and spectral, and one cast beats autocast's cast per
    layer), else the residual stream's (GroupNorm and GELU run in fp32 at least, also in a bf16 model)."""
    if torch.is_autocast_enabled(z.device.type):
        return z.to(torch.get_autocast_dtype(z.device.type))
    return z.to(stream.dtype)


class WeightedFourierBlock(nn.Module):
    """h <- h + a_s * K(z) + a_1 * W_1 z + a_3 * W_3 z,  z = Drop(GELU(FiLM(GroupNorm(h), e))) (Eq. 18).

    K is a spectral convolution (global), W_1 and W_3 are 1x1 and 3x3 convolutions (local); the
    per-channel weights a_s, a_1, a_3 ("weighted") are learned. FiLM: z * (1 + gamma(e)) + beta(e) with
    (gamma, beta) a linear map of the sample's time embedding e. Drop: :class:`SharedDropout` (one mask per
    training step, shared by the online, target and JVP passes).

    Computed as (Eq. 30): the GroupNorm affine map and FiLM fold into one per-(sample, channel) scale and
    shift of the normalised h, and a_1 W_1 + a_3 W_3 into one 3x3 convolution (W_1 on the centre tap),
    so a block runs one normalisation, one GELU, one 3x3 convolution and one spectral convolution; the
    parameters are the ones above, unchanged.
    Shapes: h (B, W, H, W'), emb (B, E) -> (B, W, H, W').
    """

    def __init__(self, width: int, emb_dim: int, modes: int | tuple[int, int], weight_drop: float,
                 spectral_impl: str, spectral_transform: str = "auto", dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = SharedDropout(dropout)
        self.norm = group_norm(width)
        self.film = nn.Linear(emb_dim, 2 * width)
        if spectral_impl == "ctcm":
            self.spectral = SpectralConv2d(width, width, modes, weight_drop, spectral_transform)
        else:
            self.spectral = SPECTRAL_IMPLEMENTATIONS[spectral_impl](width, width, modes, weight_drop)
        self.conv1 = nn.Conv2d(width, width, 1)
        self.conv3 = nn.Conv2d(width, width, 3, padding=1)
        self.mix = nn.Parameter(torch.full((3, width, 1, 1), 1.0 / 3.0))

    def modulation(self, film: Tensor) -> tuple[Tensor, Tensor]:
        """FiLM output (B, 2W) -> (scale, shift) (B, W, 1, 1) of the normalised h: the GroupNorm affine
        (g, b) then FiLM give y g (1 + gamma) + b (1 + gamma) + beta (Eq. 30). Linear in ``film`` but
        for the constant 1 (a tangent passes ``film`` = its tangent and gets (g dgamma, b dgamma + dbeta));
        :meth:`full_modulation` adds the constant part (g, b)."""
        gamma, beta = film[:, :, None, None].chunk(2, dim=1)
        g, b = self.norm.weight[:, None, None], self.norm.bias[:, None, None]
        return g * gamma, torch.addcmul(beta, b, gamma)

    def full_modulation(self, emb: Tensor) -> tuple[Tensor, Tensor]:
        """(scale, shift) of y for the time embedding ``emb`` (B, E): g (1 + gamma), b (1 + gamma) + beta."""
        scale, shift = self.modulation(self.film(emb))
        return scale + self.norm.weight[:, None, None], shift + self.norm.bias[:, None, None]

    def local(self, z: Tensor, bias: bool = True) -> Tensor:
        """a_s K(z) + (a_1 W_1 + a_3 W_3) * z + (a_1 b_1 + a_3 b_3) (Eq. 30); ``bias=False`` leaves out the
        last term (for a packed pair: the bias belongs to the value rows). Shapes: (N, W, H, W') -> same."""
        w3 = self.conv3.weight * self.mix[2, :, :, :, None]
        w = w3 + F.pad(self.conv1.weight * self.mix[1, :, :, :, None], (1, 1, 1, 1))
        b = self.local_bias() if bias else None
        return torch.addcmul(F.conv2d(z, w, b, padding=1), self.mix[0], self.spectral(z))

    def local_bias(self) -> Tensor:
        """a_1 b_1 + a_3 b_3, (W,): the bias of the folded convolution (value only, not the tangent)."""
        return self.mix[1, :, 0, 0] * self.conv1.bias + self.mix[2, :, 0, 0] * self.conv3.bias

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        return self.forward_saving(h, emb)[0]

    def forward_saving(self, h: Tensor, emb: Tensor) -> tuple[Tensor, BlockActivations]:
        """The block, and the activations its tangent needs (:meth:`tangent`): nothing computed twice."""
        scale, shift = self.full_modulation(emb)
        y, rstd = group_norm_stats(h, self.norm.num_groups, self.norm.eps)
        u = torch.addcmul(shift, y, scale)
        z = self.dropout(F.gelu(u))
        return h + self.local(to_compute_dtype(z, h)), BlockActivations(y, rstd, u, scale)

    def tangent(self, saved: BlockActivations, dh: Tensor, demb: Tensor) -> Tensor:
        """The block's tangent along (dh, demb) at the point :meth:`forward_saving` saved (Eq. 20, 30): the
        linear maps run on dz alone (B rows). Call it without a graph (a stop-gradient tangent). Shapes:
        dh (B, W, H, W'), demb (B, E) -> (B, W, H, W')."""
        dscale, dshift = self.modulation(F.linear(demb, self.film.weight))
        du = modulated_norm_tangent(saved.y, saved.rstd, dh, self.norm.num_groups, saved.scale, dscale, dshift)
        dz = self.dropout(pointwise_tangent("gelu", saved.u, du))  # the step's mask, drawn by the forward
        return dh + self.local(to_compute_dtype(dz, dh), bias=False)

    def forward_packed(self, hh: Tensor, emb: Tensor, demb: Tensor) -> Tensor:
        """The block and its directional derivative along (dh, demb) by the rules of Eq. 20, on a packed
        pair hh = [h; dh] (2B, W, H, W') -> [block(h, emb); its tangent]; the linear maps run once on the
        2B rows. emb, demb: (B, E)."""
        scale, shift = self.full_modulation(emb)
        dscale, dshift = self.modulation(F.linear(demb, self.film.weight))
        u, du = modulated_norm_pair(*unpack(hh), self.norm.num_groups, self.norm.eps, scale, shift, dscale, dshift)
        zz = self.dropout.packed(pointwise_packed("gelu", u, du))
        return add_to_values_(hh + self.local(to_compute_dtype(zz, hh), bias=False), self.local_bias())


class BlockActivations(NamedTuple):
    """What a block's tangent needs from its forward: y = GroupNorm(h) (no affine), 1/s (B, W, 1, 1), the
    GELU input u and the scale of y (B, W, 1, 1)."""

    y: Tensor
    rstd: Tensor
    u: Tensor
    scale: Tensor


class WFNO2d(Backbone):
    """Weighted Fourier Neural Operator in 2-D, conditioned per sample on c_noise.

    Args:
        in_channels, out_channels: image channels (out defaults to in).
        width: hidden channels.
        n_layers: number of weighted Fourier blocks.
        modes: Fourier modes kept, int or (m1, m2) in neuraloperator's convention.
        emb_dim: time-embedding width (default 4 * width, capped at 512).
        n_freqs, max_freq: the sinusoidal features of c_noise (see :class:`TimeEmbedding`).
        spectral_weight_drop: DropConnect probability on the spectral weights during training.
        dropout: feature dropout in each block (ECT/iCT use 0.2-0.3 on CIFAR-10), mask shared within a step.
        spectral_impl: ``ctcm`` (own layer, any dtype) or ``neuralop`` (neuraloperator's SpectralConv, float32).
        spectral_transform: the ``ctcm`` layer's transforms: ``auto`` (default), ``fft`` or ``dft`` (matrix
            products, Eq. 27-29); see :class:`SpectralConv2d` and docs/architecture.md.
    Shapes: x (B, C, H, W), c_noise (B,) -> (B, C_out, H, W); any H, W with H >= m1 (resolution-agnostic).
    """

    resolution_agnostic = True

    def __init__(self, in_channels: int = 3, out_channels: int | None = None, width: int = 128,
                 n_layers: int = 6, modes: int | tuple[int, int] = 16, emb_dim: int | None = None,
                 n_freqs: int = 16, max_freq: float = 8.0, spectral_weight_drop: float = 0.0,
                 spectral_impl: str = "ctcm", spectral_transform: str = "auto", dropout: float = 0.0) -> None:
        super().__init__()
        if spectral_impl not in SPECTRAL_IMPLEMENTATIONS:
            raise ValueError(f"spectral_impl must be one of {sorted(SPECTRAL_IMPLEMENTATIONS)}, got {spectral_impl!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        emb_dim = emb_dim or min(4 * width, 512)
        self.embed = TimeEmbedding(emb_dim, n_freqs, max_freq)
        self.lift = nn.Conv2d(in_channels, width, 1)
        self.blocks = nn.ModuleList(
            WeightedFourierBlock(width, emb_dim, modes, spectral_weight_drop, spectral_impl, spectral_transform,
                                 dropout)
            for _ in range(n_layers)
        )
        self.project = nn.Sequential(
            group_norm(width), nn.GELU(), nn.Conv2d(width, 2 * width, 1), nn.GELU(),
            nn.Conv2d(2 * width, self.out_channels, 1),
        )

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        emb = self.embed(c_noise)
        h = self.lift(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.project(h)

    def resample_noise_(self, generator: torch.Generator | None = None, *, rank: int = 0, world_size: int = 1) -> None:
        """New dropout (per sample: this rank's slice) and spectral weight-drop (per step) masks in every block
        (neuraloperator's layer has no weight-drop)."""
        for block in self.blocks:
            block.dropout.resample_noise_(generator, rank=rank, world_size=world_size)
            if isinstance(block.spectral, SpectralConv2d):
                block.spectral.resample_noise_(generator)

    def forward_and_tangent(self, x: Tensor, dx: Tensor, c_noise: Tensor, dc_noise: Tensor) -> tuple[Tensor, Tensor]:
        """(F(x, c), dF along (dx, dc)) by hand-written forward mode (Eq. 20): each linear layer runs once
        on the doubled batch, so the JVP costs about two forwards instead of ``torch.func.jvp``'s three
        convolutions per convolution. Equal to ``torch.func.jvp(self, (x, c), (dx, dc))`` (tested)."""
        emb, demb = self.embed.forward_and_tangent(c_noise, dc_noise)
        hh = linear_packed(self.lift, pack(x, dx))
        for block in self.blocks:
            hh = block.forward_packed(hh, emb, demb)
        return unpack(sequential_packed(self.project, hh))

    def forward_and_detached_tangent(self, x: Tensor, dx: Tensor, c_noise: Tensor,
                                     dc_noise: Tensor) -> tuple[Tensor, Tensor]:
        """F(x, c) with its graph, and its tangent along (dx, dc) without one, the tangent reusing the
        forward's activations (each block's y, 1/s, GELU input): about one forward of extra work instead
        of :meth:`forward_and_tangent`'s two. The small time embedding and projection head recompute their
        value inside the no-grad packed rules."""
        emb, h = self.embed(c_noise), self.lift(x)
        with torch.no_grad():
            demb = self.embed.forward_and_tangent(c_noise, dc_noise)[1]
            dh = self.lift._conv_forward(dx, self.lift.weight, None)
        for block in self.blocks:
            h, saved = block.forward_saving(h, emb)
            with torch.no_grad():
                dh = block.tangent(saved, dh, demb)
        with torch.no_grad():
            d_out = unpack(sequential_packed(self.project, pack(h, dh)))[1]
        return self.project(h), d_out
