"""The fast paths: torch.compile of the training step's model calls, bf16 autocast, fp32 islands."""

from __future__ import annotations

import copy

import pytest
import torch

import ctcm
from conftest import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(model: ctcm.ConsistencyModel, b: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, 3, model.resolution, model.resolution, generator=g)
    return x, torch.rand(b, generator=g) * 0.8 + 0.1, torch.randn(b, 3, model.resolution, model.resolution, generator=g)


def _step_outputs(model: ctcm.ConsistencyModel, x, t, v) -> list[torch.Tensor]:
    """forward, no-grad tangent, and the gradient of a loss through forward (what a training step calls),
    then the same from the one-pass forward with its detached tangent (what a tangent objective calls)."""
    f = model(x, t)
    grads = torch.autograd.grad(f.square().mean(), list(model.parameters()))
    with torch.no_grad():
        df = model.time_derivative(x, t, v).df_dt()
    f1, _, d = model(x, t, return_raw=True, tangent_along=v)
    grads1 = torch.autograd.grad((f1.square() * d.df_dt()).mean(), list(model.parameters()))
    return [f.detach(), df, *grads, f1.detach(), d.df_dt(), *grads1]


def _check_compiled_equals_eager(backend: str, dropout: float = 0.0) -> None:
    eager = tiny_model(dtype=torch.float32, spectral_weight_drop=0.2, dropout=dropout).train()
    # fullgraph: no graph breaks; feature dropout draws its step's mask from a torch.Generator, which
    # dynamo cannot trace (one break per block, at the first forward of a step): checked without it
    compiled = ctcm.compile_backbone(copy.deepcopy(eager), backend=backend, fullgraph=dropout == 0.0)
    for net in (eager, compiled):
        net.resample_noise_(torch.Generator().manual_seed(1))
    x, t, v = _batch(eager)
    for got, want in zip(_step_outputs(compiled, x, t, v), _step_outputs(eager, x, t, v)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_compiled_step_calls_equal_eager_without_graph_breaks() -> None:
    """Dynamo + AOTAutograd (forward, backward, hand-written tangent) with fullgraph=True: seconds."""
    torch._dynamo.reset()
    _check_compiled_equals_eager("aot_eager")


def test_compiled_step_calls_with_feature_dropout_equal_eager() -> None:
    """Dropout > 0 under compile: the same mask as eager (shared by the forward and the tangent)."""
    torch._dynamo.reset()
    _check_compiled_equals_eager("aot_eager", dropout=0.2)


@pytest.mark.slow
def test_inductor_compiles_on_cpu_and_equals_eager() -> None:
    """The real backend (C++ kernels: a minute cold). The FFT path failed here with KeyError: 'complex64'."""
    torch._dynamo.reset()
    _check_compiled_equals_eager("inductor")


def test_bf16_autocast_tangent_stays_close_to_fp32() -> None:
    """Stated tolerance: relative L2 error of df/dt under CPU bf16 autocast <= 1% of the fp32 tangent
    (measured 0.1%)."""
    model = tiny_model(dtype=torch.float32, resolution=16, modes=8).eval()
    x, t, v = _batch(model, 4)
    with torch.no_grad():
        ref = model.time_derivative(x, t, v).df_dt()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.time_derivative(x, t, v).df_dt()
    assert low.dtype == torch.float32  # the consistency-function mix and the coefficients stay fp32
    rel = (low - ref).norm() / ref.norm()
    assert 1e-5 < rel < 0.01, rel  # non-zero: bf16 really ran


def test_bf16_autocast_uses_low_precision_matmuls_in_the_spectral_layer() -> None:
    conv = ctcm.create_backbone("wfno", width=8, n_layers=1, modes=4).blocks[0].spectral
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(torch.randn(2, 8, 16, 16)).dtype == torch.bfloat16


def test_losses_are_fp32_under_autocast() -> None:
    model = tiny_model(dtype=torch.float32).train()
    objective = ctcm.create_objective("consistency") + 0.1 * ctcm.create_objective("tangent")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = objective(model, torch.rand(4, 3, 8, 8) * 2 - 1, step=10, generator=torch.Generator().manual_seed(0))
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)


def test_fno_spectral_layers_run_in_float32_under_bf16_autocast() -> None:
    """cuFFT has no bf16 kernels ("Unsupported dtype BFloat16"): the neuraloperator layers get fp32 inputs."""
    torch.manual_seed(0)
    model = ctcm.build("fno-cifar", backbone={"width": 8, "n_layers": 1, "modes": 4, "time_channels": 4},
                       resolution=16)
    seen: list[torch.dtype] = []
    model.backbone.blocks.convs[0].register_forward_hook(lambda m, args, out: seen.append(args[0].dtype))
    x, t = torch.randn(2, 3, 16, 16), torch.rand(2)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x, t)
    assert seen == [torch.float32]
    torch.testing.assert_close(y, model(x, t).detach(), rtol=0.05, atol=0.05)


def test_wfno_with_neuralop_spectral_layer_runs_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    net = ctcm.create_backbone("wfno", width=8, n_layers=1, modes=4, spectral_impl="neuralop")
    x, c = torch.randn(2, 3, 8, 8), torch.rand(2)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x, c)
    torch.testing.assert_close(y.float(), net(x, c).detach(), rtol=0.05, atol=0.05)
