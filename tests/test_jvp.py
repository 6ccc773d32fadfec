"""Total time derivative by JVP against central finite differences (float64), and its warm-up split."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ctcm
from conftest import stub_model


def path_point(model, x0, eps, t):
    return model.schedule.noisy(x0, eps, t)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), u=st.floats(0.05, 0.95))
def test_total_derivative_matches_central_differences(schedule_name, seed, u):
    model = stub_model(schedule_name)
    s = model.schedule
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=g) * 2 - 1
    eps = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=g)
    t = torch.full((2,), s.t_min + u * (s.t_max - s.t_min), dtype=torch.float64)
    x_t, v = path_point(model, x0, eps, t)
    with torch.no_grad():
        f, df = ctcm.total_derivative(model, x_t, t, v)
        h = 1e-5 * (s.t_max - s.t_min)
        fd = (model(*_along(model, x0, eps, t + h)) - model(*_along(model, x0, eps, t - h))) / (2 * h)
    torch.testing.assert_close(f, model(x_t, t))
    torch.testing.assert_close(df, fd, rtol=1e-5, atol=1e-6 * fd.abs().max().item())


def _along(model, x0, eps, t):
    return path_point(model, x0, eps, t)[0], t


def test_model_time_derivative_equals_total_derivative(schedule_name):
    model = stub_model(schedule_name)
    x0, eps = torch.randn(3, 3, 8, 8, dtype=torch.float64), torch.randn(3, 3, 8, 8, dtype=torch.float64)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64) * model.schedule.t_max
    x_t, v = path_point(model, x0, eps, t)
    with torch.no_grad():
        f_ref, df_ref = ctcm.total_derivative(model, x_t, t, v)
        d = model.time_derivative(x_t, t, v)
        f, df = d.f, d.df_dt()
    torch.testing.assert_close(f, f_ref)
    torch.testing.assert_close(df, df_ref)


def test_warmup_scales_only_the_unstable_terms(schedule_name):
    """warmup = 0 leaves df/dt = c_skip dx/dt + c_out' F (Eq. 11)."""
    model = stub_model(schedule_name)
    x, v = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.randn(2, 3, 8, 8, dtype=torch.float64)
    t = torch.tensor([0.3, 0.6], dtype=torch.float64)
    with torch.no_grad():
        df0 = model.time_derivative(x, t, v).df_dt(warmup=0.0)
        _, d_out = torch.func.jvp(lambda s: model.schedule.coefficients(s)[1], (t,), (torch.ones_like(t),))
        c_skip = model.schedule.coefficients(t)[0]
        expected = c_skip.view(-1, 1, 1, 1) * v + d_out.view(-1, 1, 1, 1) * model.raw(x, t)
    torch.testing.assert_close(df0, expected)


def test_jvp_shape_mismatch_is_explained():
    model = stub_model()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    try:
        ctcm.total_derivative(model, x, torch.zeros(2, dtype=torch.float64), x[:1])
    except ValueError as exc:
        assert "dx_dt has shape" in str(exc)
    else:
        raise AssertionError("expected a ValueError")


def test_ddp_wrapper_is_refused_with_the_fix(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdzv'}", rank=0, world_size=1)
    try:
        model = stub_model()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
        try:
            ctcm.total_derivative(ddp, x, torch.ones(1, dtype=torch.float64), x)
        except TypeError as exc:
            assert "pass model.module" in str(exc)
        else:
            raise AssertionError("expected a TypeError")
    finally:
        dist.destroy_process_group()
