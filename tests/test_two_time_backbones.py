"""The backbones' second time input (a flow map's pair (c_noise(t), c_noise(t) - c_noise(r)), Eq. 35): the time
embedding's and the WFNO's hand-written tangents along any (dc_1, dc_2) against torch.func.jvp in float64, the
one-pass detached tangent of a flow map, and the peers (unet, fno) taking the pair."""

from __future__ import annotations

import pytest
import torch

import ctcm
from conftest import TINY_WFNO, needs_neuralop, tiny_model
from test_peer_backbones import DTYPE, _backbone
from test_tangent_ops import DESIGNS, _close

F64 = torch.float64
C = torch.tensor([[0.1, 0.0], [0.7, 0.4], [1.0, 0.9]], dtype=F64)
DC = torch.tensor([[2.0, -0.7], [0.3, 0.3], [-1.0, 1.5]], dtype=F64)  # d r != 0: the general rule


def test_two_time_embedding_tangent_equals_jvp_and_sees_both_times():
    torch.manual_seed(0)
    embed = ctcm.create_backbone("wfno", **TINY_WFNO, time_inputs=2).embed.double()
    _close(embed.forward_and_tangent(C, DC), torch.func.jvp(embed, (C,), (DC,)))
    moved = C.clone()
    moved[:, 1] += 0.1
    assert (embed(moved) - embed(C)).abs().amax(1).min() > 1e-4


def test_a_time_input_of_the_wrong_shape_gets_one_clear_line():
    net = ctcm.create_backbone("wfno", **TINY_WFNO, time_inputs=2)
    with pytest.raises(ValueError, match=r"takes 2 time input\(s\), so c_noise must have shape \(3, 2\)"):
        net(torch.zeros(3, 3, 8, 8), torch.zeros(3))
    with pytest.raises(ValueError, match="time_inputs must be 1 or 2"):
        ctcm.create_backbone("wfno", **TINY_WFNO, time_inputs=3)


@pytest.mark.parametrize("design", [DESIGNS[0], DESIGNS[2], DESIGNS[-1]])
def test_two_time_wfno_forward_and_tangent_equals_jvp(design):
    torch.manual_seed(0)
    net = ctcm.create_backbone("wfno", **{**TINY_WFNO, **design}, time_inputs=2, spectral_weight_drop=0.3,
                               dropout=0.2).double().train()
    net.resample_noise_(torch.Generator().manual_seed(1))
    x, dx = torch.randn(3, 3, 8, 8, dtype=F64), torch.randn(3, 3, 8, 8, dtype=F64)
    with torch.no_grad():
        reference = torch.func.jvp(net, (x, C), (dx, DC))
        _close(net.forward_and_tangent(x, dx, C, DC), reference)
    f, df = net.forward_and_detached_tangent(x, dx, C, DC)
    assert f.requires_grad and not df.requires_grad
    _close((f.detach(), df), reference)


def test_flow_map_one_pass_tangent_equals_time_derivative_with_the_forwards_gradients():
    model = tiny_model("linear", time_inputs=2, dropout=0.2).train()
    model.resample_noise_(torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    x, v = torch.randn(3, 3, 8, 8, dtype=F64, generator=g), torch.randn(3, 3, 8, 8, dtype=F64, generator=g)
    t = torch.tensor([0.9, 0.5, 0.2], dtype=F64)
    r = torch.tensor([0.1, 0.5, 0.0], dtype=F64)
    f, raw, d = model(x, t, r, return_raw=True, tangent_along=v)
    f_ref, raw_ref = model(x, t, r, return_raw=True)
    params = list(model.parameters())
    for ours, ref in zip(torch.autograd.grad((f * raw).sum(), params),
                         torch.autograd.grad((f_ref * raw_ref).sum(), params), strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    _, d_ref = ctcm.total_derivative(lambda z, s: model.raw(z, s, r), x, t, v)  # du/dt along (v, 0, 1)
    torch.testing.assert_close(d.d_raw, d_ref, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", ["unet", pytest.param("fno", marks=needs_neuralop)])
def test_peer_backbones_take_the_second_time(name):
    net = _backbone(name, time_inputs=2)
    x, c = torch.randn(3, 3, 16, 16, dtype=DTYPE[name]), C.to(DTYPE[name])
    moved = c.clone()
    moved[:, 1] += 0.2
    assert (net(x, moved) - net(x, c)).abs().flatten(1).amax(1).min() > 1e-5
    f, df = net.forward_and_tangent(x, torch.randn_like(x), c, DC.to(DTYPE[name]))
    assert f.shape == df.shape == x.shape and torch.isfinite(df).all()
