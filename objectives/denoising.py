"""Diffusion (denoising) objective on the consistency model's parameterisation (Eq. 26): the warm start."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ctcm.objective import LossOutput, ObjectiveContext, TimedObjective

EDM_TIME = {"name": "lognormal", "p_mean": -1.2, "p_std": 1.2}


@dataclass
class DenoisingObjective(TimedObjective):
    """E_t,eps || (f_theta(x_t, t) - x_0) / c_out(t) ||^2 / D (Eq. 26): f as a denoiser of x_t.

    Dividing by c_out makes this the unit-weight regression of the backbone output F on its target:
    on ``geometric`` it is EDM's loss lambda(sigma) ||D(x_t) - x_0||^2 (lambda = 1 / c_out^2, with the
    consistency c_out that vanishes at sigma_min instead of EDM's); on ``trigflow`` (c_out = -sigma_d sin t)
    it is TrigFlow's flow-matching loss ||sigma_d F - dx_t/dt||^2 / sigma_d^2. Samples at t = t_min
    (c_out = 0, nothing to learn) get weight 0. The same network then continues as a consistency model.

    Args:
        time: training-time distribution (default EDM's ``{name: lognormal, p_mean: -1.2, p_std: 1.2}``).
    """

    name = "denoising"
    default_time = EDM_TIME

    def compute(self, ctx: ObjectiveContext) -> LossOutput:
        _, c_out, _ = ctx.schedule.coefficients(ctx.t)
        err = (ctx.f - ctx.x0).flatten(1).pow(2).mean(1)
        inv = torch.where(c_out != 0, c_out.pow(-2), torch.zeros_like(c_out))  # 1 / c_out^2, 0 at t_min
        return LossOutput((inv * err).mean(), {"x0_mse": err.detach().mean()})
