"""The weighted Fourier block of the WFNO (Eq. 18, 30): its forward, its packed forward mode and its one-pass
stop-gradient tangent."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctcm.errors import UserValueError

from .dropout import SharedDropout
from .layers import group_norm
from .spectral import SPECTRAL_IMPLEMENTATIONS, SpectralConv2d
from .tangent_ops import (add_to_values_, group_norm_stats, modulated_norm_pair, modulated_norm_tangent,
                          pointwise_packed, pointwise_tangent, sequential_packed, sequential_saving,
                          sequential_tangent, unpack)


def to_compute_dtype(z: Tensor, stream: Tensor) -> Tensor:
    """z in the dtype the block's linear layers compute in: autocast's when autocast is on (the fp32
    activation feeds two layers, 3x3 convolution and spectral, and one cast beats autocast's cast per
    layer), else the residual stream's (GroupNorm and GELU run in fp32 at least, also in a bf16 model)."""
    if torch.is_autocast_enabled(z.device.type):
        return z.to(torch.get_autocast_dtype(z.device.type))
    return z.to(stream.dtype)


class WeightedFourierBlock(nn.Module):
    """h <- h + a_s * K(z) + a_1 * W_1 z + a_3 * W_3 z,  z = Drop(GELU(FiLM(GroupNorm(h), e))) (Eq. 18),
    then, with a channel MLP, h <- h + M(GroupNorm(h)) (Eq. 18b).

    K is a spectral convolution (global), W_1 and W_3 are 1x1 and 3x3 convolutions (local); the
    per-channel weights a_s, a_1, a_3 ("weighted") are learned. FiLM: z * (1 + gamma(e)) + beta(e) with
    (gamma, beta) a linear map of the sample's time embedding e. Drop: :class:`SharedDropout` (one mask per
    training step, shared by the online, target and JVP passes). M: 1x1 convolution W -> m W, GELU,
    1x1 convolution m W -> W (the FNO's per-block channel MLP).

    Computed as (Eq. 30): the GroupNorm affine map and FiLM fold into one per-(sample, channel) scale and
    shift of the normalised h, and a_1 W_1 + a_3 W_3 into one 3x3 convolution (W_1 on the centre tap),
    so a block runs one normalisation, one GELU, one 3x3 convolution and one spectral convolution; the
    parameters are the ones above, unchanged.

    Options (the design study, docs/results.md): ``film=False`` drops FiLM (time then enters through the
    lifting only), ``local_kernel=1`` drops W_3 (local path 1x1 only), ``channel_mlp=m > 0`` adds M,
    ``local3_init=a`` starts a_3 at a instead of 1/3 (``0``: the 3x3 path is shut at initialisation, the
    block starts as its ``local_kernel=1`` form, and a_3 is learned open), ``taper=alpha`` tapers K's kept
    modes (Eq. 17b; K stays linear, so its tangent rule is unchanged),
    ``scale=s > 1`` runs the block on the s x s mean-pooled stream with modes // s and adds its bilinearly
    upsampled update: h <- h + Up(block(Down h) - Down h) (Eq. 18c; Down and Up are linear, so the tangent
    is the same map of the coarse tangent).
    Shapes: h (B, W, H, W'), emb (B, E) -> (B, W, H, W').
    """

    def __init__(self, width: int, emb_dim: int, modes: int | tuple[int, int], weight_drop: float,
                 spectral_impl: str, spectral_transform: str = "auto", dropout: float = 0.0, *,
                 film: bool = True, local_kernel: int = 3, channel_mlp: float = 0.0, scale: int = 1,
                 taper: float = 0.0, local3_init: float | None = None) -> None:
        super().__init__()
        if local_kernel not in (1, 3):
            raise UserValueError(f"local_kernel must be 1 or 3, got {local_kernel!r}")
        if local3_init is not None and local_kernel != 3:
            raise UserValueError(f"local3_init={local3_init} sets the 3x3 path's weight a_3: it needs local_kernel=3")
        if scale < 1:
            raise UserValueError(f"a block's scale must be a positive integer, got {scale!r}")
        self.scale = scale
        if scale > 1:
            modes = tuple(max(1, m // scale) for m in ((modes, modes) if isinstance(modes, int) else modes))
        self.dropout = SharedDropout(dropout)
        self.norm = group_norm(width)
        self.film = nn.Linear(emb_dim, 2 * width) if film else None
        if spectral_impl == "ctcm":
            self.spectral = SpectralConv2d(width, width, modes, weight_drop, spectral_transform, taper)
        elif taper:
            raise UserValueError("a mode taper needs spectral_impl='ctcm' (neuraloperator's layer has none)")
        else:
            self.spectral = SPECTRAL_IMPLEMENTATIONS[spectral_impl](width, width, modes, weight_drop)
        self.conv1 = nn.Conv2d(width, width, 1)
        self.conv3 = nn.Conv2d(width, width, 3, padding=1) if local_kernel == 3 else None
        mix = torch.full((local_kernel // 2 + 2, width, 1, 1), 1.0 / 3.0)  # a_s, a_1 (, a_3)
        if local3_init is not None:
            mix[2] = local3_init
        self.mix = nn.Parameter(mix)
        hidden = round(channel_mlp * width)
        self.mlp = (nn.Sequential(group_norm(width), nn.Conv2d(width, hidden, 1), nn.GELU(),
                                  nn.Conv2d(hidden, width, 1)) if hidden > 0 else None)

    def modulation(self, film: Tensor) -> tuple[Tensor, Tensor]:
        """FiLM output (B, 2W) -> (scale, shift) (B, W, 1, 1) of the normalised h: the GroupNorm affine
        (g, b) then FiLM give y g (1 + gamma) + b (1 + gamma) + beta (Eq. 30). Linear in ``film`` but
        for the constant 1 (a tangent passes ``film`` = its tangent and gets (g dgamma, b dgamma + dbeta));
        :meth:`full_modulation` adds the constant part (g, b)."""
        gamma, beta = film[:, :, None, None].chunk(2, dim=1)
        g, b = self.norm.weight[:, None, None], self.norm.bias[:, None, None]
        return g * gamma, torch.addcmul(beta, b, gamma)

    def full_modulation(self, emb: Tensor) -> tuple[Tensor, Tensor]:
        """(scale, shift) of y for the time embedding ``emb`` (B, E): g (1 + gamma), b (1 + gamma) + beta;
        without FiLM the GroupNorm affine (g, b) alone, (1, W, 1, 1)."""
        g, b = self.norm.weight[:, None, None], self.norm.bias[:, None, None]
        if self.film is None:
            return g[None], b[None]
        scale, shift = self.modulation(self.film(emb))
        return scale + g, shift + b

    def tangent_modulation(self, demb: Tensor) -> tuple[Tensor | float, Tensor | float]:
        """The tangent of :meth:`full_modulation` along demb: (g dgamma, b dgamma + dbeta), 0 without FiLM."""
        if self.film is None:
            return 0.0, 0.0
        return self.modulation(F.linear(demb, self.film.weight))

    def local(self, z: Tensor, spectral: Tensor, bias: bool = True) -> Tensor:
        """a_s K(z) + (a_1 W_1 + a_3 W_3) * z + (a_1 b_1 + a_3 b_3) (Eq. 30), given ``spectral`` = K(z);
        ``bias=False`` leaves out the last term (for a tangent, or a packed pair: the bias belongs to the value
        rows). Shapes: (N, W, H, W') -> same."""
        w = self.conv1.weight * self.mix[1, :, :, :, None]
        if self.conv3 is not None:
            w = self.conv3.weight * self.mix[2, :, :, :, None] + F.pad(w, (1, 1, 1, 1))
        b = self.local_bias() if bias else None
        return torch.addcmul(F.conv2d(z, w, b, padding=w.shape[-1] // 2), self.mix[0], spectral)

    def local_bias(self) -> Tensor:
        """a_1 b_1 + a_3 b_3, (W,): the bias of the folded convolution (value only, not the tangent)."""
        b = self.mix[1, :, 0, 0] * self.conv1.bias
        return b if self.conv3 is None else b + self.mix[2, :, 0, 0] * self.conv3.bias

    def down(self, h: Tensor) -> Tensor:
        return F.avg_pool2d(h, self.scale)

    def up(self, z: Tensor, like: Tensor) -> Tensor:
        return F.interpolate(z, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        if self.scale == 1:
            return self._forward(h, emb)
        coarse = self.down(h)
        return h + self.up(self._forward(coarse, emb) - coarse, h)

    def forward_and_detached_tangent(self, h: Tensor, dh: Tensor, emb: Tensor, demb: Tensor) -> tuple[Tensor, Tensor]:
        """The block with its graph, and its tangent along (dh, demb) without one (a stop-gradient tangent,
        Eq. 20, 30), in lockstep: the tangent reuses the forward's GroupNorm statistics, GELU input and channel
        MLP inputs, its linear maps run on the B tangent rows, and the spectral mode product of both is one
        (the weight read once). Shapes: h, dh (B, W, H, W'), emb, demb (B, E) -> (B, W, H, W') each."""
        if self.scale == 1:
            return self._forward_and_detached_tangent(h, dh, emb, demb)
        coarse, d_coarse = self.down(h), self.down(dh)
        out, d_out = self._forward_and_detached_tangent(coarse, d_coarse, emb, demb)
        return h + self.up(out - coarse, h), dh + self.up(d_out - d_coarse, dh)

    def forward_packed(self, hh: Tensor, emb: Tensor, demb: Tensor) -> Tensor:
        """The block and its directional derivative along (dh, demb) by the rules of Eq. 20, on a packed
        pair hh = [h; dh] (2B, W, H, W') -> [block(h, emb); its tangent]; the linear maps run once on the
        2B rows. emb, demb: (B, E)."""
        if self.scale == 1:
            return self._forward_packed(hh, emb, demb)
        coarse = self.down(hh)
        return hh + self.up(self._forward_packed(coarse, emb, demb) - coarse, hh)

    def _forward(self, h: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.full_modulation(emb)
        y = group_norm_stats(h, self.norm.num_groups, self.norm.eps).y
        z = to_compute_dtype(self.dropout(F.gelu(torch.addcmul(shift, y, scale))), h)
        h = h + self.local(z, self.spectral(z))
        return h if self.mlp is None else h + self.mlp(h)

    def _forward_and_detached_tangent(self, h: Tensor, dh: Tensor, emb: Tensor,
                                      demb: Tensor) -> tuple[Tensor, Tensor]:
        scale, shift = self.full_modulation(emb)
        stats = group_norm_stats(h, self.norm.num_groups, self.norm.eps)
        u = torch.addcmul(shift, stats.y, scale)
        z = to_compute_dtype(self.dropout(F.gelu(u)), h)
        with torch.no_grad():
            dscale, dshift = self.tangent_modulation(demb)
            du = modulated_norm_tangent(stats, dh, self.norm.num_groups, scale, dscale, dshift)
            dz = to_compute_dtype(self.dropout(pointwise_tangent("gelu", u, du)), dh)  # the step's mask
        k, dk = self.spectral.forward_with_detached_tangent(z, dz)
        h = h + self.local(z, k)
        with torch.no_grad():
            dh = dh + self.local(dz, dk, bias=False)
        if self.mlp is None:
            return h, dh
        m, inputs = sequential_saving(self.mlp, h)
        with torch.no_grad():
            dm = sequential_tangent(self.mlp, inputs, dh)
        return h + m, dh + dm

    def _forward_packed(self, hh: Tensor, emb: Tensor, demb: Tensor) -> Tensor:
        scale, shift = self.full_modulation(emb)
        dscale, dshift = self.tangent_modulation(demb)
        u, du = modulated_norm_pair(*unpack(hh), self.norm.num_groups, self.norm.eps, scale, shift, dscale, dshift)
        zz = to_compute_dtype(self.dropout.packed(pointwise_packed("gelu", u, du)), hh)
        hh = add_to_values_(hh + self.local(zz, self.spectral(zz), bias=False), self.local_bias())
        return hh if self.mlp is None else hh + sequential_packed(self.mlp, hh)

