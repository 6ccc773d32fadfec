"""DDPM++/NCSN++-style U-Net, the usual consistency-model backbone, as a peer of ``wfno`` (same contract).

Residual blocks with per-sample time conditioning, self-attention at the 16x16 level (for 32x32
inputs), average-pool down / nearest up-sampling, skip connections by concatenation, and DDPM++'s
1/sqrt(2) rescaling of every residual sum. Attention is written as explicit softmax(Q K^T / sqrt(d)) V
so that ``torch.func.jvp`` works (the fused scaled-dot-product kernels have no forward-mode rule).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ctcm.interfaces import Backbone

from .dropout import SharedDropout
from .time_embedding import TimeEmbedding
from .layers import group_norm
from ctcm.errors import UserValueError

SKIP_SCALE = 1.0 / math.sqrt(2.0)


class ResBlock(nn.Module):
    """h -> (skip(h) + conv(drop(act(GN(conv(act(GN(h))) * (1 + gamma) + beta))))) / sqrt(2).

    (gamma, beta) = Linear(e): per-sample scale-shift from the time embedding (DDPM++'s
    ``resblock_type='biggan'`` without resampling). The second conv starts at zero, so a fresh block is
    the (rescaled) identity. Shapes: h (B, C_in, H, W), emb (B, E) -> (B, C_out, H, W).
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = SharedDropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        z = self.conv1(F.silu(self.norm1(h)))
        gamma, beta = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        z = F.silu(self.norm2(z) * (1 + gamma) + beta)
        z = self.conv2(self.dropout(z))
        return (self.skip(h) + z) * SKIP_SCALE


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions, residual, rescaled by 1/sqrt(2).

    out = h + proj(softmax(Q K^T / sqrt(d)) V) with (Q, K, V) = 1x1 conv(GN(h)), d = C / heads.
    Explicit maths (no ``F.scaled_dot_product_attention``) so that forward-mode AD works.
    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, heads: int = 1) -> None:
        super().__init__()
        if channels % heads:
            raise UserValueError(f"attention channels {channels} not divisible by heads {heads}")
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: Tensor) -> Tensor:
        d = h.shape[1] // self.heads
        q, k, v = rearrange(self.qkv(self.norm(h)), "b (three heads d) x y -> three b heads d (x y)",
                            three=3, heads=self.heads)  # each (B, heads, d, N), N = H W
        logits = torch.einsum("bhdn,bhdm->bhnm", q, k) * (d**-0.5)
        attn = logits.softmax(dim=-1)
        out = torch.einsum("bhnm,bhdm->bhdn", attn, v)
        out = rearrange(out, "b heads d (x y) -> b (heads d) x y", x=h.shape[-2])
        return (h + self.proj(out)) * SKIP_SCALE


