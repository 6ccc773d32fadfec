"""Low-frequency sinusoidal features of c_noise + an MLP -> per-sample embedding (Eq. 16)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ctcm.errors import UserValueError

from .tangent_ops import sequential_pair


class TimeEmbedding(nn.Module):
    """e(c) = MLP([sin(w_k c), cos(w_k c)]_k) with w_k geometric in [1, max_freq]; for two times (a flow map's
    pair c = (c_1, c_2), Eq. 32) e(c) = MLP([features(c_1), features(c_2)]): the first linear layer adds the
    second time's features to the first's (as MeanFlow's U-Net concatenates the embeddings of t and t - r).

    The frequencies are low on purpose: d e / d c is bounded by max_freq times the MLP's Lipschitz
    constant, which keeps the JVP of the tangent objective well scaled (a 1000 * t input into
    high-frequency Fourier features blows it up; see docs/maths.md).

    Args:
        dim: output width.
        n_freqs: number of frequencies (the feature vector has 2 n_freqs entries per time).
        max_freq: the highest angular frequency.
        times: 1 (c (B,)) or 2 (c (B, 2)).
    Shapes: c_noise (B,) or (B, 2) -> (B, dim).
    """

    def __init__(self, dim: int, n_freqs: int = 16, max_freq: float = 8.0, times: int = 1) -> None:
        super().__init__()
        if times not in (1, 2):
            raise UserValueError(f"time_inputs must be 1 or 2, got {times!r}")
        self.times = times
        freqs = torch.exp(torch.linspace(0.0, math.log(max_freq), n_freqs))
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * n_freqs * times, dim), nn.SiLU(), nn.Linear(dim, dim), nn.SiLU())

    def angles(self, c_noise: Tensor) -> Tensor:
        """w_k c per time: (B,) or (B, 2) -> (B, times, n_freqs), after checking c's shape."""
        want = (c_noise.shape[0],) if self.times == 1 else (c_noise.shape[0], 2)
        if tuple(c_noise.shape) != want:
            raise UserValueError(f"this backbone takes {self.times} time input(s), so c_noise must have shape "
                                 f"{want}, got {tuple(c_noise.shape)}; set the backbone's time_inputs to match")
        return c_noise.reshape(want[0], self.times, 1).to(self.freqs.dtype) * self.freqs

    def forward(self, c_noise: Tensor) -> Tensor:
        angles = self.angles(c_noise)
        return self.mlp(torch.cat([torch.sin(angles), torch.cos(angles)], dim=2).flatten(1))

    def forward_and_tangent(self, c_noise: Tensor, dc_noise: Tensor) -> tuple[Tensor, Tensor]:
        """(e(c), de along dc) by the rules of Eq. 20: d sin(w c) = w cos(w c) dc, d cos(w c) = -w sin(w c) dc for
        each time (two times: any (dc_1, dc_2), not only MeanFlow's), then the MLP's pair. Equal to
        ``torch.func.jvp(self, (c,), (dc,))`` without its per-call overhead. Shapes: c, dc (B,) or (B, 2) ->
        (B, dim), (B, dim)."""
        angles, dangles = self.angles(c_noise), self.angles(dc_noise)
        sin, cos = torch.sin(angles), torch.cos(angles)
        features = torch.cat([sin, cos], dim=2).flatten(1)
        d_features = torch.cat([cos * dangles, -sin * dangles], dim=2).flatten(1)
        return sequential_pair(self.mlp, features, d_features)
