"""The matrix-product spectral path (Eq. 27-29) equals the FFT path in float64, value and tangent."""

from __future__ import annotations

import pytest
import torch

import ctcm
from conftest import TINY_WFNO
from ctcm_backbones.dft import dft_bases, truncated_irfft2, truncated_rfft2
from ctcm_backbones.spectral import SpectralConv2d, use_dft

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


def _layers(c_in: int, c_out: int, modes) -> tuple[SpectralConv2d, SpectralConv2d]:
    torch.manual_seed(0)
    fft = SpectralConv2d(c_in, c_out, modes, transform="fft").double()
    dft = SpectralConv2d(c_in, c_out, modes, transform="dft").double()
    dft.load_state_dict(fft.state_dict())
    return fft, dft


@pytest.mark.parametrize("modes,shape", [(16, (32, 32)), (16, (64, 64)), (16, (16, 16)), ((6, 6), (9, 8)),
                                         ((5, 8), (16, 20)), (8, (17, 15))],
                         ids=["32", "64", "nyquist-16", "odd-h", "rect", "odd-hw"])
def test_dft_layer_equals_fft_layer_float64(modes, shape) -> None:
    fft, dft = _layers(4, 3, modes)
    x = torch.randn(2, 4, *shape, dtype=F64)
    ref = fft(x)
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(dft(x), ref, rtol=1e-12, atol=1e-13)


def test_transforms_equal_rfft2_and_irfft2_with_nyquist_and_dc_imaginary_parts() -> None:
    """irfft2 discards Im of the DC and Nyquist columns; the DFT basis must too (16x16, 16 modes keeps both)."""
    h = w = 16
    bases = dft_bases(h, w, 8, 8, 9, dtype=F64)
    x = torch.randn(2, 3, h, w, dtype=F64)
    spectrum = truncated_rfft2(x, bases)  # (B, C, n_half, 2, m1)
    ref = torch.fft.rfft2(x, norm="forward")
    torch.testing.assert_close(torch.complex(spectrum[:, :, :, 0], spectrum[:, :, :, 1]).transpose(-1, -2), ref,
                               rtol=1e-12, atol=1e-14)
    z = torch.randn(2, 3, 9, 2, 16, dtype=F64)  # arbitrary: non-zero imaginary DC / Nyquist columns
    zc = torch.complex(z[:, :, :, 0], z[:, :, :, 1]).transpose(-1, -2)
    torch.testing.assert_close(truncated_irfft2(z, bases), torch.fft.irfft2(zc, s=(h, w), norm="forward"),
                               rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("res", [32, 64])
def test_wfno_tangent_equal_across_transforms_float64(res) -> None:
    nets = []
    for transform in ("fft", "dft"):
        torch.manual_seed(0)
        net = ctcm.create_backbone("wfno", **{**TINY_WFNO, "modes": 16}, spectral_weight_drop=0.3,
                                   spectral_transform=transform).double().train()
        net.resample_noise_(torch.Generator().manual_seed(1))
        nets.append(net)
    x, dx = torch.randn(2, 3, res, res, dtype=F64), torch.randn(2, 3, res, res, dtype=F64)
    c, dc = torch.tensor([0.1, -0.5], dtype=F64), torch.tensor([2.0, 0.3], dtype=F64)
    with torch.no_grad():
        (y0, dy0), (y1, dy1) = (net.forward_and_tangent(x, dx, c, dc) for net in nets)
        torch.testing.assert_close(nets[1](x, c), nets[0](x, c), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y1, y0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dy1, dy0, rtol=1e-12, atol=1e-12)


def test_gradients_equal_across_transforms_float64() -> None:
    fft, dft = _layers(3, 3, 6)
    x = torch.randn(2, 3, 16, 16, dtype=F64, requires_grad=True)
    g_fft = torch.autograd.grad(fft(x).sin().sum(), (x, fft.weight))
    g_dft = torch.autograd.grad(dft(x).sin().sum(), (x, dft.weight))
    for a, b in zip(g_dft, g_fft):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def test_bases_are_cached_per_resolution() -> None:
    _, dft = _layers(2, 2, 4)
    dft(torch.randn(1, 2, 16, 16, dtype=F64))
    dft(torch.randn(1, 2, 32, 32, dtype=F64))
    dft(torch.randn(1, 2, 16, 16, dtype=F64))
    assert sorted(key[:2] for key in dft._bases) == [(16, 16), (32, 32)]
    assert not any("bases" in k for k in dft.state_dict())


def test_auto_rule() -> None:
    assert use_dft(torch.zeros(1, 1, 32, 32))
    assert not use_dft(torch.zeros(1, 1, 256, 256))
    assert use_dft(torch.zeros(1, 1, 256, 256, dtype=torch.bfloat16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert use_dft(torch.zeros(1, 1, 256, 256))


def test_bad_transform_is_refused() -> None:
    with pytest.raises(ValueError, match="transform must be one of"):
        SpectralConv2d(2, 2, 4, transform="cufft")
