"""The Backbone contract: subclassing is required; forward_and_tangent and resample_noise_ have defaults."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ctcm

from conftest import StubBackbone

F64 = torch.float64


def test_a_plain_module_is_refused_with_the_fix():
    class Plain(nn.Module):
        in_channels = out_channels = 3
        resolution_agnostic = True

        def forward(self, x, c_noise):
            return x

    with pytest.raises(TypeError, match="must subclass ctcm.Backbone"):
        ctcm.ConsistencyModel(Plain(), ctcm.create_schedule("geometric"))


def test_missing_attribute_is_named():
    class NoChannels(ctcm.Backbone):
        def forward(self, x, c_noise):
            return x

    with pytest.raises(TypeError, match=r"lacks attribute\(s\) \['in_channels', 'out_channels'\]"):
        ctcm.ConsistencyModel(NoChannels(), ctcm.create_schedule("geometric"))


def _stub_point():
    """A conditional stub backbone in float64, a point (x, c, y), a direction (dx, dc), and the reference
    (F, dF) of torch.func.jvp there."""
    net = StubBackbone(n_classes=2).double()
    x, dx = torch.randn(2, 3, 4, 4, dtype=F64), torch.randn(2, 3, 4, 4, dtype=F64)
    c, dc, y = torch.tensor([0.2, -0.4], dtype=F64), torch.tensor([1.0, 3.0], dtype=F64), torch.tensor([1, 0])
    return net, (x, dx, c, dc), y, torch.func.jvp(lambda u, s: net(u, s, y=y), (x, c), (dx, dc))


def test_default_forward_and_tangent_is_the_jvp():
    net, (x, dx, c, dc), y, expected = _stub_point()
    f, df = net.forward_and_tangent(x, dx, c, dc, y=y)
    torch.testing.assert_close((f, df), expected)
    # a finite-difference check that the default is a derivative (not just the same call twice)
    h = 1e-6
    fd = (net(x + h * dx, c + h * dc, y=y) - net(x - h * dx, c - h * dc, y=y)) / (2 * h)
    torch.testing.assert_close(df, fd, rtol=1e-6, atol=1e-8)


def test_default_resample_noise_changes_nothing():
    net = StubBackbone()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.resample_noise_(torch.Generator().manual_seed(0))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_default_forward_and_detached_tangent_is_forward_and_a_no_grad_jvp():
    net, (x, dx, c, dc), y, expected = _stub_point()
    f, df = net.forward_and_detached_tangent(x, dx, c, dc, y=y)
    torch.testing.assert_close((f, df), expected)
    assert f.grad_fn is not None and df.grad_fn is None and not df.requires_grad
