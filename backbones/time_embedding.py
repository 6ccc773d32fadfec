"""Low-frequency sinusoidal features of c_noise + an MLP -> per-sample embedding (Eq. 16), plus a class-label
embedding for class-conditional models (Eq. 34)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ctcm.errors import UserValueError

from .tangent_ops import sequential_pair


class TimeEmbedding(nn.Module):
    """e(c) = MLP([sin(w_k c), cos(w_k c)]_k) with w_k geometric in [1, max_freq]; for a class-conditional
    backbone (``num_classes`` = K > 0) e(c, y) = MLP(...) + E[y] (Eq. 34), E a (K + 1, dim) table whose row K
    is the null class (label dropout, unconditional calls: ``y=None``).

    The frequencies are low on purpose: d e / d c is bounded by max_freq times the MLP's Lipschitz
    constant, which keeps the JVP of the tangent objective well scaled (a 1000 * t input into
    high-frequency Fourier features blows it up; see docs/maths.md).

    Args:
        dim: output width.
        n_freqs: number of frequencies (the feature vector has 2 n_freqs entries).
        max_freq: the highest angular frequency.
        num_classes: K > 0 adds the label table E (initialised N(0, 0.02^2), as DiT's); 0: none (and no
            parameters, so unconditional checkpoints keep their keys).
    Shapes: c_noise (B,), y (B,) int in [0, K] or None -> (B, dim).
    """

    def __init__(self, dim: int, n_freqs: int = 16, max_freq: float = 8.0, num_classes: int = 0) -> None:
        super().__init__()
        freqs = torch.exp(torch.linspace(0.0, math.log(max_freq), n_freqs))
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * n_freqs, dim), nn.SiLU(), nn.Linear(dim, dim), nn.SiLU())
        self.num_classes = num_classes
        self.labels = nn.Embedding(num_classes + 1, dim) if num_classes > 0 else None
        if self.labels is not None:
            nn.init.normal_(self.labels.weight, std=0.02)

    def label_embedding(self, y: Tensor | None, like: Tensor) -> Tensor | None:
        """E[y] (B, dim) in ``like``'s dtype, the null row for ``y=None``; None for an unconditional embedding
        (which refuses labels)."""
        if self.labels is None:
            if y is not None:
                raise UserValueError("class labels y given to an unconditional backbone; build the model with "
                                 "model.num_classes=K to condition on classes")
            return None
        if y is None:
            y = torch.full(like.shape[:1], self.num_classes, dtype=torch.long, device=like.device)
        return self.labels(y).to(like.dtype)

    def forward(self, c_noise: Tensor, y: Tensor | None = None) -> Tensor:
        angles = c_noise[:, None].to(self.freqs.dtype) * self.freqs[None, :]
        e = self.mlp(torch.cat([torch.sin(angles), torch.cos(angles)], dim=1))
        label = self.label_embedding(y, e)
        return e if label is None else e + label

    def forward_and_tangent(self, c_noise: Tensor, dc_noise: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(e(c, y), de along dc) by the rules of Eq. 20: d sin(w c) = w cos(w c) dc, d cos(w c) = -w sin(w c) dc,
        then the MLP's pair; a label is constant along the path, so E[y] adds to e and nothing to de. Equal to
        ``torch.func.jvp(lambda c: self(c, y), (c,), (dc,))`` without its per-call overhead.
        Shapes: (B,), (B,) -> (B, dim), (B, dim)."""
        angles = c_noise[:, None].to(self.freqs.dtype) * self.freqs[None, :]
        dangles = dc_noise[:, None].to(self.freqs.dtype) * self.freqs[None, :]
        sin, cos = torch.sin(angles), torch.cos(angles)
        features, d_features = torch.cat([sin, cos], dim=1), torch.cat([cos * dangles, -sin * dangles], dim=1)
        e, de = sequential_pair(self.mlp, features, d_features)
        label = self.label_embedding(y, e)
        return (e if label is None else e + label), de