class UNet(Backbone):
    """DDPM++-style U-Net conditioned per sample on c_noise.

    Args:
        in_channels, out_channels: image channels (out defaults to in).
        model_channels: width of the first level; level i has ``model_channels * channel_mult[i]``.
        channel_mult: one multiplier per resolution level (each level halves H and W).
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attn_levels: level indices with self-attention after each residual block (level 1 is 16x16
            for a 32x32 input: DDPM++'s ``attn_resolutions=(16,)``).
        heads: attention heads.
        dropout: dropout inside residual blocks (:class:`SharedDropout`: one mask per training step, shared
            by the online, target and JVP passes).
        emb_dim: time-embedding width (default 4 * model_channels).
        n_freqs, max_freq: sinusoidal features of c_noise (see :class:`TimeEmbedding`).
        num_classes: K > 0: class-conditional, the label embedding added to the time embedding (Eq. 34).
    Shapes: x (B, C, H, W), c_noise (B,), y (B,) -> (B, C_out, H, W); H and W divisible by 2^(levels-1).
    Convolutional, so it runs at any such size (32 and 64 are tested), but it is not a neural operator:
    its receptive field is fixed in pixels.
    """

    resolution_agnostic = True

    def __init__(self, in_channels: int = 3, out_channels: int | None = None, model_channels: int = 128,
                 channel_mult: Sequence[int] = (1, 2, 2, 2), num_res_blocks: int = 2,
                 attn_levels: Sequence[int] = (1,), heads: int = 1, dropout: float = 0.0,
                 emb_dim: int | None = None, n_freqs: int = 16, max_freq: float = 8.0, num_classes: int = 0) -> None:
        super().__init__()
        if not channel_mult:
            raise UserValueError("channel_mult needs at least one level")
        bad = [lvl for lvl in attn_levels if not 0 <= lvl < len(channel_mult)]
        if bad:
            raise UserValueError(f"attn_levels {bad} out of range for {len(channel_mult)} levels")
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.n_levels = len(channel_mult)
        emb_dim = emb_dim or 4 * model_channels
        self.embed = TimeEmbedding(emb_dim, n_freqs, max_freq, num_classes)
        self.conv_in = nn.Conv2d(in_channels, model_channels, 3, padding=1)

        # encoder: record every skip's channel count
        self.down = nn.ModuleList()
        skips, ch = [model_channels], model_channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(self._stage(ch, model_channels * mult, emb_dim, dropout, level in attn_levels, heads))
                ch = model_channels * mult
                skips.append(ch)
            if level < self.n_levels - 1:
                self.down.append(Downsample())
                skips.append(ch)

        self.mid = nn.ModuleList([
            ResBlock(ch, ch, emb_dim, dropout), Attention(ch, heads), ResBlock(ch, ch, emb_dim, dropout)
        ])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                out_ch = model_channels * mult
                self.up.append(self._stage(ch + skips.pop(), out_ch, emb_dim, dropout, level in attn_levels, heads))
                ch = out_ch
            if level > 0:
                self.up.append(Upsample(ch))

        self.norm_out = group_norm(ch)
        self.conv_out = nn.Conv2d(ch, self.out_channels, 3, padding=1)

    @staticmethod
    def _stage(in_ch: int, out_ch: int, emb_dim: int, dropout: float, attn: bool, heads: int) -> "Stage":
        return Stage(ResBlock(in_ch, out_ch, emb_dim, dropout), Attention(out_ch, heads) if attn else None)

    def resample_noise_(self, generator: torch.Generator | None = None, *, rank: int = 0, world_size: int = 1) -> None:
        """A new dropout mask in every residual block (shared by the step's forwards and JVP; this rank's slice)."""
        for module in self.modules():
            if isinstance(module, SharedDropout):
                module.resample_noise_(generator, rank=rank, world_size=world_size)

    def forward(self, x: Tensor, c_noise: Tensor, y: Tensor | None = None) -> Tensor:
        factor = 2 ** (self.n_levels - 1)
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise UserValueError(f"UNet with {self.n_levels} levels needs H, W divisible by {factor}; got "
                                 f"{tuple(x.shape[-2:])}")
        emb = self.embed(c_noise, y)
        h = self.conv_in(x)
        hs = [h]
        for module in self.down:
            h = module(h, emb) if isinstance(module, Stage) else module(h)
            hs.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for module in self.up:
            h = module(torch.cat([h, hs.pop()], dim=1), emb) if isinstance(module, Stage) else module(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Stage(nn.Module):
    """A residual block, then attention when present. Shapes: (B, C_in, H, W), (B, E) -> (B, C_out, H, W)."""

    def __init__(self, res: ResBlock, attn: Attention | None) -> None:
        super().__init__()
        self.res = res
        self.attn = attn

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        h = self.res(h, emb)
        return self.attn(h) if self.attn is not None else h


class Downsample(nn.Module):
    """2x2 average pooling: (B, C, H, W) -> (B, C, H/2, W/2) (DDPM++'s FIR-free variant)."""

    def forward(self, h: Tensor) -> Tensor:
        return F.avg_pool2d(h, 2)


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling then a 3x3 conv: (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        return self.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
