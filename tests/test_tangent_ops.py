"""Hand-written forward-mode rules (Eq. 20) against torch.func.jvp, in float64."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import ctcm
from conftest import TINY_WFNO, tiny_model
from ctcm_backbones.tangent_ops import (group_norm_packed, group_norm_pair, group_norm_stats, linear_packed,
                                       modulated_norm_tangent, pack, pointwise_packed, sequential_pair,
                                       sequential_saving, sequential_tangent, unpack)

F64 = torch.float64

# every design option of the WFNO (docs/results.md, "Backbone design"), alone and together, besides the default
DESIGNS = [{}, {"positional_grid": True}, {"time_channels": 4}, {"time_channels": 4, "film": False},
           {"lift_hidden": 6}, {"local_kernel": 1}, {"channel_mlp": 1.5},
           {"n_layers": 3, "block_scales": [1, 2, 1]}, {"lift_film": True}, {"mode_taper": 1.5},
           {"local_kernel": 3, "local3_init": 0.7},
           {"positional_grid": True, "time_channels": 3, "lift_hidden": 6, "local_kernel": 1, "channel_mlp": 1.0,
            "block_scales": [2, 1], "lift_film": True, "mode_taper": 0.7}]


def _close(pair, ref):
    torch.testing.assert_close(pair[0], ref[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(pair[1], ref[1], rtol=1e-9, atol=1e-11)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.1, 10.0))
def test_gelu_and_group_norm_rules(seed, scale):
    g = torch.Generator().manual_seed(seed)
    h = scale * torch.randn(2, 8, 5, 5, dtype=F64, generator=g)
    dh = torch.randn(2, 8, 5, 5, dtype=F64, generator=g)
    for name, f in [("gelu", nn.functional.gelu), ("silu", nn.functional.silu)]:
        _close(unpack(pointwise_packed(name, h, dh)), torch.func.jvp(f, (h,), (dh,)))
    norm = nn.GroupNorm(4, 8).double()
    with torch.no_grad():
        norm.weight.normal_(generator=g)
        norm.bias.normal_(generator=g)
    ref = torch.func.jvp(norm, (h,), (dh,))
    _close(group_norm_pair(norm, h, dh), ref)
    with torch.no_grad():  # the packed form writes both halves in place (no graph); with one, it concatenates
        _close(unpack(group_norm_packed(norm, pack(h, dh))), ref)
    _close(unpack(group_norm_packed(norm, pack(h, dh))), ref)
    norm.affine = False  # the rule without the affine map: GroupNorm's normalisation alone
    plain = torch.func.jvp(lambda v: nn.functional.group_norm(v, 4, eps=norm.eps), (h,), (dh,))
    with torch.no_grad():
        _close(unpack(group_norm_packed(norm, pack(h, dh))), plain)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), groups=st.sampled_from([1, 2, 3, 6]))
def test_modulated_group_norm_tangent_by_the_backward_kernel_equals_jvp(seed, groups):
    """Without a graph the tangent of u = GroupNorm(h) scale + shift is GroupNorm's backward kernel applied to
    dh (its Jacobian is symmetric, Eq. 20); with one, the differentiable formula: both equal torch.func.jvp of
    u(h, scale, shift) along (dh, dscale, dshift), in float64, with and without the modulation's tangent."""
    g = torch.Generator().manual_seed(seed)
    h, dh = (torch.randn(2, 6, 4, 5, dtype=F64, generator=g) for _ in range(2))
    scale, shift, dscale, dshift = (torch.randn(2, 6, 1, 1, dtype=F64, generator=g) for _ in range(4))
    u = lambda v, a, b: nn.functional.group_norm(v, groups, eps=1e-5) * a + b
    for tangents in [(dscale, dshift), (0.0, 0.0)]:
        ref = torch.func.jvp(u, (h, scale, shift), (dh, *(torch.zeros_like(scale) if isinstance(t, float) else t
                                                          for t in tangents)))[1]
        with torch.no_grad():  # the kernel path
            kernel = modulated_norm_tangent(group_norm_stats(h, groups, 1e-5), dh, groups, scale, *tangents)
        a = scale.clone().requires_grad_()  # a graph through the scale: the differentiable path
        graph = modulated_norm_tangent(group_norm_stats(h, groups, 1e-5), dh, groups, a, *tangents)
        assert graph.requires_grad
        torch.testing.assert_close(kernel, ref, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(graph.detach(), ref, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("layer", [nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(4, 6, 1, bias=False)])
def test_linear_rule(layer):
    layer = layer.double()
    z, dz = torch.randn(3, 4, 6, 6, dtype=F64), torch.randn(3, 4, 6, 6, dtype=F64)
    _close(unpack(linear_packed(layer, pack(z, dz))), torch.func.jvp(layer, (z,), (dz,)))


def test_unknown_layer_is_refused():
    with pytest.raises(TypeError, match="no forward-mode rule for ReLU"):
        sequential_pair(nn.Sequential(nn.ReLU()), torch.zeros(1, 1), torch.zeros(1, 1))
    with pytest.raises(TypeError, match="no forward-mode rule for ReLU"):
        sequential_tangent(nn.Sequential(nn.ReLU()), [None], torch.zeros(1, 1))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), affine=st.booleans())
