"""Weighted FNO-2D backbone (Eq. 18): lifting, N weighted Fourier blocks with per-sample FiLM, projection."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctcm.errors import UserValueError
from ctcm.interfaces import Backbone

from .layers import coordinate_grid, group_norm
from .spectral import SPECTRAL_IMPLEMENTATIONS, SpectralConv2d
from .tangent_ops import (linear_packed, linear_without_bias, pack, sequential_packed, sequential_saving,
                          sequential_tangent, unpack)
from .time_embedding import TimeEmbedding
from .wfno_block import WeightedFourierBlock


class WFNO2d(Backbone):
    """Weighted Fourier Neural Operator in 2-D, conditioned per sample on c_noise.

    The defaults are the 0.4 design, the winner of the design study (docs/results.md, "Backbone design"):
    coordinate-grid and time input channels, a 1x1 lifting, a 1x1 local path and a channel MLP in each block,
    per-block FiLM and the learned weights kept. The 0.3 design is ``lift_hidden=None`` (a two-layer lifting
    MLP; 0.3 checkpoints store it); the 0.2 design is ``legacy_defaults`` (what checkpoints written before 0.3
    rebuild).

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
        positional_grid: append the 2 coordinate channels of [0, 1]^2 to the input (as the FNO does): the
            blocks are translation-equivariant, so without it the network cannot know where it is.
        time_channels: T > 0 appends a linear map of the time embedding (B, T) as T constant channels to
            the input (as the FNO does), besides or instead of FiLM.
        film: per-block FiLM of the time embedding (``False``: time enters through ``time_channels`` only).
        lift_hidden: 0 (default) lifts by one 1x1 convolution; L > 0 by a two-layer channel MLP with L hidden
            channels; ``None``: L = 2 * width (the 0.3 design's default, which its checkpoints store).
        local_kernel: 3 (W_1 and W_3 in each block) or 1 (W_1 only).
        local3_init: with ``local_kernel=3``, the initial per-channel weight a_3 of W_3 (``None``: 1/3, as
            a_s and a_1); ``0`` shuts the 3x3 path at initialisation, so the network starts as its 1x1 form
            and training opens the path (Eq. 18; the study's `w4-k3gate`).
        channel_mlp: m > 0 adds a per-block channel MLP of m * width hidden channels (Eq. 18b); ``0``: none
            (on the 0.3 design, `w-no-mlp`: 0.76x its step, and at 2x behind the 0.4 default in one- and
            two-step FID@1k, docs/results.md).
        lift_film: FiLM of the lifted input by the time embedding, h_0 = L(x) (1 + gamma_0(e)) + beta_0(e)
            (Eq. 18d): lets the network scale the input's pixel noise down where the noise level is high.
        block_scales: per block, the factor s of the resolution it works at (1: full; 2: half, with modes // 2;
            Eq. 18c), e.g. ``[1, 2, 2, 1]`` for a U-shaped arrangement; ``None``: every block at full resolution.
        mode_taper: alpha >= 0, a fixed Gaussian taper exp(-alpha |k / K|^2) of every spectral convolution's
            kept modes (Eq. 17b; 0: none, the 0.2 and 0.3 designs); needs ``spectral_impl='ctcm'``.
        time_inputs: 1 (c_noise (B,)) or 2 (a flow map's pair (B, 2), Eq. 35: one embedding of both times,
            :class:`TimeEmbedding`).
        num_classes: K > 0: class-conditional, the label embedding added to the time embedding (Eq. 34; the
            model section's ``num_classes`` sets it); labels y (B,) in [0, K], K (or ``y=None``) the null class.
    Shapes: x (B, C, H, W), c_noise (B,) or (B, 2), y (B,) -> (B, C_out, H, W); any H, W with H >= m1
    (resolution-agnostic).
    """

    resolution_agnostic = True
    #: the 0.2 design: a checkpoint written before every argument was stored rebuilds it (ctcm.build.stored_model)
    legacy_defaults = {"positional_grid": False, "time_channels": 0, "film": True, "lift_hidden": 0,
                       "local_kernel": 3, "channel_mlp": 0.0, "block_scales": None, "lift_film": False,
                       "mode_taper": 0.0, "local3_init": None}

    def __init__(self, in_channels: int = 3, out_channels: int | None = None, width: int = 128,
                 n_layers: int = 6, modes: int | tuple[int, int] = 16, emb_dim: int | None = None,
                 n_freqs: int = 16, max_freq: float = 8.0, spectral_weight_drop: float = 0.0,
                 spectral_impl: str = "ctcm", spectral_transform: str = "auto", dropout: float = 0.0,
                 positional_grid: bool = True, time_channels: int = 16, film: bool = True,
                 lift_hidden: int | None = 0, local_kernel: int = 1, channel_mlp: float = 0.5,
                 block_scales: list[int] | None = None, lift_film: bool = False, mode_taper: float = 0.0,
                 local3_init: float | None = None, time_inputs: int = 1, num_classes: int = 0) -> None:
        super().__init__()
        if spectral_impl not in SPECTRAL_IMPLEMENTATIONS:
            raise UserValueError(f"spectral_impl must be one of {sorted(SPECTRAL_IMPLEMENTATIONS)}, "
                                 f"got {spectral_impl!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        emb_dim = emb_dim or min(4 * width, 512)
        if not film and time_channels <= 0:
            raise UserValueError("film=False needs time_channels > 0: the network would not see the time")
        scales = list(block_scales) if block_scales is not None else [1] * n_layers
        if len(scales) != n_layers:
            raise UserValueError(f"block_scales has {len(scales)} entries for n_layers={n_layers}: give one per block")
        self.positional_grid = positional_grid
        self.time_inputs = time_inputs
        self.embed = TimeEmbedding(emb_dim, n_freqs, max_freq, time_inputs, num_classes)
        self.time_proj = nn.Linear(emb_dim, time_channels) if time_channels > 0 else None
        lift_in = in_channels + (2 if positional_grid else 0) + max(time_channels, 0)
        if lift_hidden is not None and lift_hidden < 0:
            raise UserValueError(f"lift_hidden must be 0 (one 1x1 lifting), a positive width or None (2 x width), "
                                 f"got {lift_hidden}")
        lift_hidden = 2 * width if lift_hidden is None else lift_hidden
        self.lift: nn.Module = (nn.Conv2d(lift_in, width, 1) if lift_hidden == 0 else
                                nn.Sequential(nn.Conv2d(lift_in, lift_hidden, 1), nn.GELU(),
                                              nn.Conv2d(lift_hidden, width, 1)))
        self.lift_film = nn.Linear(emb_dim, 2 * width) if lift_film else None
        self.blocks = nn.ModuleList(
            WeightedFourierBlock(width, emb_dim, modes, spectral_weight_drop, spectral_impl, spectral_transform,
                                 dropout, film=film, local_kernel=local_kernel, channel_mlp=channel_mlp, scale=scale,
                                 taper=mode_taper, local3_init=local3_init)
            for scale in scales
        )
        self.project = nn.Sequential(
            group_norm(width), nn.GELU(), nn.Conv2d(width, 2 * width, 1), nn.GELU(),
            nn.Conv2d(2 * width, self.out_channels, 1),
        )

    def lift_input(self, x: Tensor, emb: Tensor) -> Tensor:
        """[x, grid, P e] (B, C + 2 + T, H, W): the image with the options' extra channels."""
        parts = [x]
        if self.positional_grid:
            parts.append(coordinate_grid(x))
        if self.time_proj is not None:
            parts.append(self.time_proj(emb).to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:]))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def lift_input_tangent(self, dx: Tensor, demb: Tensor) -> Tensor:
        """The tangent of :meth:`lift_input` along (dx, demb): [dx, 0, P de] (the grid is constant)."""
        parts = [dx]
        if self.positional_grid:
            parts.append(dx.new_zeros(dx.shape[0], 2, *dx.shape[2:]))
        if self.time_proj is not None:
            dt = F.linear(demb, self.time_proj.weight).to(dx.dtype)
            parts.append(dt[:, :, None, None].expand(-1, -1, *dx.shape[2:]))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def modulate_lift(self, h: Tensor, emb: Tensor) -> Tensor:
        """h (1 + gamma_0(e)) + beta_0(e) with the lift's FiLM (Eq. 18d); h unchanged without it."""
        if self.lift_film is None:
            return h
        gamma, beta = self.lift_film(emb)[:, :, None, None].chunk(2, dim=1)
        return torch.addcmul(beta, h, 1 + gamma)

    def modulate_lift_tangent(self, h: Tensor, dh: Tensor, emb: Tensor, demb: Tensor) -> Tensor:
        """The tangent of :meth:`modulate_lift`: dh (1 + gamma) + h dgamma + dbeta."""
        if self.lift_film is None:
            return dh
        gamma, _ = self.lift_film(emb)[:, :, None, None].chunk(2, dim=1)
        dgamma, dbeta = F.linear(demb, self.lift_film.weight)[:, :, None, None].chunk(2, dim=1)
        return torch.addcmul(torch.addcmul(dbeta, h, dgamma), dh, 1 + gamma)

    def forward(self, x: Tensor, c_noise: Tensor, y: Tensor | None = None) -> Tensor:
        emb = self.embed(c_noise, y)
        h = self.modulate_lift(self.lift(self.lift_input(x, emb)), emb)
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

    def forward_and_tangent(self, x: Tensor, dx: Tensor, c_noise: Tensor, dc_noise: Tensor,
                            y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(F(x, c), dF along (dx, dc)) by hand-written forward mode (Eq. 20): each linear layer runs once
        on the doubled batch, so the JVP costs about two forwards instead of ``torch.func.jvp``'s three
        convolutions per convolution. Equal to ``torch.func.jvp(self, (x, c), (dx, dc))`` at a fixed label y
        (tested)."""
        emb, demb = self.embed.forward_and_tangent(c_noise, dc_noise, y)
        hh = self.lift_packed(pack(self.lift_input(x, emb), self.lift_input_tangent(dx, demb)))
        if self.lift_film is not None:
            h, dh = unpack(hh)
            hh = pack(self.modulate_lift(h, emb), self.modulate_lift_tangent(h, dh, emb, demb))
        for block in self.blocks:
            hh = block.forward_packed(hh, emb, demb)
        return unpack(sequential_packed(self.project, hh))

    def lift_packed(self, zz: Tensor) -> Tensor:
        """The lifting on a packed pair [z; dz] (one convolution, or the two-layer channel MLP)."""
        return linear_packed(self.lift, zz) if isinstance(self.lift, nn.Conv2d) else sequential_packed(self.lift, zz)

    def forward_and_detached_tangent(self, x: Tensor, dx: Tensor, c_noise: Tensor, dc_noise: Tensor,
                                     y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """F(x, c) with its graph, and its tangent along (dx, dc) without one, the tangent reusing the
        forward's activations (each block's y, 1/s, GELU input; the lifting, channel and projection MLPs'
        layer inputs): the linear maps run on the B tangent rows alone, about one forward of extra work
        instead of :meth:`forward_and_tangent`'s two. The small time embedding recomputes its value."""
        emb = self.embed(c_noise, y)
        z = self.lift_input(x, emb)
        lift_mlp = isinstance(self.lift, nn.Sequential)
        h, lift_inputs = sequential_saving(self.lift, z) if lift_mlp else (self.lift(z), [])
        with torch.no_grad():
            demb = self.embed.forward_and_tangent(c_noise, dc_noise)[1]
            dz = self.lift_input_tangent(dx, demb)
            dh = sequential_tangent(self.lift, lift_inputs, dz) if lift_mlp else linear_without_bias(self.lift, dz)
            dh = self.modulate_lift_tangent(h, dh, emb, demb)
        h = self.modulate_lift(h, emb)
        for block in self.blocks:
            h, dh = block.forward_and_detached_tangent(h, dh, emb, demb)
        out, project_inputs = sequential_saving(self.project, h)
        with torch.no_grad():
            d_out = sequential_tangent(self.project, project_inputs, dh)
        return out, d_out
