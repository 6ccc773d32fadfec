"""Hand-written forward-mode rules (Eq. 20) against torch.func.jvp, in float64."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import ctcm
from conftest import TINY_WFNO
from ctcm_backbones.tangent_ops import gelu_pair, group_norm_pair, linear_pair, sequential_pair

F64 = torch.float64


def _close(pair, ref):
    torch.testing.assert_close(pair[0], ref[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(pair[1], ref[1], rtol=1e-9, atol=1e-11)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.1, 10.0))
def test_gelu_and_group_norm_rules(seed, scale):
    g = torch.Generator().manual_seed(seed)
    h = scale * torch.randn(2, 8, 5, 5, dtype=F64, generator=g)
    dh = torch.randn(2, 8, 5, 5, dtype=F64, generator=g)
    _close(gelu_pair(h, dh), torch.func.jvp(nn.functional.gelu, (h,), (dh,)))
    norm = nn.GroupNorm(4, 8).double()
    with torch.no_grad():
        norm.weight.normal_(generator=g)
        norm.bias.normal_(generator=g)
    _close(group_norm_pair(norm, h, dh), torch.func.jvp(norm, (h,), (dh,)))


@pytest.mark.parametrize("layer", [nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(4, 6, 1, bias=False)])
def test_linear_rule(layer):
    layer = layer.double()
    z, dz = torch.randn(3, 4, 6, 6, dtype=F64), torch.randn(3, 4, 6, 6, dtype=F64)
    _close(linear_pair(layer, z, dz), torch.func.jvp(layer, (z,), (dz,)))


def test_unknown_layer_is_refused():
    with pytest.raises(TypeError, match="no forward-mode rule for ReLU"):
        sequential_pair(nn.Sequential(nn.ReLU()), torch.zeros(1, 1), torch.zeros(1, 1))


@pytest.mark.parametrize("train", [False, True])
def test_wfno_forward_and_tangent_equals_jvp(train):
    torch.manual_seed(0)
    net = ctcm.create_backbone("wfno", **TINY_WFNO, spectral_weight_drop=0.3).double().train(train)
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
