"""The peer backbones ``unet`` and ``fno``: registration, presets, shapes, per-sample conditioning, JVP."""

from __future__ import annotations

import io
import sys

import pytest
import torch
from torch import nn

import ctcm

from conftest import needs_neuralop

SMALL = {
    "unet": {"model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "emb_dim": 16},
    "fno": {"width": 8, "n_layers": 2, "modes": 6, "time_channels": 4},
}
# neuraloperator's SpectralConv computes in complex64, so fno's derivative checks run in float32
DTYPE = {"unet": torch.float64, "fno": torch.float32}


pytestmark = pytest.mark.usefixtures("one_thread")


def _backbone(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    net = ctcm.create_backbone(name, in_channels=3, out_channels=3, **SMALL[name], **kwargs)
    with torch.no_grad():  # leave the zero-initialised (identity) state so that every input matters
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net.to(DTYPE[name])


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())


@needs_neuralop
def test_presets_registered_and_matched_to_wfno() -> None:
    with torch.device("meta"):  # shapes only: no 3 x 120 MB of initialised weights
        counts = {p: _n_params(ctcm.build(p)) for p in ("wfno-cifar", "unet-cifar", "fno-cifar")}
    assert abs(counts["unet-cifar"] / counts["wfno-cifar"] - 1) < 0.01
    assert abs(counts["fno-cifar"] / counts["wfno-cifar"] - 1) < 0.01
    ref = ctcm.create_recipe("wfno-cifar")
    for name in ("unet-cifar", "fno-cifar"):
        recipe = ctcm.create_recipe(name)
        assert recipe.model.schedule == ref.model.schedule and recipe.objective == ref.objective
        assert recipe.train == ref.train
        assert (recipe.model.channels, recipe.model.resolution) == (ref.model.channels, ref.model.resolution)


@pytest.mark.parametrize("name", ["unet", pytest.param("fno", marks=needs_neuralop)])
@pytest.mark.parametrize("res", [32, 64])
def test_shapes(name: str, res: int) -> None:
    net = _backbone(name)
    x = torch.randn(2, 3, res, res, dtype=DTYPE[name])
    assert net(x, torch.rand(2, dtype=x.dtype)).shape == (2, 3, res, res)


@pytest.mark.parametrize("name", ["unet", pytest.param("fno", marks=needs_neuralop)])
def test_per_sample_conditioning(name: str) -> None:
    net = _backbone(name)
    x = torch.randn(3, 3, 16, 16, dtype=DTYPE[name])
    c = torch.tensor([0.1, 0.5, 0.9], dtype=x.dtype)
    c2 = c.clone()
    c2[1] = 0.2
    y, y2 = net(x, c), net(x, c2)
    assert (y[1] - y2[1]).abs().max() > 1e-4
    torch.testing.assert_close(y[[0, 2]], y2[[0, 2]], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["unet", pytest.param("fno", marks=needs_neuralop)])
def test_jvp_matches_central_finite_difference(name: str) -> None:
    net = _backbone(name)
    dt = DTYPE[name]
    x = torch.randn(2, 3, 16, 16, dtype=dt)
    c = torch.tensor([0.3, 0.7], dtype=dt)
    v = torch.randn_like(x)
    _, jvp = ctcm.total_derivative(net, x, c, v)
    h = 1e-5 if dt == torch.float64 else 1e-2
    fd = (net(x + h * v, c + h) - net(x - h * v, c - h)) / (2 * h)
    tol = dict(rtol=1e-6, atol=1e-8) if dt == torch.float64 else dict(rtol=2e-2, atol=2e-3)
    torch.testing.assert_close(jvp, fd, **tol)


@pytest.mark.parametrize("preset", ["unet-cifar", pytest.param("fno-cifar", marks=needs_neuralop)])
def test_model_time_derivative_runs_on_preset_structure(preset: str) -> None:
    model = ctcm.build(preset, backbone=SMALL[preset.split("-")[0]], resolution=16)
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([0.5, 0.9])  # inside the schedule's [t_min, t_max] = [0, 1] (model(x, t) checks it)
    d = model.time_derivative(x, t, torch.randn_like(x))
    f, df = d.f, d.df_dt()
    f2, df2 = ctcm.total_derivative(model, x, t, torch.randn_like(x))
    assert f.shape == df.shape == f2.shape == df2.shape == x.shape
    assert torch.isfinite(df).all()


@needs_neuralop
def test_fno_refuses_float64_with_clear_error_and_keeps_complex_weights() -> None:
    net = _backbone("fno").double()
    weights = [p for p in net.parameters() if p.is_complex()]
    assert weights and all(p.dtype == torch.complex128 for p in weights)
    with pytest.raises(TypeError, match="float32"):
        net(torch.randn(1, 3, 16, 16, dtype=torch.float64), torch.rand(1, dtype=torch.float64))


@needs_neuralop
def test_fno_state_dict_loads_weights_only() -> None:
    net = _backbone("fno")
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = ctcm.create_backbone("fno", in_channels=3, out_channels=3, **SMALL["fno"])
    fresh.load_state_dict(state)
    x = torch.randn(1, 3, 16, 16)
    c = torch.rand(1)
    torch.testing.assert_close(fresh(x, c), net(x, c))


def test_unet_rejects_indivisible_size() -> None:
    net = _backbone("unet")
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(1, 3, 33, 33, dtype=torch.float64), torch.rand(1, dtype=torch.float64))


def test_missing_neuralop_names_the_extra(monkeypatch) -> None:
    for name in [m for m in list(sys.modules) if m.startswith("neuralop.")] + ["neuralop"]:
        monkeypatch.setitem(sys.modules, name, None)  # import of these modules now fails
    with pytest.raises(ImportError, match=r"the 'fno' backbone needs neuraloperator.*pip install 'ctcm\[neuralop\]'"):
        ctcm.create_backbone("fno", in_channels=3, out_channels=3, **SMALL["fno"])
    with pytest.raises(ImportError, match=r"spectral_impl='neuralop' needs neuraloperator.*ctcm\[neuralop\]"):
        ctcm.create_backbone("wfno", in_channels=3, width=8, n_layers=1, modes=4, spectral_impl="neuralop")
