"""Time distributions and gap curricula (Eq. 8, 21-22): ranges, end points, monotone shrinking."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ctcm
from ctcm.objective import ObjectiveContext
from ctcm.time_distributions import ECTGap, ICTGap, UniformGap, make_gap, make_time_distribution
from conftest import tiny_model


def schedule(name: str) -> ctcm.NoiseSchedule:
    return ctcm.create_schedule(name)


def test_time_distributions_stay_in_range_and_follow_their_law(schedule_name):
    s = schedule(schedule_name)
    gen = torch.Generator().manual_seed(0)
    t = make_time_distribution({"name": "lognormal", "p_mean": -1.1, "p_std": 2.0}).sample(20_000, s, generator=gen,
                                                                                           dtype=torch.float64)
    assert t.min() >= s.t_min and t.max() <= s.t_max
    inside = (t > s.t_min) & (t < s.t_max)  # away from the clipped ends, ln s(t) is N(-1.1, 2.0^2)
    log_s = torch.log(s.edm_sigma(t[inside]))
    assert abs(float(torch.median(log_s)) + 1.1) < 0.1
    u = make_time_distribution("uniform").sample(20_000, s, generator=gen, dtype=torch.float64)
    assert abs(float(u.mean()) - 0.5 * (s.t_min + s.t_max)) < 0.02 * (s.t_max - s.t_min)


@settings(max_examples=40, deadline=None)
@given(step=st.integers(0, 10**6), u=st.floats(0.0, 1.0, exclude_max=True), frac=st.floats(0.0, 1.0))
def test_every_gap_maps_into_t_min_to_t(schedule_name, step, u, frac):
    s = schedule(schedule_name)
    t = torch.tensor([s.t_min + frac * (s.t_max - s.t_min)], dtype=torch.float64)
    for gap in (UniformGap(0.3), ECTGap(stage_steps=1000), ICTGap(doubling_steps=1000)):
        t_prev = gap.target_time(t, s, step, torch.tensor([u], dtype=torch.float64))
        assert s.t_min <= float(t_prev) <= float(t) + 1e-12, gap


def test_ect_stage_zero_is_pure_denoising_for_small_noise(schedule_name):
    """Stage 0 with q = 2, k = 8: s' = s (1 - (1 + 8 sigmoid(-s)) / 2) <= 0 exactly when sigmoid(-s) >= 1/8."""
    s = schedule(schedule_name)
    gap = ECTGap(stage_steps=100)
    edm = torch.tensor([0.01, 0.5, 1.9, 2.0, 10.0, 70.0], dtype=torch.float64)
    t = s.t_of_edm_sigma(edm)
    t_prev = gap.target_time(t, s, step=0, u=torch.zeros_like(t))
    denoise = torch.sigmoid(-edm) >= 1 / 8
    assert torch.equal(t_prev == s.t_min, denoise)  # r = t_min is the denoising target
    ratio = 1 - (1 + 8 * torch.sigmoid(-edm[~denoise])) / 2  # the rest follow the mapping exactly
    torch.testing.assert_close(s.edm_sigma(t_prev[~denoise]), edm[~denoise] * ratio)


def test_ect_gap_shrinks_with_stages_towards_zero(schedule_name):
    s = schedule(schedule_name)
    gap = ECTGap(stage_steps=10)
    t = torch.linspace(0.2, 0.9, 8, dtype=torch.float64) * s.t_max
    gaps = [float((t - gap.target_time(t, s, step, torch.zeros_like(t))).max()) for step in (0, 10, 20, 40, 200)]
    assert all(a >= b for a, b in zip(gaps, gaps[1:])) and gaps[-1] < 1e-3 * gaps[0]


def test_ict_discretisation_doubles_and_targets_grid_points():
    s = schedule("geometric")
    gap = ICTGap(s0=10, s1=80, doubling_steps=5)
    assert [gap.num_steps(k) for k in (0, 4, 5, 10, 15, 100)] == [11, 11, 21, 41, 81, 81]
    t = torch.linspace(0.05, 1.0, 50, dtype=torch.float64)
    t_prev = gap.target_time(t, s, 0, torch.zeros_like(t))
    lo, hi = 0.002 ** (1 / 7), 80.0 ** (1 / 7)
    grid = (lo + torch.arange(11, dtype=torch.float64) / 10 * (hi - lo)) ** 7
    targets = s.edm_sigma(t_prev)
    interior = t_prev > 0
    nearest = (targets[interior, None] - grid[None]).abs().min(1).values
    assert float(nearest.max()) < 1e-9 * 80  # every target is a grid sigma
    assert torch.all(targets <= s.edm_sigma(t) + 1e-12)


def test_consistency_target_at_t_min_is_the_denoising_target(schedule_name):
    """ECT's stage 0 at small noise sends t' to t_min, where the target is x_{t_min} itself (boundary condition)."""
    model = tiny_model(schedule_name)
    x0 = torch.rand(4, 3, 8, 8, dtype=torch.float64) * 2 - 1
    cons = ctcm.create_objective("consistency", gap={"name": "ect", "stage_steps": 100})
    ctx = ObjectiveContext(model, x0, generator=torch.Generator().manual_seed(0))
    ctx.t = model.schedule.t_of_edm_sigma(torch.tensor([0.02, 0.1, 0.5, 1.5], dtype=torch.float64))
    assert torch.all(cons.target_times(ctx) == model.schedule.t_min)
    t_min = torch.full_like(ctx.t, model.schedule.t_min)
    x_min, _ = model.schedule.noisy(x0, ctx.noise, t_min)
    torch.testing.assert_close(model(x_min, t_min), x_min, rtol=0, atol=0)
    expected = (ctx.f - x_min).pow(2).flatten(1).mean(1).mean()
    torch.testing.assert_close(cons.compute(ctx).loss, expected)


def test_terms_with_different_time_distributions_are_refused():
    a = ctcm.create_objective("consistency")
    b = ctcm.create_objective("tangent", time={"name": "uniform"})
    with pytest.raises(ValueError, match="different time distributions"):
        (a + b)(tiny_model(), torch.zeros(2, 3, 8, 8, dtype=torch.float64))


def test_unknown_gap_names_the_registered_ones():
    with pytest.raises(ctcm.RegistryError, match="Registered gaps: ect, ict, uniform"):
        make_gap({"name": "ecct"})
    assert math.isclose(make_gap(None).delta_max, 0.02)


def test_ict_gap_at_pure_noise_of_the_linear_schedule():
    """On ``linear`` s(t_max) = 1 / 0 = inf: the iCT grid tops out at iCT's s_max = 80, so t = t_max maps to a
    finite t' inside [t_min, t_max) (it was NaN; found by the property test above)."""
    s = schedule("linear")
    t = torch.tensor([s.t_max], dtype=torch.float64)
    t_prev = ICTGap(doubling_steps=1000).target_time(t, s, 0, torch.tensor([0.0], dtype=torch.float64))
    assert torch.isfinite(t_prev).all() and s.t_min <= float(t_prev) < float(t)
