"""Discrete-time consistency objective (Eq. 13)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ctcm.objective import LossOutput, Objective, ObjectiveContext

from .distances import check_distance, per_sample_distance

WEIGHTINGS = ("none", "inv_dt", "inv_dsigma")


@dataclass
class ConsistencyObjective(Objective):
    """E_t,eps w(t, t') d(f_theta(x_t, t), stopgrad f_theta(x_t', t')) with one eps for both points (Eq. 13).

    t' = max(t - dt, t_min), dt ~ U[0, delta_max (t_max - t_min)]: ``delta_max`` is a fraction of the
    schedule's time range, so one value fits every schedule. At t' = t_min the target is x_t' itself
    (the boundary condition). The target is computed without gradient from the unwrapped model, with the
    same weight-drop mask as the online branch.

    Args:
        delta_max: largest dt as a fraction of the time range.
        distance: ``l2`` or ``pseudo_huber`` (see :func:`per_sample_distance`).
        weighting: ``none``; ``inv_dt`` = 1 / (t - t') (then the loss / 2 tends to the tangent objective
            as dt -> 0, Eq. 15); ``inv_dsigma`` = 1 / (sigma(t) - sigma(t')) (iCT).
        huber_c: pseudo-Huber constant (default 0.00054 sqrt(D)).
    """

    delta_max: float = 0.02
    distance: str = "l2"
    weighting: str = "none"
    huber_c: float | None = None
    name = "consistency"

    def __post_init__(self) -> None:
        check_distance(self.distance)
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {self.weighting!r}; choose one of {WEIGHTINGS}")
        if not 0 < self.delta_max <= 1:
            raise ValueError(f"delta_max is a fraction of the time range, in (0, 1]; got {self.delta_max}")

    def target_times(self, ctx: ObjectiveContext) -> Tensor:
        sched = ctx.schedule
        dt = ctx.rand(ctx.x0.shape[0]) * self.delta_max * (sched.t_max - sched.t_min)
        return (ctx.t - dt).clamp(min=sched.t_min)

    def compute(self, ctx: ObjectiveContext) -> LossOutput:
        t_prev = self.target_times(ctx)
        x_prev, _ = ctx.schedule.noisy(ctx.x0, ctx.noise, t_prev)
        with torch.no_grad():
            target = ctx.net(x_prev, t_prev, **ctx.cond)
        dist = per_sample_distance(ctx.f, target, self.distance, self.huber_c)
        weight = self.weight(ctx, t_prev)
        loss = (weight * dist).mean()
        return LossOutput(loss, {"dt_mean": float((ctx.t - t_prev).mean())})

    def weight(self, ctx: ObjectiveContext, t_prev: Tensor) -> Tensor:
        if self.weighting == "none":
            return torch.ones_like(t_prev)
        if self.weighting == "inv_dt":
            gap = ctx.t - t_prev
        else:
            gap = ctx.schedule.sigma(ctx.t) - ctx.schedule.sigma(t_prev)
        # samples with t = t_min have t' = t and contribute 0 to the loss: give them weight 0, not inf
        return torch.where(gap > 0, 1.0 / gap.clamp_min(torch.finfo(gap.dtype).tiny), torch.zeros_like(gap))
