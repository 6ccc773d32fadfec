"""Schedules: monotone paths, analytic derivatives vs finite differences, proposal range, boundary coefficients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ctcm

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def make(name: str) -> ctcm.NoiseSchedule:
    return ctcm.create_schedule(name)


def times(schedule, fractions) -> torch.Tensor:
    u = torch.tensor(fractions, dtype=torch.float64)
    return schedule.t_min + u * (schedule.t_max - schedule.t_min)


@settings(max_examples=50, deadline=None)
@given(u=st.lists(unit, min_size=2, max_size=16))
def test_sigma_increases_alpha_and_snr_decrease(schedule_name, u):
    s = make(schedule_name)
    t = torch.sort(times(s, u)).values
    sigma, alpha = s.sigma(t), s.alpha(t)
    assert (sigma[1:] >= sigma[:-1]).all()
    assert (alpha[1:] <= alpha[:-1]).all()
    snr = alpha**2 / sigma**2
    assert (snr[1:] <= snr[:-1] * (1 + 1e-12)).all()


@settings(max_examples=50, deadline=None)
@given(u=st.floats(min_value=0.01, max_value=0.99))
def test_path_derivatives_match_central_differences(schedule_name, u):
    s = make(schedule_name)
    t = times(s, [u])
    h = 1e-6 * (s.t_max - s.t_min)
    for value, deriv in ((s.sigma, s.d_sigma), (s.alpha, s.d_alpha)):
        fd = (value(t + h) - value(t - h)) / (2 * h)
        torch.testing.assert_close(deriv(t), fd, rtol=1e-6, atol=1e-8)


@settings(max_examples=50, deadline=None)
@given(u=st.floats(min_value=0.0, max_value=1.0))
def test_c_noise_has_bounded_time_derivative(schedule_name, u):
    s = make(schedule_name)
    t = times(s, [u]).requires_grad_(True)
    (grad,) = torch.autograd.grad(s.c_noise(t).sum(), t)
    assert grad.abs().item() <= 5.0


def test_boundary_coefficients_are_exact(schedule_name):
    s = make(schedule_name)
    t = torch.tensor([s.t_min], dtype=torch.float64)
    c_skip, c_out, _ = s.coefficients(t)
    assert c_skip.item() == 1.0 and c_out.item() == 0.0


def test_edm_sigma_inverse_round_trips(schedule_name):
    """t(s(t)) = t for the closed forms, and the generic bisection agrees with them (float64)."""
    s = make(schedule_name)
    t = torch.linspace(0.05, 0.95, 11, dtype=torch.float64) * s.t_max
    torch.testing.assert_close(s.t_of_edm_sigma(s.edm_sigma(t)), t)
    generic = ctcm.NoiseSchedule.t_of_edm_sigma(s, s.edm_sigma(t))
    torch.testing.assert_close(generic, t, atol=1e-12, rtol=0)


def test_geometric_endpoints_and_prior():
    s = make("geometric")
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(s.sigma(t), torch.tensor([0.002, 80.0], dtype=torch.float64))
    assert s.prior_std == pytest.approx((80.0**2 + 0.5**2) ** 0.5)
    assert s.sigma(torch.tensor(s.default_t_mid, dtype=torch.float64)).item() == pytest.approx(0.821)


def test_trigflow_is_variance_preserving():
    s = make("trigflow")
    t = torch.linspace(0, s.t_max, 7, dtype=torch.float64)
    torch.testing.assert_close(s.alpha(t) ** 2 * s.sigma_data**2 + s.sigma(t) ** 2,
                               torch.full_like(t, s.sigma_data**2))
    assert s.prior_std == pytest.approx(0.5)


def test_bad_schedule_arguments_are_rejected():
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        ctcm.create_schedule("geometric", sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(TypeError, match="proposal"):  # time distributions belong to objectives now
        ctcm.create_schedule("geometric", proposal="beta")


@settings(max_examples=50, deadline=None)
@given(u=st.lists(unit, min_size=1, max_size=16))
def test_closed_form_coefficient_rates_equal_the_generic_jvp(schedule_name, u):
    """Eq. 31: each built-in schedule's closed-form (c_skip, c_out, c_in, c_noise) and d/dt equal the
    interface's default, one torch.func.jvp of coefficients() and c_noise(), in float64."""
    s = make(schedule_name)
    t = times(s, u)
    values, rates = s.coefficients_with_rates(t)
    ref_values, ref_rates = ctcm.NoiseSchedule.coefficients_with_rates(s, t)
    assert type(s).coefficients_with_rates is not ctcm.NoiseSchedule.coefficients_with_rates
    for ours, ref in zip(values + rates, ref_values + ref_rates, strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
