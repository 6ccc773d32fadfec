"""Continuous-time (tangent) consistency objective by forward-mode AD (Eq. 14)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ctcm.interfaces import expand_like
from ctcm.objective import LossOutput, ObjectiveContext, TimedObjective


def tangent_warmup(step: int, warmup_steps: int) -> float:
    """sCM's tangent warm-up r = min(1, step / H); 1 when H <= 0."""
    return 1.0 if warmup_steps <= 0 else min(1.0, step / warmup_steps)


@dataclass
class TangentObjective(TimedObjective):
    """Gradient of E_t,eps [ f_theta(x_t, t) . stopgrad(g) ] / D with g = df_theta/dt along the path (Eq. 14).

    g is the total time derivative along x_t = alpha(t) x_0 + sigma(t) eps (one JVP through the unwrapped
    model, no grad). The loss is written 0.5 || f - stopgrad(f - g) ||^2 / D: its gradient is
    (df/dtheta)^T g / D, it descends towards df/dt = 0 (the consistency condition), and its value
    0.5 ||g||^2 / D is a readable measure of inconsistency. It is the dt -> 0 limit of the consistency
    objective with ``inv_dt`` weighting, halved (Eq. 15). How it relates to ``scm``: docs/maths.md, Eq. 24.

    Args:
        normalize: replace g by g / (||g|| + norm_c) per sample (sCM's tangent normalisation).
        norm_c: the constant c above.
        warmup_steps: H for the tangent warm-up r = min(1, step / H) (0: off); r scales the ``network``
            part of df/dt (:class:`ctcm.model.TimeDerivative`).
        time: the training-time distribution (default ``{name: lognormal, p_mean: -1.1, p_std: 2.0}``).
    """

    normalize: bool = True
    norm_c: float = 0.1
    warmup_steps: int = 0
    name = "tangent"
    uses_time_derivative = True

    def compute(self, ctx: ObjectiveContext) -> LossOutput:
        g = ctx.time_derivative.df_dt(tangent_warmup(ctx.step, self.warmup_steps))  # no graph (stop-gradient)
        g = g.to(torch.promote_types(g.dtype, torch.float32))  # normalisation and loss in fp32 under autocast
        g_norm = g.flatten(1).norm(dim=1)
        if self.normalize:
            g = g / expand_like(g_norm + self.norm_c, g)
        f = ctx.f.to(g.dtype)
        loss = 0.5 * (f - (f.detach() - g)).pow(2).flatten(1).mean(1).mean()
        return LossOutput(loss, {"tangent_norm": g_norm.mean()})
