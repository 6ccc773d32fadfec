"""Reference noise schedules: ``geometric`` (EDM-style variance exploding), ``trigflow`` (Lu & Song 2024) and
``linear`` (rectified flow; flow matching, MeanFlow).

Equation numbers refer to ``docs/maths.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .interfaces import NoiseSchedule
from .registry import register_schedule
from .errors import UserValueError


@register_schedule("geometric")
@dataclass
class GeometricSchedule(NoiseSchedule):
    """Variance-exploding path with geometric sigma (Eq. 4): alpha(t) = 1,
    sigma(t) = sigma_min (sigma_max / sigma_min)^t on t in [0, 1].

    Parameterisation: EDM's consistency coefficients (Eq. 5), exact at t = 0.
    Conditioning: c_noise = ln(sigma) / 4 (Eq. 6), whose time derivative ln(sigma_max/sigma_min)/4 is
    a constant (~2.65), so the tangent of the time embedding stays bounded.
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    sigma_mid: float = 0.821  # two-step sampler's intermediate sigma (ECT)

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max:
            raise UserValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        self.t_min, self.t_max = 0.0, 1.0
        self.log_ratio = math.log(self.sigma_max / self.sigma_min)
        self.default_t_mid = self.t_of_sigma(self.sigma_mid)

    def t_of_sigma(self, sigma: float) -> float:
        """Inverse of Eq. 4."""
        return math.log(sigma / self.sigma_min) / self.log_ratio

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.exp(self.log_ratio * t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return self.log_ratio * self.sigma(t)

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # sigma - sigma_min written as sigma_min * expm1(.) so that it is exactly 0 at t = 0
        excess = self.sigma_min * torch.expm1(self.log_ratio * t)
        sigma, sd2 = self.sigma(t), self.sigma_data**2
        c_skip = sd2 / (excess**2 + sd2)
        c_out = self.sigma_data * excess / torch.sqrt(sigma**2 + sd2)
        c_in = 1.0 / torch.sqrt(sigma**2 + sd2)
        return c_skip, c_out, c_in

    def c_noise(self, t: Tensor) -> Tensor:
        return 0.25 * torch.log(self.sigma(t))

    def coefficients_with_rates(self, t: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """Eq. 5 and its closed-form d/dt (Eq. 31): with e = sigma - sigma_min and e' = sigma' = L sigma,
        L = ln(sigma_max / sigma_min): c_skip' = -2 e e' c_skip^2 / sigma_d^2, c_in' = -sigma sigma' c_in^3,
        c_out' = sigma_d (e' c_in + e c_in'), c_noise' = L / 4."""
        c_skip, c_out, c_in = self.coefficients(t)
        sigma = self.sigma(t)
        excess, rate = self.sigma_min * torch.expm1(self.log_ratio * t), self.log_ratio * sigma
        d_skip = -2.0 * excess * rate * c_skip**2 / self.sigma_data**2
        d_in = -sigma * rate * c_in**3
        d_out = self.sigma_data * (rate * c_in + excess * d_in)
        d_noise = torch.full_like(t, 0.25 * self.log_ratio)
        return (c_skip, c_out, c_in, 0.25 * torch.log(sigma)), (d_skip, d_out, d_in, d_noise)

    def t_of_edm_sigma(self, s: Tensor) -> Tensor:
        return (torch.log(s / self.sigma_min) / self.log_ratio).clamp(self.t_min, self.t_max)


@register_schedule("trigflow")
@dataclass
class TrigFlowSchedule(NoiseSchedule):
    """TrigFlow (Lu & Song 2024, Eq. 7): x_t = cos(t) x_0 + sin(t) z, z ~ N(0, sigma_d^2 I), so
    alpha = cos t and sigma = sigma_d sin t on t in [0, t_max], t_max = arctan(sigma_max / sigma_d).

    Parameterisation: f = cos(t) x - sin(t) sigma_d F(x / sigma_d, c_noise(t)), i.e. c_skip = cos t,
    c_out = -sigma_d sin t, c_in = 1 / sigma_d, exact at t = 0. Conditioning: c_noise = t.
    EDM sigma: s(t) = sigma_d tan t, so t(s) = arctan(s / sigma_d) (Eq. 8).
    """

    sigma_data: float = 0.5
    sigma_max: float = 80.0
    t_mid: float = 1.1

    def __post_init__(self) -> None:
        self.t_min = 0.0
        self.t_max = math.atan(self.sigma_max / self.sigma_data)
        self.default_t_mid = self.t_mid

    def alpha(self, t: Tensor) -> Tensor:
        return torch.cos(t)

    def d_alpha(self, t: Tensor) -> Tensor:
        return -torch.sin(t)

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_data * torch.sin(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return self.sigma_data * torch.cos(t)

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return torch.cos(t), -self.sigma_data * torch.sin(t), torch.full_like(t, 1.0 / self.sigma_data)

    def c_noise(self, t: Tensor) -> Tensor:
        return t

    def coefficients_with_rates(self, t: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """Eq. 7 and its d/dt (Eq. 31): (cos t, -sigma_d sin t, 1/sigma_d, t) -> (-sin t, -sigma_d cos t, 0, 1)."""
        cos, sin = torch.cos(t), torch.sin(t)
        values = (cos, -self.sigma_data * sin, torch.full_like(t, 1.0 / self.sigma_data), t)
        return values, (-sin, -self.sigma_data * cos, torch.zeros_like(t), torch.ones_like(t))

    def edm_sigma(self, t: Tensor) -> Tensor:
        return self.sigma_data * torch.tan(t)

    def t_of_edm_sigma(self, s: Tensor) -> Tensor:
        return torch.atan(s / self.sigma_data).clamp(self.t_min, self.t_max)


@register_schedule("linear")
@dataclass
class LinearSchedule(NoiseSchedule):
    """The linear (rectified-flow) path of flow matching and MeanFlow (Eq. 35): x_t = (1 - t) x_0 + t eps on
    t in [0, 1], so dx_t/dt = eps - x_0 and the prior at t = 1 is N(0, I).

    Consistency parameterisation: f = x - t F(x, t) (c_skip = 1, c_out = -t, c_in = 1, c_noise = t), F a
    velocity, exact at t = 0. Flow map (a backbone with two time inputs): X(x, t, r) = x - (t - r) u(x, t, t - r),
    u = F the average velocity over [r, t] (MeanFlow's), exact at r = t and equal to f at r = 0.
    EDM sigma: s(t) = t / (1 - t), t(s) = s / (1 + s), so ``lognormal`` in s is logit-normal in t (Eq. 8, 34).
    """

    sigma_data: float = 0.5
    t_mid: float = 0.5  # two-step sampler's intermediate time (MeanFlow's two-step grid 1 -> 0.5 -> 0)

    def __post_init__(self) -> None:
        if not 0.0 < self.t_mid < 1.0:
            raise UserValueError(f"linear: t_mid must lie in (0, 1), got {self.t_mid}")
        self.t_min, self.t_max = 0.0, 1.0
        self.default_t_mid = self.t_mid

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - t

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.full_like(t, -1.0)

    def sigma(self, t: Tensor) -> Tensor:
        return t

    def d_sigma(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return torch.ones_like(t), -t, torch.ones_like(t)

    def c_noise(self, t: Tensor) -> Tensor:
        return t

    def coefficients_with_rates(self, t: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """(1, -t, 1, t)' = (0, -1, 0, 1) (Eq. 31)."""
        one, zero = torch.ones_like(t), torch.zeros_like(t)
        return (one, -t, one, t), (zero, -one, zero, one)

    def flow_map_coefficients(self, t: Tensor, r: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(1, r - t, 1, (t, t - r)) (Eq. 35): c_out is exactly 0 at r = t and -t at r = 0."""
        one = torch.ones_like(t)
        return one, r - t, one, self.time_pair(t, r)

    def flow_map_coefficients_with_rates(self, t: Tensor, r: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """d/dt at fixed r (Eq. 36): (0, -1, 0, (1, 1)); the pair's second entry t - r moves with t."""
        one, zero = torch.ones_like(t), torch.zeros_like(t)
        return self.flow_map_coefficients(t, r), (zero, -one, zero, torch.stack([one, one], dim=1))

    def edm_sigma(self, t: Tensor) -> Tensor:
        return t / (1.0 - t)

    def t_of_edm_sigma(self, s: Tensor) -> Tensor:
        return (1.0 / (1.0 + 1.0 / s)).clamp(self.t_min, self.t_max)
