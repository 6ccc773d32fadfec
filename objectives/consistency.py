"""Discrete-time consistency objective with a gap curriculum (Eq. 13, 21-22)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ctcm.objective import LossOutput, ObjectiveContext, TimedObjective
from ctcm.time_distributions import Gap, make_gap

from .distances import check_distance, per_sample_distance
from ctcm.errors import UserValueError

WEIGHTINGS = ("none", "inv_dt", "inv_dsigma")


@dataclass
class ConsistencyObjective(TimedObjective):
    """E_t,eps w(t, t') d(f_theta(x_t, t), stopgrad f_theta(x_t', t')) with one eps for both points (Eq. 13).

    t comes from ``time`` and the target time t' from ``gap``: ``uniform`` (a random gap, a fraction
    ``delta_max`` of the time range), ``ect`` (ECT's shrinking mapping, Eq. 21) or ``ict`` (iCT's doubling
    discretisation, Eq. 22); see :mod:`ctcm.time_distributions`. At t' = t_min the target is x_t' itself
    (the boundary condition): pure denoising. The target is computed without gradient from the unwrapped
    model, with the same dropout / weight-drop masks as the online branch.

    Args:
        gap: ``{name: uniform, delta_max: 0.02}`` (default), ``{name: ect, stage_steps: ...}``, ...
        distance: ``l2`` or ``pseudo_huber`` (see :func:`per_sample_distance`).
        weighting: ``none``; ``inv_dt`` = 1 / (t - t') (then the loss / 2 tends to the tangent objective
            as dt -> 0, Eq. 15); ``inv_dsigma`` = 1 / (s(t) - s(t')) in EDM sigma (iCT, ECT).
        huber_c: pseudo-Huber constant (default 0.00054 sqrt(D)).
        time: the training-time distribution (default ``{name: lognormal, p_mean: -1.1, p_std: 2.0}``).
    """

    gap: Any = None
    distance: str = "l2"
    weighting: str = "none"
    huber_c: float | None = None
    name = "consistency"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_distance(self.distance)
        if self.weighting not in WEIGHTINGS:
            raise UserValueError(f"unknown weighting {self.weighting!r}; choose one of {WEIGHTINGS}")
        self._gap: Gap = make_gap(self.gap)

    def target_times(self, ctx: ObjectiveContext) -> Tensor:
        """t' for the batch: the gap applied to ctx.t at ctx.step."""
        return self._gap.checked_target_time(ctx.t, ctx.schedule, ctx.step, ctx.uniform)

    def compute(self, ctx: ObjectiveContext) -> LossOutput:
        t_prev = self.target_times(ctx)
        x_prev, _ = ctx.schedule.noisy(ctx.x0, ctx.noise, t_prev)
        with torch.no_grad():
            target = ctx.net(x_prev, t_prev, check_time=False, **ctx.cond)  # t' checked by the gap
        dist = per_sample_distance(ctx.f, target, self.distance, self.huber_c)
        loss = (self.weight(ctx, t_prev) * dist).mean()
        denoising = (t_prev == ctx.schedule.t_min).to(t_prev.dtype).mean()
        return LossOutput(loss, {"dt_mean": (ctx.t - t_prev).mean(), "denoising_fraction": denoising})

    def weight(self, ctx: ObjectiveContext, t_prev: Tensor) -> Tensor:
        if self.weighting == "none":
            return torch.ones_like(t_prev)
        if self.weighting == "inv_dt":
            gap = ctx.t - t_prev
        else:
            gap = ctx.schedule.edm_sigma(ctx.t) - ctx.schedule.edm_sigma(t_prev)
        # samples with t = t_min have t' = t and contribute 0 to the loss: give them weight 0, not inf
        return torch.where(gap > 0, 1.0 / gap.clamp_min(torch.finfo(gap.dtype).tiny), torch.zeros_like(gap))
