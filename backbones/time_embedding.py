"""Low-frequency sinusoidal features of c_noise + an MLP -> per-sample embedding (Eq. 16)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .tangent_ops import sequential_pair


class TimeEmbedding(nn.Module):
    """e(c) = MLP([sin(w_k c), cos(w_k c)]_k) with w_k geometric in [1, max_freq].

    The frequencies are low on purpose: d e / d c is bounded by max_freq times the MLP's Lipschitz
    constant, which keeps the JVP of the tangent objective well scaled (a 1000 * t input into
    high-frequency Fourier features blows it up; see docs/maths.md).

    Args:
        dim: output width.
        n_freqs: number of frequencies (the feature vector has 2 n_freqs entries).
        max_freq: the highest angular frequency.
    Shapes: c_noise (B,) -> (B, dim).
    """

    def __init__(self, dim: int, n_freqs: int = 16, max_freq: float = 8.0) -> None:
        super().__init__()
        freqs = torch.exp(torch.linspace(0.0, math.log(max_freq), n_freqs))
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * n_freqs, dim), nn.SiLU(), nn.Linear(dim, dim), nn.SiLU())

    def forward(self, c_noise: Tensor) -> Tensor:
        angles = c_noise[:, None].to(self.freqs.dtype) * self.freqs[None, :]
        return self.mlp(torch.cat([torch.sin(angles), torch.cos(angles)], dim=1))

    def forward_and_tangent(self, c_noise: Tensor, dc_noise: Tensor) -> tuple[Tensor, Tensor]:
        """(e(c), de along dc) by the rules of Eq. 20: d sin(w c) = w cos(w c) dc, d cos(w c) = -w sin(w c) dc,
        then the MLP's pair. Equal to ``torch.func.jvp(self, (c,), (dc,))`` without its per-call overhead.
        Shapes: (B,), (B,) -> (B, dim), (B, dim)."""
        angles = c_noise[:, None].to(self.freqs.dtype) * self.freqs[None, :]
        dangles = dc_noise[:, None].to(self.freqs.dtype) * self.freqs[None, :]
        sin, cos = torch.sin(angles), torch.cos(angles)
        features, d_features = torch.cat([sin, cos], dim=1), torch.cat([cos * dangles, -sin * dangles], dim=1)
        return sequential_pair(self.mlp, features, d_features)
