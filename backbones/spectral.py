"""Spectral convolutions for 2-D FNO blocks (Eq. 17).

``SpectralConv2d`` is ctcm's own layer: the same maths as neuraloperator's dense ``SpectralConv`` (kept
modes, ``fft_norm="forward"``), with real-valued weight storage (so ``.double()``, ``.to(dtype)`` and
``weights_only`` loading just work and the output dtype follows the input), no fftshift, one contraction,
and spectral weight-drop. ``NeuralopSpectralConv2d`` adapts neuraloperator's layer to the same interface
(float32 only: its forward allocates a complex64 output buffer). ``weight_from_neuralop`` maps a
neuraloperator weight to ours; ``tests/test_spectral.py`` checks the two layers agree. The contraction
(:func:`contract_modes`) is one batched matrix product over the kept modes: faster than ``einsum`` at
identical outputs (``benchmarks/`` measures it as ``ctcm`` vs ``ctcm-einsum``). The layer's default
``transform="auto"`` computes the same function without FFTs or complex tensors (truncated real DFTs as
matrix products, Eq. 27-29, :mod:`.dft`) wherever that is measured or known to be faster (:func:`use_dft`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .dft import (DFTBases, contract_modes_real, contract_modes_real_pair, dft_bases, truncated_irfft2,
                  truncated_rfft2)
from .tangent_ops import detached_pair_bmm
from .optional import import_neuralop
from ctcm.errors import UserTypeError, UserValueError

TRANSFORMS = ("auto", "fft", "dft")


def _pair(modes: int | tuple[int, int]) -> tuple[int, int]:
    return (modes, modes) if isinstance(modes, int) else (int(modes[0]), int(modes[1]))


class SpectralConv2d(nn.Module):
    """K(z) = irfft2( W . rfft2(z) restricted to the kept modes ), per output channel.

    Kept modes follow neuraloperator's convention for ``n_modes=(m1, m2)``: along H the frequencies
    -floor(m1/2) .. ceil(m1/2)-1, along W (the half spectrum) 0 .. floor(m2/2). The weight is stored as a
    real tensor (m1, floor(m2/2)+1, C_in, C_out, 2) (mode-major), rows ordered [0, 1, ..., -2, -1] (no fftshift).

    Args:
        in_channels, out_channels: channel counts.
        modes: int or (m1, m2).
        weight_drop: probability of zeroing each spectral weight during training (DropConnect), with
            1/(1-p) rescaling. The mask is redrawn by :meth:`resample_noise_` (once per training step by
            the objectives), so every forward of a step sees the same mask.
        transform: ``fft`` (rfft2 / irfft2, complex), ``dft`` (truncated real DFTs as matrix products,
            Eq. 27-29: no complex tensors, bf16 tensor cores, compilable) or ``auto`` (:func:`use_dft`).
            Both compute the same function (equal in float64, tested).
        taper: alpha >= 0, a fixed Gaussian taper of the kept modes: the weight of mode (k1, k2) is used as
            exp(-alpha ((k1 / K1)^2 + (k2 / K2)^2)) W[k] with K_i = max(m_i / 2, 1) (Eq. 17b; 0: none). The
            taper is a constant (not state: computed in float64 per call, cast to the weight's dtype), so it
            smooths K's response at the band's edge from the first step and scales the high modes' Adam
            steps by its value.
    Shapes: (B, C_in, H, W) -> (B, C_out, H, W), any H >= m1, W // 2 + 1 >= floor(m2/2) + 1.
    """

    def __init__(self, in_channels: int, out_channels: int, modes: int | tuple[int, int] = 16,
                 weight_drop: float = 0.0, transform: str = "auto", taper: float = 0.0) -> None:
        super().__init__()
        if taper < 0.0:
            raise UserValueError(f"the mode taper alpha must be >= 0 (0: no taper), got {taper}")
        if not 0.0 <= weight_drop < 1.0:
            raise UserValueError(f"weight_drop must be in [0, 1), got {weight_drop}")
        if transform not in TRANSFORMS:
            raise UserValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
        self.transform = transform
        self.in_channels, self.out_channels = in_channels, out_channels
        m1, m2 = _pair(modes)
        self.modes = (m1, m2)
        self.n_pos, self.n_neg, self.n_half = m1 - m1 // 2, m1 // 2, m2 // 2 + 1
        self.weight_drop = weight_drop
        std = math.sqrt(2.0 / (in_channels + out_channels))  # neuraloperator's "auto" init, complex normal
        # mode-major layout (m1, m2', C_in, C_out, re/im): the contraction reads it with no transpose
        self.weight = nn.Parameter(torch.randn(m1, self.n_half, in_channels, out_channels, 2) * std / math.sqrt(2))
        self.taper = taper
        self._mask: Tensor | None = None
        self._bases: dict[tuple, DFTBases] = {}  # per (H, W, dtype, device); not state, rebuilt on demand

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, modes=({self.n_pos + self.n_neg}, "
                f"{2 * (self.n_half - 1)}), weight_drop={self.weight_drop}, transform={self.transform!r}"
                + (f", taper={self.taper}" if self.taper else ""))

    def resample_noise_(self, generator: torch.Generator | None = None) -> None:
        """Draw a new weight-drop mask (no-op when weight_drop == 0)."""
        if self.weight_drop == 0.0:
            self._mask = None
            return
        shape = self.weight.shape[:-1]
        device = generator.device if generator is not None else self.weight.device
        keep = torch.full(shape, 1.0 - self.weight_drop, device=device)
        self._mask = (torch.bernoulli(keep, generator=generator) / (1.0 - self.weight_drop)).to(self.weight.device)

    def masked_weight(self) -> Tensor:
        """The (m1, m2', C_in, C_out, 2) real weight the layer uses: tapered, and weight-dropped in training."""
        w = self.weight
        if self.taper > 0.0:
            w = w * mode_taper(*self.modes, self.taper).to(w)
        if not (self.training and self.weight_drop > 0.0):
            return w
        if self._mask is None or self._mask.device != self.weight.device:
            self.resample_noise_()
        return w * self._mask.to(self.weight.dtype)[..., None]

    def complex_weight(self, dtype: torch.dtype | None = None) -> Tensor:
        """The (m1, m2', C_in, C_out) complex weight (masked in training), its real part in ``dtype``."""
        w = self.masked_weight()
        return torch.view_as_complex(w if dtype is None else w.to(dtype))

    def bases(self, h: int, w: int, dtype: torch.dtype, device: torch.device) -> DFTBases:
        """The DFT bases for an h x w input (Eq. 27-28): cached per resolution in eager mode, built inside
        the graph (constant-folded) under ``torch.compile``."""
        args = (h, w, self.n_pos, self.n_neg, self.n_half)
        if torch.compiler.is_compiling():
            return dft_bases(*args, dtype=dtype, device=device)
        key = (h, w, dtype, device)
        if key not in self._bases:
            self._bases[key] = dft_bases(*args, dtype=dtype, device=device)
        return self._bases[key]

    def forward(self, x: Tensor) -> Tensor:
        return self._transform(x, None)[0]

    def forward_with_detached_tangent(self, x: Tensor, dx: Tensor) -> tuple[Tensor, Tensor]:
        """(K x with its graph, K dx without one): K is linear, so K dx is its tangent along dx. The mode
        products of both run as one (the weight read once: the bound at a consistency step's small batches),
        the gradient from x's rows only. Shapes: x, dx (B, C_in, H, W) -> (B, C_out, H, W) each."""
        y, dy = self._transform(x, dx)
        assert dy is not None
        return y, dy

    def _transform(self, x: Tensor, dx: Tensor | None) -> tuple[Tensor, Tensor | None]:
        h, w = x.shape[-2:]
        if h < self.n_pos + self.n_neg or w // 2 + 1 < self.n_half:
            raise UserValueError(
                f"input {h}x{w} is smaller than the kept modes ({self.n_pos + self.n_neg}, "
                f"{2 * (self.n_half - 1)}); use fewer modes or a larger input"
            )
        if self.transform == "dft" or (self.transform == "auto" and use_dft(x)):
            return self._forward_dft(x, dx)
        return self._forward_fft(x, dx)

    def _forward_dft(self, x: Tensor, dx: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Eq. 27-29 as real matrix products; under autocast they run in its dtype (bf16 on tensor cores)."""
        compute = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        bases = self.bases(*x.shape[-2:], compute, x.device)
        spectrum = truncated_rfft2(x, bases)  # (B, C_in, n_half, 2, m1)
        weight = self.masked_weight().to(spectrum.dtype)
        if dx is None:
            return truncated_irfft2(contract_modes_real(spectrum, weight), bases), None
        with torch.no_grad():
            d_spectrum = truncated_rfft2(dx, bases)
        y, dy = contract_modes_real_pair(spectrum, d_spectrum, weight)
        with torch.no_grad():
            d_out = truncated_irfft2(dy, bases)
        return truncated_irfft2(y, bases), d_out

    def _forward_fft(self, x: Tensor, dx: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """rfft2 -> kept modes x weight -> irfft2 (Eq. 17), in complex arithmetic."""
        # FFTs have no bf16 kernels and fp16 ones only for powers of two: compute in float32 then
        # (under autocast or a half-precision model), and hand back the input's dtype.
        compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        with torch.autocast(x.device.type, enabled=False):
            weight = self.complex_weight(compute)
            rows = self._kept_modes(x.to(compute))
            if dx is None:
                return self._from_kept_modes(contract_modes(rows, weight), x), None
            with torch.no_grad():
                d_rows = self._kept_modes(dx.to(compute))
            y, dy = contract_modes_pair(rows, d_rows, weight)
            with torch.no_grad():
                d_out = self._from_kept_modes(dy, dx)
            return self._from_kept_modes(y, x), d_out

    def _kept_modes(self, x: Tensor) -> Tensor:
        """The kept modes of rfft2(x) (B, C, m1, n_half), rows [0..n_pos-1, -n_neg..-1]."""
        xf = torch.fft.rfft2(x, norm="forward")
        return torch.cat([xf[..., : self.n_pos, : self.n_half], xf[..., x.shape[-2] - self.n_neg:, : self.n_half]],
                         dim=-2)

    def _from_kept_modes(self, y: Tensor, like: Tensor) -> Tensor:
        """irfft2 of the kept modes y (B, C_out, m1, n_half) at ``like``'s size and dtype: the rows back to their
        frequencies [0..n_pos-1, zeros, -n_neg..-1]; irfft2 zero-pads the W half-spectrum."""
        h, w = like.shape[-2:]
        gap = y.new_zeros(y.shape[0], self.out_channels, h - self.n_pos - self.n_neg, self.n_half)
        out = torch.cat([y[..., : self.n_pos, :], gap, y[..., self.n_pos:, :]], dim=-2)
        return torch.fft.irfft2(out, s=(h, w), norm="forward").to(like.dtype)


def mode_taper(m1: int, m2: int, alpha: float) -> Tensor:
    """The Gaussian taper of the kept modes (Eq. 17b), (m1, floor(m2/2)+1, 1, 1, 1) float64, rows in the weight's order:
    exp(-alpha ((k1 / K1)^2 + (k2 / K2)^2)), k1 in [0, .., ceil(m1/2)-1, -floor(m1/2), .., -1], k2 in
    [0, .., floor(m2/2)], K_i = max(m_i / 2, 1)."""
    k1 = torch.cat([torch.arange(m1 - m1 // 2), torch.arange(-(m1 // 2), 0)]).double() / max(m1 / 2, 1.0)
    k2 = torch.arange(m2 // 2 + 1).double() / max(m2 / 2, 1.0)
    return torch.exp(-alpha * (k1[:, None] ** 2 + k2[None, :] ** 2))[:, :, None, None, None]


DFT_MAX_PIXELS = 128 * 128  # the largest CPU input measured (docs/architecture.md): DFT faster up to here


def use_dft(x: Tensor) -> bool:
    """The ``auto`` rule: matrix-product DFTs (Eq. 27-29) or FFTs for this input (docs/architecture.md).

    DFT under ``torch.compile`` (inductor has no complex dtypes), on CUDA (tensor cores), under bf16 /
    fp16 (no bf16 FFT kernels), and on CPU up to DFT_MAX_PIXELS (measured: the ``ctcm`` vs ``ctcm-fft``
    rows of ``python -m benchmarks``, and docs/architecture.md); FFT for larger CPU inputs, where the
    O(H W (m1 + m2)) products outgrow O(H W log HW).
    """
    if torch.compiler.is_compiling() or x.device.type == "cuda" or x.dtype in (torch.float16, torch.bfloat16):
        return True
    return torch.is_autocast_enabled(x.device.type) or x.shape[-2] * x.shape[-1] <= DFT_MAX_PIXELS


def contract_modes(x: Tensor, weight: Tensor) -> Tensor:
    """y[b, o, k] = sum_i x[b, i, k] w[k, i, o] for every kept mode k, as one batched matrix product.

    Same maths as ``einsum("bixy,xyio->boxy")``, with the modes as the batch of a single ``bmm``. The
    weight is stored mode-major, so it is read as (modes, C_in, C_out) without a copy: at the small
    batches of a consistency step the contraction is bound by reading the weight, and a transpose of it
    per call (or einsum's generic permutations) cost more than the product itself.
    Shapes: x (B, C_in, m1, m2'), weight (m1, m2', C_in, C_out) complex -> (B, C_out, m1, m2').
    """
    return _mode_combine(torch.bmm(_mode_rows(x), _mode_matrix(weight)), x.shape)


def contract_modes_pair(x: Tensor, dx: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`contract_modes` of x with its graph and of dx without one, as one product (the weight read once)."""
    y, dy = detached_pair_bmm(_mode_rows(x), _mode_rows(dx), _mode_matrix(weight))
    return _mode_combine(y, x.shape), _mode_combine(dy, dx.shape)


def _mode_rows(x: Tensor) -> Tensor:
    """(B, C_in, m1, m2') -> (k, B, C_in)."""
    b, ci, m1, m2 = x.shape
    return x.reshape(b * ci, m1 * m2).t().reshape(m1 * m2, b, ci)


def _mode_matrix(weight: Tensor) -> Tensor:
    m1, m2, ci, co = weight.shape
    return weight.reshape(m1 * m2, ci, co)


def _mode_combine(y: Tensor, shape: torch.Size) -> Tensor:
    """(k, B, C_out) -> (B, C_out, m1, m2') for an x of ``shape``."""
    b, _, m1, m2 = shape
    return y.reshape(m1 * m2, b * y.shape[-1]).t().reshape(b, y.shape[-1], m1, m2)


def weight_from_neuralop(weight: Tensor) -> Tensor:
    """neuraloperator's dense weight -> a :class:`SpectralConv2d` ``weight`` with the same maths.

    neuraloperator stores (C_in, C_out, m1, m2//2+1) complex with rows fftshifted (row j is frequency
    j - m1//2); ours stores the same numbers mode-major as real pairs with rows unshifted
    ([0, 1, ..., -1]), so ours = view_as_real(roll(theirs, -(m1//2), dim=2).permute(2, 3, 0, 1)). Exact for
    even input sizes (neuraloperator re-applies ``fftshift`` instead of ``ifftshift`` to its output,
    which differs for odd sizes).
    Shapes: (C_in, C_out, m1, m2') complex -> (m1, m2', C_in, C_out, 2) real.
    """
    if not weight.is_complex() or weight.ndim != 4:
        raise UserValueError(f"expected neuraloperator's complex (C_in, C_out, m1, m2') weight, got "
                             f"{tuple(weight.shape)} {weight.dtype}")
    rolled = torch.roll(weight, shifts=-(weight.shape[2] // 2), dims=2)
    return torch.view_as_real(rolled.permute(2, 3, 0, 1).contiguous()).contiguous()


class NeuralopSpectralConv2d(nn.Module):
    """neuraloperator's dense ``SpectralConv`` (no bias) behind the :class:`SpectralConv2d` interface.

    float32 only: neuraloperator 2.0 allocates its spectral output as complex64 whatever the input
    dtype, so a float64 forward would silently lose precision; this adaptor raises instead. Half-precision
    inputs (autocast) are computed in float32. No weight-drop.
    """

    def __init__(self, in_channels: int, out_channels: int, modes: int | tuple[int, int] = 16,
                 weight_drop: float = 0.0) -> None:
        super().__init__()
        if weight_drop:
            raise UserValueError("spectral weight-drop needs spectral_impl='ctcm'")
        SpectralConv = import_neuralop("layers.spectral_convolution", "spectral_impl='neuralop'").SpectralConv
        self.conv = SpectralConv(in_channels, out_channels, n_modes=_pair(modes), bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):  # from autocast: cuFFT has no bf16, compute in fp32
            x = x.float()
        if x.dtype != torch.float32:
            raise UserTypeError(
                f"neuraloperator's SpectralConv computes in complex64 only; got {x.dtype}. "
                f"Use spectral_impl='ctcm' for other dtypes."
            )
        return self.conv(x)

    def forward_with_detached_tangent(self, x: Tensor, dx: Tensor) -> tuple[Tensor, Tensor]:
        """(K x with its graph, K dx without one) as two calls (neuraloperator's layer has no shared product)."""
        with torch.no_grad():
            dy = self(dx)
        return self(x), dy


SPECTRAL_IMPLEMENTATIONS = {"ctcm": SpectralConv2d, "neuralop": NeuralopSpectralConv2d}
