"""MeanFlow (Geng, Deng, Bai, Kolter, He 2025, arXiv 2505.13447): a flow map trained through the MeanFlow identity
(Eq. 39-40), one stop-gradient JVP per step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ctcm.errors import UserValueError
from ctcm.interfaces import expand_like
from ctcm.model import ConsistencyModel
from ctcm.objective import LossOutput, ObjectiveContext, TimedObjective
from ctcm.schedules import LinearSchedule


def meanflow_target(v: Tensor, t: Tensor, r: Tensor, du_dt: Tensor) -> Tensor:
    """u_tgt = v - (t - r) du/dt (Eq. 39), du/dt the total derivative of u(z_t, r, t) along (dz, dr, dt) = (v, 0, 1).
    Shapes: v, du_dt (B, C, H, W); t, r (B,)."""
    return v - expand_like(t - r, v) * du_dt


def adaptive_weighted_mean(err: Tensor, p: float, c: float) -> Tensor:
    """mean_i sg(1 / (err_i + c)^p) err_i over the batch (Eq. 40); p = 0: the plain mean. err (B,) -> scalar."""
    return (err / (err.detach() + c).pow(p)).mean()


@dataclass
class MeanFlowObjective(TimedObjective):
    """MeanFlow's loss on a flow map X(z, t, r) = z - (t - r) u_theta(z, r, t) on the linear schedule (Eq. 35, 39-40):

        L = E sg(w) || u_theta(z_t, r, t) - sg(u_tgt) ||^2,   u_tgt = v - (t - r) (v . d_z u_theta + d_t u_theta),

    z_t = (1 - t) x_0 + t eps, v = eps - x_0, the squared norm summed over the image (not averaged), and the
    adaptive weight w = 1 / (||.||^2 + c)^p. The bracket is one JVP along (v, 0, 1) (``ctx.time_derivative``,
    computed in the differentiable forward's pass without a graph); where r = t, u_tgt = v: flow matching.

    Args:
        norm_p: p of the adaptive weight (0.75 on CIFAR-10; 0: the plain squared error).
        norm_eps: c of the adaptive weight (1e-3).
        time: the (t, r) distribution (default ``{name: meanflow}``: the paper's CIFAR-10 sampler, Eq. 37).
    """

    norm_p: float = 0.75
    norm_eps: float = 1e-3
    name = "meanflow"
    uses_time_derivative = True
    default_time: ClassVar[dict[str, Any]] = {"name": "meanflow"}

    def __post_init__(self) -> None:
        if self.norm_p < 0 or self.norm_eps <= 0:
            raise UserValueError(f"meanflow: need norm_p >= 0 and norm_eps > 0, got {self.norm_p}, {self.norm_eps}")
        super().__post_init__()

    def check_model(self, model: ConsistencyModel) -> None:
        if not isinstance(model.schedule, LinearSchedule):
            raise UserValueError(f"meanflow is defined on the linear path; got the {type(model.schedule).__name__}: "
                                 f"set model.schedule={{name: linear}}")
        if not model.flow_map:
            raise UserValueError("meanflow trains a flow map X(x, t, r): give the backbone a second time input with "
                                 "model.backbone.time_inputs=2")

    def compute(self, ctx: ObjectiveContext) -> LossOutput:
        if ctx.r is None:
            raise UserValueError("meanflow needs (t, r) pairs: its time distribution must be a "
                                 "ctcm.TimePairDistribution such as {name: meanflow}")
        d = ctx.time_derivative  # u = d.raw and du/dt = d.d_raw, no graph
        u = ctx.raw
        dtype = torch.promote_types(u.dtype, torch.float32)  # the target and the loss in fp32 under autocast
        target = meanflow_target(ctx.dx_dt.to(dtype), ctx.t.to(dtype), ctx.r.to(dtype), d.d_raw.to(dtype))
        err = (u.to(dtype) - target).pow(2).flatten(1).sum(1)
        loss = adaptive_weighted_mean(err, self.norm_p, self.norm_eps)
        logs = {"flow_matching_fraction": (ctx.r == ctx.t).float().mean(),
                "dudt_norm": d.d_raw.flatten(1).norm(dim=1).mean()}
        return LossOutput(loss, logs, explain=nonfinite_cause(u, d.d_raw, ctx.t - ctx.r))


def nonfinite_cause(u: Tensor, du_dt: Tensor, gap: Tensor) -> Callable[[], str]:
    """What made a MeanFlow loss non-finite, for the trainer's guard: the prediction u, or (u finite) its JVP
    du/dt, with the samples' largest t - r. Evaluated only when the loss is non-finite."""

    def explain() -> str:
        bad_u = ~torch.isfinite(u.detach()).flatten(1).all(1)
        bad_d = ~torch.isfinite(du_dt).flatten(1).all(1)
        if bool(bad_u.any()):
            return (f"the network's output u is non-finite for {int(bad_u.sum())} of {len(u)} samples (the weights "
                    f"or activations overflowed)")
        if bool(bad_d.any()):
            return (f"the JVP du/dt is non-finite for {int(bad_d.sum())} of {len(u)} samples while u is finite "
                    f"(the tangent diverged; largest t - r there {float(gap[bad_d].max()):.3g}): lower optim.lr "
                    f"or the time embedding's max_freq")
        return "u and du/dt are finite: the squared error or the adaptive weight overflowed"

    return explain
