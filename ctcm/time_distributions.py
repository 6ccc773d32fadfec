"""Training-time distributions over t and consistency gaps t -> t' (Eq. 8, 21-23), owned by objectives.

A *time distribution* draws the training times t of a batch; a *gap* maps each t to the earlier time t'
whose prediction is the consistency target. Both are small registered components (``ctcm.time_distributions``
and ``ctcm.gaps`` entry-point groups), configured inside an objective's config, so a new curriculum is a
small class and never a new noise schedule.

Both work in the schedule-independent *EDM sigma* s(t) = sigma(t) / alpha(t) (noise-to-signal ratio in data
units; :meth:`ctcm.NoiseSchedule.edm_sigma`), which is how the papers state them: the same ``lognormal``
parameters mean the same noise levels on the geometric and the TrigFlow path.
"""

from __future__ import annotations

import math

import abc
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .interfaces import NoiseSchedule
from .registry import GAPS, TIME_DISTRIBUTIONS, register_gap, register_time_distribution
from .errors import UserValueError


def check_first_output(owner: object, t: Tensor, schedule: NoiseSchedule, what: str) -> None:
    """Check that ``t`` lies in the schedule's range on ``owner``'s first output only (one device sync per
    run, not per step): this is where training times enter, and the model skips its own check for them."""
    if getattr(owner, "_range_checked", False):
        return
    bad = schedule.first_time_outside(t)
    if bad is not None:
        raise UserValueError(f"{what} {type(owner).__name__} gave t = {bad!r} outside the schedule's range "
                             f"[t_min, t_max] = [{schedule.t_min:.6g}, {schedule.t_max:.6g}] "
                             f"({type(schedule).__name__}); it must return finite times in that range")
    object.__setattr__(owner, "_range_checked", True)


