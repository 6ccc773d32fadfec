"""neuraloperator's own FNO, conditioned per sample on c_noise through its input channels (a peer of ``wfno``).

F(x, c) = Q( FNOBlocks( P([x, grid, e(c) 1_{HxW}]) ) ): the time embedding e(c) (B, E) is broadcast
to E constant channels and concatenated to the image (and a 2-channel [0, 1]^2 coordinate grid, as
neuraloperator's ``FNO`` does by default) before the lifting P. The blocks, lifting and projection are
neuraloperator's ``FNOBlocks`` and ``ChannelMLP`` with their defaults (linear FNO skip, channel MLP with
soft-gating skip, GELU). neuraloperator's AdaIN shares one embedding across the batch, so per-sample
conditioning can only enter through the data; comparing with ``wfno`` shows what weighted blocks and
per-block FiLM add.

Not a subclass of neuraloperator's ``BaseModel`` (its ``__new__`` breaks nested modules and
``weights_only`` loading). float32 only: neuraloperator 2.0's ``SpectralConv`` allocates a complex64
output buffer whatever the input dtype. Under bf16 / fp16 autocast its spectral layers run in float32
(cuFFT has no bf16 kernels: "Unsupported dtype BFloat16"); the rest of the network is autocast.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ctcm.interfaces import Backbone

from .layers import coordinate_grid
from .optional import import_neuralop
from .time_embedding import TimeEmbedding
from ctcm.errors import UserTypeError


def _float32_input(module: torch.nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: a half-precision input (from autocast) -> float32, for FFT layers."""
    x, *rest = args
    return (x.float(), *rest) if x.dtype in (torch.float16, torch.bfloat16) else args


class FNOBackbone(Backbone):
    """neuraloperator's FNO blocks with the time embedding fed as constant input channels.

    Args:
        in_channels, out_channels: image channels (out defaults to in).
        width: hidden channels of the Fourier blocks.
        n_layers: number of Fourier blocks.
        modes: Fourier modes kept, int or (m1, m2) (neuraloperator's ``n_modes``).
        time_channels: E, the channels of the time embedding appended to the input.
        lifting_ratio, projection_ratio: hidden widths of the lifting / projection MLPs, as multiples of
            ``width`` (neuraloperator's ``FNO`` defaults: 2 and 2).
        channel_mlp_expansion: hidden width of each block's channel MLP, as a multiple of ``width``.
        positional_grid: append the 2 coordinate channels (neuraloperator's default ``"grid"`` embedding).
        n_freqs, max_freq: the sinusoidal features of c_noise (see :class:`TimeEmbedding`).
        num_classes: K > 0: class-conditional, the label embedding added to the time embedding (Eq. 34).
    Shapes: x (B, C, H, W), c_noise (B,), y (B,) -> (B, C_out, H, W); any H, W with H >= m1 (resolution-agnostic).
    """

    resolution_agnostic = True

    def __init__(self, in_channels: int = 3, out_channels: int | None = None, width: int = 128,
                 n_layers: int = 6, modes: int | tuple[int, int] = 16, time_channels: int = 32,
                 lifting_ratio: float = 2.0, projection_ratio: float = 2.0, channel_mlp_expansion: float = 0.5,
                 positional_grid: bool = True, n_freqs: int = 16, max_freq: float = 8.0, num_classes: int = 0) -> None:
        super().__init__()
        ChannelMLP = import_neuralop("layers.channel_mlp", "the 'fno' backbone").ChannelMLP
        FNOBlocks = import_neuralop("layers.fno_block", "the 'fno' backbone").FNOBlocks

        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.positional_grid = positional_grid
        n_modes = (modes, modes) if isinstance(modes, int) else tuple(int(m) for m in modes)
        self.embed = TimeEmbedding(time_channels, n_freqs, max_freq, num_classes)
        lift_in = in_channels + time_channels + (2 if positional_grid else 0)
        self.lifting = ChannelMLP(in_channels=lift_in, out_channels=width,
                                  hidden_channels=round(lifting_ratio * width), n_layers=2, n_dim=2)
        self.blocks = FNOBlocks(width, width, n_modes, n_layers=n_layers,
                                channel_mlp_expansion=channel_mlp_expansion)
        for conv in self.blocks.convs:
            conv.register_forward_pre_hook(_float32_input)
        self.projection = ChannelMLP(in_channels=width, out_channels=self.out_channels,
                                     hidden_channels=round(projection_ratio * width), n_layers=2, n_dim=2)

    def forward(self, x: Tensor, c_noise: Tensor, y: Tensor | None = None) -> Tensor:
        if x.dtype != torch.float32:
            raise UserTypeError(
                f"neuraloperator's SpectralConv computes in complex64 only, so the 'fno' backbone runs in "
                f"float32 (or under autocast); got {x.dtype}. Use 'wfno' for other dtypes."
            )
        b, _, h, w = x.shape
        emb = self.embed(c_noise, y).to(x.dtype)[:, :, None, None].expand(b, -1, h, w)
        parts = [x, coordinate_grid(x), emb] if self.positional_grid else [x, emb]
        z = self.lifting(torch.cat(parts, dim=1))
        for i in range(self.blocks.n_layers):
            z = self.blocks(z, i)
        return self.projection(z)
