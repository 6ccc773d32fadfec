"""Truncated real DFTs as dense matrix products (Eq. 27-29): the spectral convolution without complex tensors.

A :class:`SpectralConv2d` keeps m1 x n_half modes of an H x W half-spectrum (16 x 9 of 32 x 17 for
``wfno-cifar``). Computing only those with precomputed cosine / sine bases costs two small matrix
products each way, runs on tensor cores in bf16, and compiles (inductor has no complex dtypes).

Every step is one large right-hand matrix product over (sample, channel, other axis) rows, with the
real / imaginary "part" axis folded into the contracted and produced axes; the spectrum is held as
(B, C, n_half, 2, m1) (column frequency, part, row frequency):

* forward  (Eq. 27): x (.., H, W) @ ``fw`` (W, [part, k2]) -> transpose to (.., k2, [part, n1]) @ ``fh``
  ([part, n1], [part, k1]) = the kept modes of ``rfft2(x, norm="forward")``.
* inverse (Eq. 28): Z (.., k2, [part, k1]) @ ``gh`` ([part, k1], [part, n1]) -> transpose to
  (.., n1, [part, k2]) @ ``gw`` ([part, k2], W) = ``irfft2`` of Z zero-padded, ``norm="forward"``.

irfft2's convention: it runs a complex inverse FFT along H, then a complex-to-real one along W that
treats column k2 as the pair (k2, W - k2), i.e. weights it by 2, except the DC column and (W even) the
Nyquist column, weighted by 1 and whose imaginary parts it discards. The W basis reproduces both: the
weights c_k2 in {1, 2} and sin(2 pi k2 n2 / W) = 0 for k2 in {0, W/2}, which drops those imaginary parts.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .tangent_ops import detached_pair_bmm


class DFTBases(NamedTuple):
    """The four real matrices of Eq. 27-28 for one (H, W, kept modes). Shapes: ``fw`` (W, 2 n_half),
    ``fh`` (2H, 2 m1), ``gh`` (2 m1, 2H), ``gw`` (2 n_half, W)."""

    fw: Tensor
    fh: Tensor
    gh: Tensor
    gw: Tensor


def _angles(freqs: Tensor, n: int) -> Tensor:
    """2 pi (f * j mod n) / n for every (f, j), j in 0..n-1, reduced exactly in integers (float64)."""
    j = torch.arange(n, dtype=torch.int64)
    return (freqs[:, None] * j[None, :]).remainder(n).to(torch.float64) * (2.0 * math.pi / n)


def _blocks(a: Tensor, b: Tensor, c: Tensor, d: Tensor) -> Tensor:
    """[[a, b], [c, d]] as one matrix."""
    return torch.cat([torch.cat([a, b], dim=1), torch.cat([c, d], dim=1)], dim=0)


def dft_bases(h: int, w: int, n_pos: int, n_neg: int, n_half: int, *, dtype: torch.dtype = torch.float32,
              device: torch.device | str | None = None) -> DFTBases:
    """Bases of the truncated transforms (Eq. 27-28), built in float64 then cast to ``dtype``.

    Kept rows (frequencies along H): 0..n_pos-1 and -n_neg..-1 (SpectralConv2d's order); kept columns:
    0..n_half-1 of the half spectrum (requires n_half <= W // 2 + 1).
    """
    rows = torch.cat([torch.arange(n_pos), torch.arange(h - n_neg, h)])  # (m1,) as indices in 0..H-1
    ah, aw = _angles(rows, h), _angles(torch.arange(n_half), w)  # (m1, H), (n_half, W)
    ch, sh, cw, sw = ah.cos(), ah.sin(), aw.cos(), aw.sin()
    fw = torch.cat([cw.t(), -sw.t()], dim=1) / w  # x @ fw = [A_re | A_im], A = sum_n2 x e^{-i theta}
    fh = _blocks(ch.t(), -sh.t(), sh.t(), ch.t()) / h  # X = (C - i S) A: Re = C A_re + S A_im, Im = C A_im - S A_re
    gh = _blocks(ch, sh, -sh, ch)  # B = (C + i S)^T Z: Re = C^T Z_re - S^T Z_im, Im = S^T Z_re + C^T Z_im
    weight = torch.full((n_half, 1), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if w % 2 == 0 and n_half == w // 2 + 1:
        weight[-1] = 1.0  # the Nyquist column is its own mirror image
    gw = torch.cat([weight * cw, -weight * sw], dim=0)  # out = Re(B e^{+i theta}) = B_re cos - B_im sin
    return DFTBases(*(b.to(dtype=dtype, device=device).contiguous() for b in (fw, fh, gh, gw)))


def truncated_rfft2(x: Tensor, bases: DFTBases) -> Tensor:
    """Kept modes of ``rfft2(x, norm="forward")`` (Eq. 27).

    Shapes: x (B, C, H, W) -> (B, C, n_half, 2, m1), [:, :, k2, 0, k1] the real and [..., 1, k1] the
    imaginary part of mode (k1, k2).
    """
    b, c, h, _ = x.shape
    n_half = bases.fw.shape[1] // 2
    a = torch.matmul(x, bases.fw).view(b, c, h, 2, n_half).permute(0, 1, 4, 3, 2)  # (B, C, k2, part, n1)
    return torch.matmul(a.reshape(b, c, n_half, 2 * h), bases.fh).view(b, c, n_half, 2, -1)


def truncated_irfft2(z: Tensor, bases: DFTBases) -> Tensor:
    """``irfft2`` of the kept modes zero-padded to the full half-spectrum, ``norm="forward"`` (Eq. 28).

    Shapes: z (B, C, n_half, 2, m1) as from :func:`truncated_rfft2` -> (B, C, H, W).
    """
    b, c, n_half = z.shape[:3]
    h = bases.gh.shape[1] // 2
    y = torch.matmul(z.reshape(b, c, n_half, -1), bases.gh).view(b, c, n_half, 2, h)
    return torch.matmul(y.permute(0, 1, 4, 3, 2).reshape(b, c, h, 2 * n_half), bases.gw)


def contract_modes_real(x: Tensor, weight: Tensor) -> Tensor:
    """The complex mode contraction y[k] = x[k] w[k] (Eq. 29) as one real batched product, no complex dtype.

    Real and imaginary parts of x ride in the batch, the weight is read in its stored (m1, m2', C_in,
    C_out, 2) layout as (k, C_in, 2 C_out) without a copy; the four real products recombine as
    Re y = Re x Re w - Im x Im w, Im y = Re x Im w + Im x Re w.
    Shapes: x (B, C_in, m2', 2, m1), weight (m1, m2', C_in, C_out, 2) -> (B, C_out, m2', 2, m1).
    """
    return _real_combine(torch.bmm(_real_rows(x), _real_matrix(weight)), x.shape)


def contract_modes_real_pair(x: Tensor, dx: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`contract_modes_real` of x with its graph and of dx without one, as one product
    (:func:`~.tangent_ops.detached_pair_bmm`: the weight read once)."""
    y, dy = detached_pair_bmm(_real_rows(x), _real_rows(dx), _real_matrix(weight))
    return _real_combine(y, x.shape), _real_combine(dy, dx.shape)


def _real_rows(x: Tensor) -> Tensor:
    """(B, C_in, m2', 2, m1) -> (k, [Re; Im] x B, C_in), k = (k1, k2)."""
    b, ci, m2, _, m1 = x.shape
    return x.permute(4, 2, 3, 0, 1).reshape(m1 * m2, 2 * b, ci)


def _real_matrix(weight: Tensor) -> Tensor:
    """The stored (m1, m2', C_in, C_out, 2) weight as (k, C_in, 2 C_out), a view."""
    m1, m2, ci, co, _ = weight.shape
    return weight.reshape(m1 * m2, ci, 2 * co)


def _real_combine(p: Tensor, shape: torch.Size) -> Tensor:
    """The four real products (k, 2B, 2 C_out) -> the complex result (B, C_out, m2', 2, m1) of an x of ``shape``."""
    b, _, m2, _, m1 = shape
    k, co = p.shape[0], p.shape[-1] // 2
    p = p.view(k, 2, b, co, 2)
    y = torch.stack([p[:, 0, ..., 0] - p[:, 1, ..., 1], p[:, 0, ..., 1] + p[:, 1, ..., 0]], dim=1)  # (k, 2, B, C_out)
    return y.view(m1, m2, 2, b, co).permute(3, 4, 1, 2, 0)
