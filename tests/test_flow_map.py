"""Two-time models X(x, t, r) (Eq. 35-38): the linear schedule's flow-map coefficients, MeanFlow's (t, r) sampler,
the boundary conditions, the time derivative at fixed r, sampling and checkpoints of a flow map."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ctcm
from ctcm.interfaces import NoiseSchedule
from ctcm.schedules import LinearSchedule
from ctcm.time_distributions import MeanFlowTimes
from conftest import stub_model

F64 = torch.float64


def times(seed: int, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g, dtype=F64)
    return t, t * torch.rand(n, generator=g, dtype=F64)


@given(st.integers(0, 10_000))
@settings(deadline=None, max_examples=25)
def test_flow_map_coefficients_are_exact_at_both_ends(seed):
    s = LinearSchedule()
    t, r = times(seed)
    c_skip, c_out, c_in, pair = s.flow_map_coefficients(t, t)
    assert (c_skip == 1).all() and (c_out == 0).all() and (pair[:, 1] == 0).all()  # X(x, t, t) = x
    at_min = s.flow_map_coefficients(t, torch.zeros_like(t))  # r = t_min: the consistency coefficients
    for got, want in zip(at_min[:3], s.coefficients(t)):
        assert torch.equal(got, want)
    assert torch.equal(at_min[3][:, 0], s.c_noise(t)) and torch.equal(s.flow_map_coefficients(t, r)[3][:, 1], t - r)


@given(st.integers(0, 10_000))
@settings(deadline=None, max_examples=25)
def test_closed_form_flow_map_rates_equal_the_generic_jvp(seed):
    s = LinearSchedule()
    t, r = times(seed)
    closed = s.flow_map_coefficients_with_rates(t, r)
    generic = NoiseSchedule.flow_map_coefficients_with_rates(s, t, r)
    for a, b in zip(closed[0] + closed[1], generic[0] + generic[1]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-15)


def test_linear_path_velocity_and_edm_sigma():
    s = LinearSchedule()
    x0, eps = torch.randn(3, 2, 4, 4, dtype=F64), torch.randn(3, 2, 4, 4, dtype=F64)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=F64)
    x_t, v = s.noisy(x0, eps, t)
    torch.testing.assert_close(x_t, (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * eps)
    torch.testing.assert_close(v, eps - x0)
    assert s.prior_std == 1.0
    ends = s.t_of_edm_sigma(torch.tensor([0.0, float("inf")], dtype=F64))
    assert ends.tolist() == [0.0, 1.0]


def test_schedules_without_a_flow_map_refuse_two_time_backbones():
    with pytest.raises(ValueError, match="no two-time .*use schedule 'linear'"):
        stub_model("geometric", time_inputs=2)(torch.zeros(1, 3, 8, 8, dtype=F64), 0.5)


# -- MeanFlow's (t, r) sampler ----------------------------------------------------------------------------------------
@given(st.floats(-3, 1), st.floats(0.3, 2.5), st.floats(-4, 1), st.floats(0.3, 2.5), st.floats(0, 1),
       st.sampled_from(["sort", "mask"]), st.integers(0, 1000))
@settings(deadline=None, max_examples=30)
def test_meanflow_times_are_ordered_logit_normal_pairs(mt, st_, mr, sr, ratio, order, seed):
    dist = MeanFlowTimes(mt, st_, mr, sr, ratio, order)
    n = 4000
    t, r = dist.sample_pair(n, LinearSchedule(), generator=torch.Generator().manual_seed(seed), dtype=F64)
    assert ((0 <= r) & (r <= t) & (t <= 1)).all()
    g = torch.Generator().manual_seed(seed)  # the public code's draws: t, r logit-normal, then u
    t_ref = torch.sigmoid(mt + st_ * torch.randn(n, generator=g, dtype=F64))
    r_ref = torch.sigmoid(mr + sr * torch.randn(n, generator=g, dtype=F64))
    same = torch.rand(n, generator=g, dtype=F64) < 1 - ratio
    if order == "sort":
        t_ref, r_ref = torch.maximum(t_ref, r_ref), torch.minimum(t_ref, r_ref)
        r_ref = torch.where(same, t_ref, r_ref)
    else:
        r_ref = torch.minimum(t_ref, torch.where(same, t_ref, r_ref))
    torch.testing.assert_close(t, t_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(r, r_ref, rtol=1e-12, atol=1e-12)


def test_meanflow_times_refuse_bad_arguments():
    for kwargs, match in [({"ratio": 1.5}, "ratio"), ({"order": "v2"}, "order"), ({"p_std_r": 0}, "p_std")]:
        with pytest.raises(ValueError, match=match):
            MeanFlowTimes(**kwargs)


# -- the model ----------------------------------------------------------------------------------------------------
@given(st.integers(0, 10_000))
@settings(deadline=None, max_examples=20)
def test_flow_map_boundary_is_exact_and_r_defaults_to_t_min(seed):
    model = stub_model("linear", time_inputs=2)
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=F64)
    t, r = times(seed)
    assert torch.equal(model(x, t, t), x)  # X(x, t, t) = x bit for bit
    assert torch.equal(model(x, t), model(x, t, torch.zeros_like(t)))
    assert not torch.allclose(model(x, t, r), x)


def test_bad_target_times_get_one_clear_line():
    flow, cm = stub_model("linear", time_inputs=2), stub_model("linear")
    x, t = torch.zeros(2, 3, 8, 8, dtype=F64), torch.tensor([0.5, 0.6], dtype=F64)
    with pytest.raises(ValueError, match="r must be <= t"):
        flow(x, t, t + 0.1)
    with pytest.raises(ValueError, match="shape"):
        flow(x, t, torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="maps to r = t_min only.*time_inputs=2"):
        cm(x, t, 0.2)
    assert torch.equal(cm(x, t, 0.0), cm(x, t))  # a consistency model is the flow map to t_min


def test_flow_map_time_derivative_at_fixed_r_equals_torch_func_jvp():
    model = stub_model("linear", time_inputs=2)
    g = torch.Generator().manual_seed(3)
    x, dx = (torch.randn(6, 3, 8, 8, generator=g, dtype=F64) for _ in range(2))
    t, r = times(3)
    want, d_want = ctcm.total_derivative(lambda z, s: model(z, s, r), x, t, dx)
    d = model.time_derivative(x, t, dx, r)
    torch.testing.assert_close(d.f, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d.df_dt(), d_want, rtol=1e-10, atol=1e-10)
    f, raw, one_pass = model(x, t, r, return_raw=True, tangent_along=dx)
    torch.testing.assert_close(one_pass.df_dt(), d_want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(f, want)


# -- sampling and checkpoints -------------------------------------------------------------------------------------
def test_flow_map_sampling_chains_the_jumps_and_keeps_the_seed_rule():
    model = stub_model("linear", time_inputs=2)
    noise = ctcm.sampling.ImageNoise(7, range(0, 5), (3, 8, 8), device=torch.device("cpu"), dtype=F64)()
    one = model.sample(5, steps=1, seed=7, clip=False)
    torch.testing.assert_close(one, model(noise, 1.0, 0.0))
    two = model.sample(5, steps=2, seed=7, clip=False)
    torch.testing.assert_close(two, model(model(noise, 1.0, 0.5), 0.5, 0.0))
    three = model.sample(5, times=[1.0, 0.6, 0.3], seed=7, clip=False)
    torch.testing.assert_close(three, model(model(model(noise, 1.0, 0.6), 0.6, 0.3), 0.3, 0.0))
    parts = torch.cat([x for _, x in model.sample_batches(5, seed=7, steps=2, batch_size=2, clip=False)])
    assert torch.equal(parts, two)  # image i depends on (seed, i) only


def test_flow_map_checkpoint_round_trips(tmp_path):
    model = stub_model("linear", time_inputs=2)
    ctcm.save_checkpoint(tmp_path / "c.pt", model, step=1)
    loaded = ctcm.load_checkpoint(tmp_path / "c.pt")
    assert loaded.flow_map and loaded.config.backbone.kwargs["time_inputs"] == 2
    assert torch.equal(loaded.sample(3, steps=2, seed=1), model.eval().sample(3, steps=2, seed=1))