class TimeDistribution(abc.ABC):
    """Draws training times t in [t_min, t_max] for a schedule."""

    @abc.abstractmethod
    def sample(self, n: int, schedule: NoiseSchedule, *, generator: torch.Generator | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """n times, shape (n,)."""

    def draw(self, n: int, schedule: NoiseSchedule, *, generator: torch.Generator | None = None,
             device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """:meth:`sample`, its range checked on this distribution's first draw (:func:`check_first_output`)."""
        t = self.sample(n, schedule, generator=generator, device=device, dtype=dtype)
        check_first_output(self, t, schedule, "time distribution")
        return t



@register_time_distribution("lognormal")
@dataclass
class LogNormal(TimeDistribution):
    """ln s ~ N(p_mean, p_std^2) on the EDM sigma s, t = t(s) clipped to the range (Eq. 8).

    Defaults are ECT's / iCT's (-1.1, 2.0); sCM uses (-1.0, 1.4), EDM's diffusion training (-1.2, 1.2)."""

    p_mean: float = -1.1
    p_std: float = 2.0

    def __post_init__(self) -> None:
        if not self.p_std > 0:
            raise UserValueError(f"lognormal: p_std must be > 0, got {self.p_std}")

    def sample(self, n, schedule, *, generator=None, device=None, dtype=torch.float32) -> Tensor:
        z = torch.randn(n, generator=generator, device=device, dtype=dtype)
        t = schedule.t_of_edm_sigma(torch.exp(self.p_mean + self.p_std * z))
        return t.clamp(schedule.t_min, schedule.t_max)


@register_time_distribution("uniform")
@dataclass
class Uniform(TimeDistribution):
    """t ~ U[t_min, t_max]."""


    def sample(self, n, schedule, *, generator=None, device=None, dtype=torch.float32) -> Tensor:
        u = torch.rand(n, generator=generator, device=device, dtype=dtype)
        return schedule.t_min + u * (schedule.t_max - schedule.t_min)


class TimePairDistribution(TimeDistribution):
    """Draws pairs (t, r) with t_min <= r <= t <= t_max, for a flow map X(x_t, t, r) (Eq. 35, 37).

    :meth:`sample` is the pair's t, so the pair serves where one time is asked for; the objective context
    draws both at once (``ctx.t``, ``ctx.r``)."""

    @abc.abstractmethod
    def sample_pair(self, n: int, schedule: NoiseSchedule, *, generator: torch.Generator | None = None,
                    device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """(t, r), each (n,), r <= t."""

    def sample(self, n, schedule, *, generator=None, device=None, dtype=torch.float32) -> Tensor:
        return self.sample_pair(n, schedule, generator=generator, device=device, dtype=dtype)[0]

    def draw_pair(self, n: int, schedule: NoiseSchedule, *, generator: torch.Generator | None = None,
                  device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """:meth:`sample_pair`, both times' range checked on the first draw (:func:`check_first_output`)."""
        t, r = self.sample_pair(n, schedule, generator=generator, device=device, dtype=dtype)
        check_first_output(self, torch.cat([t, r]), schedule, "time distribution")
        return t, r


@register_time_distribution("meanflow")
@dataclass
class MeanFlowTimes(TimePairDistribution):
    """MeanFlow's (t, r) sampler (Geng et al. 2025; Eq. 37): two independent draws ln s ~ N(p_mean, p_std^2) on the
    EDM sigma (on the linear schedule t = sigmoid(ln s), the paper's logit-normal), then r = t for a fraction
    1 - ``ratio`` of the batch (there the loss is flow matching), and r <= t by

    * ``order: sort`` (the paper's, py-meanflow's ``v0``): (t, r) <- (max, min), then r <- t where u < 1 - ratio;
    * ``order: mask`` (py-meanflow's ``v1``): r <- t where u < 1 - ratio, then r <- min(t, r).

    Defaults: the paper's CIFAR-10 setting (``cifar10_v0.sh``): both (-2, 2), ratio 0.75. Draw order per call:
    n normals for t, n for r, n uniforms u (the public code's).
    """

    p_mean_t: float = -2.0
    p_std_t: float = 2.0
    p_mean_r: float = -2.0
    p_std_r: float = 2.0
    ratio: float = 0.75
    order: str = "sort"

    def __post_init__(self) -> None:
        if not (self.p_std_t > 0 and self.p_std_r > 0):
            raise UserValueError(f"meanflow times: p_std_t and p_std_r must be > 0, got {self.p_std_t}, {self.p_std_r}")
        if not 0.0 <= self.ratio <= 1.0:
            raise UserValueError(f"meanflow times: ratio (the fraction with r != t) must lie in [0, 1], got "
                                 f"{self.ratio}")
        if self.order not in ("sort", "mask"):
            raise UserValueError(f"meanflow times: order must be 'sort' (paper, v0) or 'mask' (v1), got {self.order!r}")

    def sample_pair(self, n, schedule, *, generator=None, device=None, dtype=torch.float32) -> tuple[Tensor, Tensor]:
        def draw(mean: float, std: float) -> Tensor:
            z = torch.randn(n, generator=generator, device=device, dtype=dtype)
            return schedule.t_of_edm_sigma(torch.exp(mean + std * z)).clamp(schedule.t_min, schedule.t_max)

        t, r = draw(self.p_mean_t, self.p_std_t), draw(self.p_mean_r, self.p_std_r)
        same = torch.rand(n, generator=generator, device=device, dtype=dtype) < 1.0 - self.ratio
        if self.order == "sort":
            t, r = torch.maximum(t, r), torch.minimum(t, r)
            return t, torch.where(same, t, r)
        return t, torch.minimum(t, torch.where(same, t, r))


class Gap(abc.ABC):
    """The consistency target's time t' < t as a function of t and the training step (a curriculum)."""

    @abc.abstractmethod
    def target_time(self, t: Tensor, schedule: NoiseSchedule, step: int, u: Tensor) -> Tensor:
        """t' (same shape as t) in [t_min, t]; ``u`` holds U[0, 1) draws shaped like t for random gaps."""

    def checked_target_time(self, t: Tensor, schedule: NoiseSchedule, step: int, u: Tensor) -> Tensor:
        """:meth:`target_time`, its range checked on this gap's first call (:func:`check_first_output`)."""
        t_prev = self.target_time(t, schedule, step, u)
        check_first_output(self, t_prev, schedule, "gap")
        return t_prev



@register_gap("uniform")
@dataclass
class UniformGap(Gap):
    """t' = max(t - dt, t_min), dt ~ U[0, delta_max (t_max - t_min)] (Eq. 13): a fixed random gap in t."""

    delta_max: float = 0.02

    def __post_init__(self) -> None:
        if not 0 < self.delta_max <= 1:
            raise UserValueError(f"delta_max is a fraction of the time range, in (0, 1]; got {self.delta_max}")

    def target_time(self, t, schedule, step, u) -> Tensor:
        dt = u * self.delta_max * (schedule.t_max - schedule.t_min)
        return (t - dt).clamp(min=schedule.t_min)


def _from_edm_sigma(s_prev: Tensor, schedule: NoiseSchedule, t: Tensor) -> Tensor:
    """t' for target EDM sigmas ``s_prev``; at or below s(t_min) exactly t_min (the denoising target)."""
    s_min = schedule.edm_sigma(torch.full_like(t, schedule.t_min))
    t_prev = schedule.t_of_edm_sigma(torch.maximum(s_prev, s_min))
    return torch.where(s_prev <= s_min, torch.full_like(t, schedule.t_min), torch.minimum(t_prev, t))


@register_gap("ect")
@dataclass
class ECTGap(Gap):
    """ECT's mapping (Geng et al. 2024; Eq. 21): with s = s(t) the EDM sigma and stage k = step // stage_steps,

        s' = s (1 - n(s) / q^(k+1)),   n(s) = 1 + k_sig * sigmoid(-b s),

    and t' = t_min where s' <= s(t_min). Stage 0 sends most t to the pure denoising target (t' = t_min);
    each stage divides the relative gap by q. ``stage_steps`` must be set by the run's budget (a few
    stages per run); the papers' 25k-iteration stages belong to a 400k-iteration budget.
    """

    stage_steps: int = 25_000
    q: float = 2.0
    k: float = 8.0
    b: float = 1.0

    def __post_init__(self) -> None:
        if self.stage_steps <= 0 or self.q <= 1:
            raise UserValueError(f"ect gap: need stage_steps > 0 and q > 1, got {self.stage_steps}, {self.q}")

    def stage(self, step: int) -> int:
        return int(step) // self.stage_steps

    def target_time(self, t, schedule, step, u) -> Tensor:
        s = schedule.edm_sigma(t)
        ratio = 1.0 - (1.0 + self.k * torch.sigmoid(-self.b * s)) / self.q ** (self.stage(step) + 1)
        return _from_edm_sigma(s * ratio, schedule, t)


ICT_SIGMA_MAX = 80.0  # iCT's (and EDM's) largest noise level


@register_gap("ict")
@dataclass
class ICTGap(Gap):
    """iCT's discretisation doubling (Song & Dhariwal 2023; Eq. 22) for continuous t: N(k) =
    min(s0 2^(step // doubling_steps), s1) + 1 Karras sigmas s_i = (s_min^(1/rho) + i/(N-1) (s_max^(1/rho) -
    s_min^(1/rho)))^rho span the schedule's range, and t' is the time of the grid sigma just below s(t)
    (the neighbouring discretisation step). iCT draws the pair (s_i, s_i+1) from the grid; here t keeps
    its own distribution and only the gap follows the grid (docs/deviations.md, D9). A schedule whose t_max is
    pure noise (``linear``: s(t_max) = inf) gets iCT's own s_max = 80 as the top of the grid.
    """

    s0: int = 10
    s1: int = 1280
    doubling_steps: int = 25_000
    rho: float = 7.0

    def __post_init__(self) -> None:
        if not 1 <= self.s0 <= self.s1 or self.doubling_steps <= 0:
            raise UserValueError(f"ict gap: need 1 <= s0 <= s1 and doubling_steps > 0, got {self}")

    def num_steps(self, step: int) -> int:
        return min(self.s0 * 2 ** (int(step) // self.doubling_steps), self.s1) + 1

    def target_time(self, t, schedule, step, u) -> Tensor:
        ends = schedule.edm_sigma(torch.tensor([schedule.t_min, schedule.t_max], dtype=torch.float64))
        top = float(ends[1]) if math.isfinite(float(ends[1])) else ICT_SIGMA_MAX
        lo, hi = float(ends[0]) ** (1 / self.rho), top ** (1 / self.rho)
        n = self.num_steps(step)
        s = schedule.edm_sigma(t).double()
        # index of the grid point just below s: i = ceil((s^(1/rho) - lo) / (hi - lo) (N - 1)) - 1
        pos = (s.clamp(float(ends[0]), top) ** (1 / self.rho) - lo) / (hi - lo) * (n - 1)
        i = (torch.ceil(pos - 1e-9) - 1).clamp(min=0)
        s_prev = (lo + i / (n - 1) * (hi - lo)) ** self.rho
        s_prev = torch.where(i <= 0, torch.zeros_like(s_prev), s_prev)  # the first grid point is t_min
        return _from_edm_sigma(s_prev.to(t.dtype), schedule, t)


def make(registry: Any, spec: Any, default: dict[str, Any]) -> Any:
    """A component from ``spec``: an instance, a name, ``{name: ..., **kwargs}`` or None (``default``)."""
    if spec is None:
        spec = default
    if isinstance(spec, (TimeDistribution, Gap)):
        return spec
    if isinstance(spec, str):
        return registry.create(spec)
    if isinstance(spec, dict) and "name" in spec:
        kwargs = dict(spec)
        return registry.create(kwargs.pop("name"), **kwargs)
    raise UserValueError(f"expected a {registry.kind} name or {{name: ..., ...}} mapping, got {spec!r}")


def make_time_distribution(spec: Any, default: dict[str, Any] | None = None) -> TimeDistribution:
    return make(TIME_DISTRIBUTIONS, spec, default or {"name": "lognormal"})


def make_gap(spec: Any, default: dict[str, Any] | None = None) -> Gap:
    return make(GAPS, spec, default or {"name": "uniform"})


__all__ = ["ECTGap", "Gap", "ICTGap", "LogNormal", "MeanFlowTimes", "TimeDistribution", "TimePairDistribution",
           "Uniform", "UniformGap", "make_gap", "make_time_distribution"]