def test_saved_input_tangent_of_a_sequential_equals_jvp(seed, affine):
    """sequential_saving's value is seq(z) bit for bit, and sequential_tangent (B rows, from the saved layer
    inputs) equals torch.func.jvp of the whole Sequential, in float64."""
    torch.manual_seed(seed)
    seq = nn.Sequential(nn.GroupNorm(2, 4, affine=affine), nn.Conv2d(4, 6, 1), nn.GELU(), nn.Conv2d(6, 6, 3, padding=1),
                        nn.SiLU(), nn.GroupNorm(3, 6), nn.Conv2d(6, 2, 1)).double()
    z, dz = torch.randn(3, 4, 5, 5, dtype=F64), torch.randn(3, 4, 5, 5, dtype=F64)
    out, inputs = sequential_saving(seq, z)
    assert torch.equal(out, seq(z))
    _close((out, sequential_tangent(seq, inputs, dz)), torch.func.jvp(seq, (z,), (dz,)))


@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize("train", [False, True])
def test_wfno_forward_and_tangent_equals_jvp(train, design):
    torch.manual_seed(0)
    net = ctcm.create_backbone("wfno", **{**TINY_WFNO, **design}, spectral_weight_drop=0.3,
                               dropout=0.2).double().train(train)
    net.resample_noise_(torch.Generator().manual_seed(1))
    x, dx = torch.randn(3, 3, 8, 8, dtype=F64), torch.randn(3, 3, 8, 8, dtype=F64)
    c, dc = torch.tensor([0.1, -0.5, 1.0], dtype=F64), torch.tensor([2.0, 0.3, -1.0], dtype=F64)
    with torch.no_grad():
        _close(net.forward_and_tangent(x, dx, c, dc), torch.func.jvp(net, (x, c), (dx, dc)))


def test_time_embedding_and_silu_rules():
    torch.manual_seed(0)
    embed = ctcm.create_backbone("wfno", **TINY_WFNO).embed.double()
    c, dc = torch.tensor([0.1, -0.5, 1.0], dtype=F64), torch.tensor([2.0, 0.3, -1.0], dtype=F64)
    _close(embed.forward_and_tangent(c, dc), torch.func.jvp(embed, (c,), (dc,)))


@pytest.mark.parametrize("design", [DESIGNS[0], DESIGNS[-1]])
def test_wfno_tangent_with_a_graph_has_the_jvps_parameter_gradients(design):
    """With grad enabled the packed rules take their differentiable path (torch.cat instead of out=
    kernels, GroupNorm's and GELU's backward kernels differentiated again): value, tangent and the
    parameter gradients of <r, F> + <s, dF> equal those of torch.func.jvp in float64 (dropout and
    spectral weight-drop on, one shared mask)."""
    torch.manual_seed(0)
    net = ctcm.create_backbone("wfno", **{**TINY_WFNO, **design}, spectral_weight_drop=0.3,
                               dropout=0.2).double().train()
    net.resample_noise_(torch.Generator().manual_seed(1))
    x, dx = torch.randn(3, 3, 8, 8, dtype=F64), torch.randn(3, 3, 8, 8, dtype=F64)
    c, dc = torch.tensor([0.1, -0.5, 1.0], dtype=F64), torch.tensor([2.0, 0.3, -1.0], dtype=F64)
    r, s = torch.randn(3, 3, 8, 8, dtype=F64), torch.randn(3, 3, 8, 8, dtype=F64)
    params = list(net.parameters())

    def grads(pair):
        return torch.autograd.grad((r * pair[0]).sum() + (s * pair[1]).sum(), params)

    ours = net.forward_and_tangent(x, dx, c, dc)
    reference = torch.func.jvp(net, (x, c), (dx, dc))
    _close(ours, reference)
    for g_ours, g_ref in zip(grads(ours), grads(reference), strict=True):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-11)
    with torch.no_grad():  # the out= path gives the same numbers
        _close(net.forward_and_tangent(x, dx, c, dc), (ours[0].detach(), ours[1].detach()))


@pytest.mark.parametrize(("schedule", "design"), [("geometric", DESIGNS[0]), ("trigflow", DESIGNS[0]),
                                                   *(("geometric", d) for d in DESIGNS[1:])])
def test_one_pass_forward_with_detached_tangent_equals_forward_and_jvp(schedule, design):
    """wfno's forward_and_detached_tangent (the tangent reusing the forward's activations), through
    model(x, t, tangent_along=v): f and F equal the plain forward, with the same parameter gradients;
    the TimeDerivative equals time_derivative's (float64, dropout and weight-drop on) and has no graph."""
    model = tiny_model(schedule, spectral_weight_drop=0.3, dropout=0.2, **design).train()
    model.resample_noise_(torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    x, v = torch.randn(3, 3, 8, 8, dtype=F64, generator=g), torch.randn(3, 3, 8, 8, dtype=F64, generator=g)
    t = model.schedule.t_min + (model.schedule.t_max - model.schedule.t_min) * torch.rand(3, dtype=F64, generator=g)
    params = list(model.parameters())
    f, raw, d = model(x, t, return_raw=True, tangent_along=v)
    f_ref, raw_ref = model(x, t, return_raw=True)
    torch.testing.assert_close((f, raw), (f_ref, raw_ref), rtol=1e-12, atol=1e-12)
    loss = lambda a, b: (a.square() + a * b).mean()
    for ours, ref in zip(torch.autograd.grad(loss(f, raw), params), torch.autograd.grad(loss(f_ref, raw_ref), params),
                         strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        ref = model.time_derivative(x, t, v)
    for name in ("f", "raw", "d_raw", "network", "path"):
        ours_field = getattr(d, name)
        assert not ours_field.requires_grad, name
        torch.testing.assert_close(ours_field, getattr(ref, name), rtol=1e-9, atol=1e-11)
