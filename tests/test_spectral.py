"""ctcm's SpectralConv2d against neuraloperator's SpectralConv: same maths, any dtype, dtype-safe casts."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import ctcm
from ctcm import ComplexSafeModule
from ctcm_backbones.spectral import NeuralopSpectralConv2d, SpectralConv2d, contract_modes, weight_from_neuralop

from conftest import needs_neuralop


pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(c_in: int, c_out: int, modes) -> tuple[NeuralopSpectralConv2d, SpectralConv2d]:
    torch.manual_seed(0)
    theirs = NeuralopSpectralConv2d(c_in, c_out, modes)
    ours = SpectralConv2d(c_in, c_out, modes)
    with torch.no_grad():
        ours.weight.copy_(weight_from_neuralop(theirs.conv.weight.tensor))
    return theirs, ours


@needs_neuralop
@pytest.mark.parametrize("modes,res", [(6, 16), ((5, 8), 16), ((8, 6), 32), (16, 32)])
def test_outputs_equal_neuralop_with_mapped_weights(modes, res) -> None:
    theirs, ours = _pair(6, 5, modes)
    x = torch.randn(3, 6, res, res + 4)
    ref = theirs(x)
    assert ref.abs().max() > 1e-3  # not trivially zero
    torch.testing.assert_close(ours(x), ref, rtol=1e-5, atol=1e-6)


@needs_neuralop
def test_gradients_equal_neuralop() -> None:
    theirs, ours = _pair(4, 4, 6)
    x = torch.randn(2, 4, 16, 16, requires_grad=True)
    g_theirs = torch.autograd.grad(theirs(x).square().sum(), x)[0]
    g_ours = torch.autograd.grad(ours(x).square().sum(), x)[0]
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-5, atol=1e-6)


def test_contraction_equals_einsum() -> None:
    x = torch.randn(3, 5, 6, 4, dtype=torch.complex128)
    w = torch.randn(6, 4, 5, 7, dtype=torch.complex128)  # mode-major (m1, m2', C_in, C_out)
    torch.testing.assert_close(contract_modes(x, w), torch.einsum("bixy,xyio->boxy", x, w))


def test_float64_works_for_ours() -> None:
    _, ours = _pair(4, 3, 6)
    x = torch.randn(2, 4, 16, 16, dtype=torch.float64)
    y64 = ours.double()(x)
    assert y64.dtype == torch.float64 and ours.weight.dtype == torch.float64
    y32 = ours.float()(x.float())
    torch.testing.assert_close(y64.float(), y32, rtol=1e-4, atol=1e-5)


@needs_neuralop
def test_neuralop_adaptor_refuses_float64() -> None:
    theirs, _ = _pair(2, 2, 4)
    with pytest.raises(TypeError, match="complex64"):
        theirs.double()(torch.randn(1, 2, 8, 8, dtype=torch.float64))


class _Root(ComplexSafeModule):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(NeuralopSpectralConv2d(3, 3, 4))


@needs_neuralop
@pytest.mark.parametrize("cast", [lambda m: m.double(), lambda m: m.to(torch.float64)], ids=["double", "to"])
def test_complex_safe_root_keeps_imaginary_part_of_neuralop_weight(cast) -> None:
    model = _Root()
    before = model.body[0].conv.weight.tensor.detach().clone()
    assert before.imag.abs().max() > 0
    cast(model)
    after = model.body[0].conv.weight.tensor
    assert after.dtype == torch.complex128
    torch.testing.assert_close(after.detach(), before.to(torch.complex128))
    model.float()
    assert model.body[0].conv.weight.tensor.dtype == torch.complex64


def test_jvp_matches_central_finite_difference_float64() -> None:
    _, ours = _pair(3, 4, (6, 6))
    ours = ours.double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    v = torch.randn_like(x)
    _, jvp = torch.func.jvp(ours, (x,), (v,))
    h = 1e-5
    fd = (ours(x + h * v) - ours(x - h * v)) / (2 * h)
    torch.testing.assert_close(jvp, fd, rtol=1e-7, atol=1e-9)


def test_half_precision_inputs_compute_the_fft_in_float32():
    """bf16 autocast (as on GPU) and a bf16 model both run: FFTs have no bf16 kernels."""
    import ctcm

    torch.manual_seed(0)
    model = ctcm.build("wfno-cifar", backbone={"width": 8, "n_layers": 1, "modes": 4}, resolution=8).eval()
    x, t = torch.randn(2, 3, 8, 8), torch.full((2,), 0.5)
    reference = model(x, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(x, t)
    assert torch.isfinite(mixed).all()
    torch.testing.assert_close(mixed.float(), reference, atol=0.1, rtol=0.1)
    low = model.to(torch.bfloat16)(x.bfloat16(), t.bfloat16())
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    d = model.time_derivative(x.bfloat16(), t.bfloat16(), torch.randn_like(x).bfloat16())  # the tangent too
    assert d.d_raw.dtype == torch.bfloat16 and torch.isfinite(d.df_dt()).all()


@pytest.mark.parametrize("transform", ["dft", "fft"])
@pytest.mark.parametrize("weight_drop", [0.0, 0.3])
def test_value_with_detached_tangent_shares_the_product_and_its_gradient(transform, weight_drop):
    """forward_with_detached_tangent: the value is K x with K's gradients (to x and the weight, as the plain
    forward's), the tangent is K dx without a graph; float64, both transforms, with weight-drop in training."""
    torch.manual_seed(0)
    layer = SpectralConv2d(3, 4, (6, 6), weight_drop=weight_drop, transform=transform).double().train()
    layer.resample_noise_(torch.Generator().manual_seed(1))
    x = torch.randn(2, 3, 10, 12, dtype=torch.float64, requires_grad=True)
    dx = torch.randn(5, 3, 10, 12, dtype=torch.float64)  # another row count: the rows are split, not paired
    y, dy = layer.forward_with_detached_tangent(x, dx)
    assert not dy.requires_grad
    torch.testing.assert_close(dy, layer(dx).detach(), rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y)
    grads = torch.autograd.grad((y * g).sum(), (x, layer.weight))
    ref = torch.autograd.grad((layer(x) * g).sum(), (x, layer.weight))
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("transform", ["dft", "fft"])
@pytest.mark.parametrize(("modes", "k1", "k2"), [((8, 8), 3, 2), ((8, 8), -4, 4), ((6, 4), -2, 1), ((8, 8), 0, 0)])
def test_the_mode_taper_scales_each_modes_response_by_its_gaussian(transform, modes, k1, k2):
    """Eq. 17b: for the input exp(2 pi i (k1 y / H + k2 x / W)) (its real part), the tapered layer's output is
    exp(-alpha ((k1 / (m1/2))^2 + (k2 / (m2/2))^2)) times the untapered one's with the same weight; the
    factor written here from the formula, not from the layer's table. float64, both transforms."""
    alpha, h, w = 1.3, 16, 12
    torch.manual_seed(0)
    plain = SpectralConv2d(2, 3, modes, transform=transform).double()
    tapered = SpectralConv2d(2, 3, modes, transform=transform, taper=alpha).double()
    tapered.load_state_dict(plain.state_dict())  # the taper is not state: the same keys, the same weight
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    wave = torch.cos(2 * torch.pi * (k1 * yy / h + k2 * xx / w))
    z = torch.stack([wave, -2 * wave])[None]
    expected = math.exp(-alpha * ((k1 / (modes[0] / 2)) ** 2 + (k2 / (modes[1] / 2)) ** 2))
    ref = plain(z)
    assert ref.abs().max() > 1e-3
    torch.testing.assert_close(tapered(z), expected * ref, rtol=1e-10, atol=1e-10)


def test_a_bad_mode_taper_is_refused():
    with pytest.raises(ValueError, match="taper alpha must be >= 0"):
        SpectralConv2d(2, 2, 4, taper=-1.0)
    with pytest.raises(ValueError, match="mode taper needs spectral_impl='ctcm'"):
        ctcm.create_backbone("wfno", width=8, n_layers=1, modes=4, spectral_impl="neuralop", mode_taper=1.0)
