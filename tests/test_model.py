"""ConsistencyModel and WFNO-2D: boundary condition, shapes, per-sample conditioning, dtype casts, sampling."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ctcm
from conftest import TINY_WFNO, needs_neuralop, stub_model, tiny_model


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(0.01, 100.0))
def test_boundary_condition_is_exact(schedule_name, seed, scale):
    model = tiny_model(schedule_name)
    x = scale * torch.randn(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    t = torch.full((3,), model.schedule.t_min, dtype=torch.float64)
    assert torch.equal(model(x, t), x)


@pytest.mark.parametrize("resolution", [32, 64])
def test_wfno_keeps_shape_at_32_and_64(resolution):
    net = ctcm.create_backbone("wfno", **TINY_WFNO)
    x = torch.randn(2, 3, resolution, resolution)
    assert net(x, torch.zeros(2)).shape == x.shape


def test_wfno_is_resolution_agnostic_inside_the_model():
    model = tiny_model(resolution=32, dtype=torch.float32)
    assert model(torch.randn(2, 3, 64, 64), torch.full((2,), 0.5)).shape == (2, 3, 64, 64)


def test_conditioning_is_per_sample(schedule_name):
    model = tiny_model(schedule_name)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    t = torch.full((4,), 0.5, dtype=torch.float64)
    t2 = t.clone()
    t2[1] = 0.7
    y, y2 = model(x, t), model(x, t2)
    changed = (y - y2).flatten(1).abs().amax(1)
    assert changed[1] > 1e-6
    assert torch.equal(changed[[0, 2, 3]], torch.zeros(3, dtype=torch.float64))


def test_backbone_conditioning_is_per_sample():
    net = ctcm.create_backbone("wfno", **TINY_WFNO).double()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    c = torch.zeros(3, dtype=torch.float64)
    c2 = c.clone()
    c2[2] = 0.3
    diff = (net(x, c) - net(x, c2)).flatten(1).abs().amax(1)
    assert diff[2] > 0 and diff[0] == 0 and diff[1] == 0


def test_a_shut_3x3_path_starts_as_the_1x1_form_and_opens_by_its_gradient():
    """``local3_init=0``: at initialisation the output does not depend on any W_3 (perturbing them changes
    nothing), yet the loss has a non-zero gradient in every a_3, so training can open the path."""
    torch.manual_seed(0)
    net = ctcm.create_backbone("wfno", **TINY_WFNO, local_kernel=3, local3_init=0.0).double()
    x, c = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.tensor([0.2, 1.5], dtype=torch.float64)
    before = net(x, c)
    with torch.no_grad():
        for block in net.blocks:
            assert torch.count_nonzero(block.mix[2]) == 0
            block.conv3.weight.add_(torch.randn_like(block.conv3.weight))
            block.conv3.bias.add_(1.0)
    after = net(x, c)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    after.square().sum().backward()
    assert all(torch.count_nonzero(block.mix.grad[2]) == block.mix.shape[1] for block in net.blocks)


@needs_neuralop
def test_casts_round_trip_and_keep_complex_weights():
    model = ctcm.build("wfno-cifar", backbone={**TINY_WFNO, "spectral_impl": "neuralop"}, resolution=8)
    complex_params = [p for p in model.parameters() if p.is_complex()]
    assert complex_params, "neuralop's SpectralConv should hold complex weights"
    before = complex_params[0].detach().clone()
    model.to(torch.float64)
    after = [p for p in model.parameters() if p.is_complex()][0]
    assert after.dtype == torch.complex128
    torch.testing.assert_close(after.detach(), before.to(torch.complex128))
    model.float()
    assert [p for p in model.parameters() if p.is_complex()][0].dtype == torch.complex64
    model.double()
    assert all(p.dtype in (torch.float64, torch.complex128) for p in model.parameters())


def test_double_model_computes_in_double():
    model = tiny_model(dtype=torch.float32).double()
    y = model(torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.full((2,), 0.3, dtype=torch.float64))
    assert y.dtype == torch.float64


def test_wrong_shapes_are_explained():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, H, W\)"):
        model(torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="t must be a scalar or have shape"):
        model(torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("steps", [1, 2])
def test_sample_shape_range_and_reproducibility(schedule_name, steps):
    model = stub_model(schedule_name, dtype=torch.float32).eval()
    a = model.sample(5, steps=steps, seed=3)
    b = model.sample(5, steps=steps, seed=3)
    assert a.shape == (5, 3, 8, 8) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)


def test_multistep_counts_network_evaluations():
    model = stub_model(dtype=torch.float32).eval()
    calls = []
    model.backbone.register_forward_hook(lambda *args: calls.append(1))
    ts = [1.0, 0.7, 0.4]
    model.sample(2, times=ts)
    assert len(calls) == 3
    with pytest.raises(ValueError, match="decrease strictly"):
        model.sample(2, times=[0.4, 0.7])


def test_one_step_sample_is_f_at_t_max():
    model = stub_model(dtype=torch.float64).eval()
    noise = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    expected = model(model.schedule.prior_std * noise, torch.full((2,), model.schedule.t_max, dtype=torch.float64))
    torch.testing.assert_close(ctcm.multistep_sample(model, noise, ctcm.default_times(model.schedule, 1),
                                                     schedule=model.schedule), expected)


def test_build_overrides():
    model = ctcm.build("wfno-cifar", backbone={"width": 8, "n_layers": 2})
    assert len(model.backbone.blocks) == 2 and model.config.backbone.kwargs["width"] == 8
    trig = ctcm.build("wfno-cifar-trigflow", backbone={"width": 8, "n_layers": 1})
    assert type(trig.schedule).__name__ == "TrigFlowSchedule"
    with pytest.raises(ctcm.ConfigError, match="come from the model's 'channels'"):
        ctcm.build("wfno-cifar", backbone={"in_channels": 1})


def test_build_with_instances_is_not_rebuildable(tmp_path):
    backbone = ctcm.create_backbone("wfno", **TINY_WFNO)
    model = ctcm.build("wfno-cifar", backbone=backbone)
    assert model.backbone is backbone and model.config is None
    ctcm.save_checkpoint(tmp_path / "c.pt", model)
    with pytest.raises(ctcm.CheckpointError, match="built from instances"):
        ctcm.load_checkpoint(tmp_path / "c.pt")


def test_spectral_weight_drop_mask_is_shared_within_a_step():
    model = tiny_model(dtype=torch.float64, spectral_weight_drop=0.5).train()
    x, t = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.full((2,), 0.5, dtype=torch.float64)
    model.resample_noise_(torch.Generator().manual_seed(0))
    a, b = model(x, t), model(x, t)
    assert torch.equal(a, b)
    model.resample_noise_(torch.Generator().manual_seed(1))
    assert not torch.equal(model(x, t), a)
    model.eval()
    assert torch.equal(model(x, t), model(x, t))
