"""A user-defined objective, registered and composed in user code.

This is the original design's literal "tangent regulariser" (docs/deviations.md, D1):

    L = || d/dt f(x_t, t) - (x_t' - x_t) / (t' - t) ||^2,

which pulls df/dt towards the velocity of the *noising* path. A consistency function must instead be
constant along the path (df/dt = 0), so ctcm's `tangent` objective does not use this formula. It is kept
here as the demo of writing your own objective:

    python examples/custom_objective.py
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import ctcm
from ctcm.interfaces import expand_like


@ctcm.register_objective("velocity-matching")
@dataclass
class VelocityMatchingObjective(ctcm.Objective):
    """|| df/dt - (x_t' - x_t)/(t' - t) ||^2 with t' = t - delta (the design's formula, for comparison)."""

    delta: float = 1e-3
    name = "velocity_matching"

    def compute(self, ctx: ctcm.ObjectiveContext) -> ctcm.LossOutput:
        s = ctx.schedule
        t_prev = (ctx.t - self.delta * (s.t_max - s.t_min)).clamp(min=s.t_min)
        x_prev, _ = s.noisy(ctx.x0, ctx.noise, t_prev)
        gap = expand_like((ctx.t - t_prev).clamp_min(1e-12), ctx.x0)
        secant = (ctx.x_t - x_prev) / gap
        # grad flows through the tangent itself here (forward-over-reverse), unlike ctcm's `tangent`
        _, df_dt = ctcm.total_derivative(ctx.net, ctx.x_t, ctx.t, ctx.dx_dt)
        return ctcm.LossOutput((df_dt - secant).pow(2).flatten(1).mean(1).mean())


def main() -> None:
    torch.manual_seed(0)
    model = ctcm.build("wfno-cifar", backbone={"width": 16, "n_layers": 2, "modes": 8})
    x0 = torch.rand(8, 3, 32, 32) * 2 - 1
    # compose built-in and user terms in plain Python
    objective = ctcm.create_objective("consistency") + 0.1 * ctcm.create_objective("tangent") \
        + 0.01 * ctcm.create_objective("velocity-matching")
    out = objective(model, x0, step=0)
    out.loss.backward()
    print(objective)
    for key, value in out.logs.items():
        print(f"{key:>34s}  {float(value):.6g}")


if __name__ == "__main__":
    main()
