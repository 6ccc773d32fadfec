"""MeanFlow (Geng, Deng, Bai, Kolter, He 2025, arXiv 2505.13447): a flow map trained through the MeanFlow identity
(Eq. 39-40), one stop-gradient JVP per step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, cast

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


def guided_velocity(ctx: ObjectiveContext, omega: float, kappa: float, interval: tuple[float, float]) -> Tensor:
    """MeanFlow's training-time guidance (Eq. 41): v~ = omega v + kappa u(z_t, t, t | y) + (1 - omega - kappa)
    u(z_t, t, t | null), the network's instantaneous velocities without gradient, for the samples with a label
    (not the null class) and t in ``interval``; elsewhere v~ = v. Unconditional models and batches: v.
    Shapes: (B, C, H, W)."""
    v, y = ctx.dx_dt, ctx.cond.get("y")
    if y is None or (omega == 1.0 and kappa == 0.0):
        return v
    net = cast("ConsistencyModel", ctx.net)
    with torch.no_grad():  # u(z, t, t) is the flow map's instantaneous velocity (Eq. 35 at r = t)
        def velocity(cond: dict[str, Tensor]) -> Tensor:
            return net(ctx.x_t, ctx.t, ctx.t, return_raw=True, check_time=False, **cond)[1]

        guided = omega * v + (1.0 - omega - kappa) * velocity(ctx.null_cond())
        if kappa:
            guided = guided + kappa * velocity(ctx.cond)
        apply = (y != net.null_class) & (ctx.t >= interval[0]) & (ctx.t <= interval[1])
        return torch.where(expand_like(apply, v), guided.to(v.dtype), v)


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

    With guidance (a class-conditional model, Eq. 41) v is replaced by the guided velocity v~ of
    :func:`guided_velocity` in the target and in the JVP's direction, (v~, 0, 1).

    Args:
        norm_p: p of the adaptive weight (0.75 on CIFAR-10; 0: the plain squared error).
        norm_eps: c of the adaptive weight (1e-3).
        time: the (t, r) distribution (default ``{name: meanflow}``: the paper's CIFAR-10 sampler, Eq. 37).
        guidance: omega of Eq. 41 (1: none, the default; the paper's CIFAR-10 result is unconditional).
        guidance_mix: kappa of Eq. 41 (0: the paper's Eq. 16; its appendix mixes in the conditional velocity,
            the effective scale then omega / (1 - kappa)).
        guidance_interval: [t_lo, t_hi], the times where guidance applies (default everywhere).
    """

    norm_p: float = 0.75
    norm_eps: float = 1e-3
    guidance: float = 1.0
    guidance_mix: float = 0.0
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    name = "meanflow"
    uses_time_derivative = True
    default_time: ClassVar[dict[str, Any]] = {"name": "meanflow"}

    def __post_init__(self) -> None:
        if self.norm_p < 0 or self.norm_eps <= 0:
            raise UserValueError(f"meanflow: need norm_p >= 0 and norm_eps > 0, got {self.norm_p}, {self.norm_eps}")
        lo, hi = (float(v) for v in self.guidance_interval)
        if not 0.0 <= lo <= hi <= 1.0 or self.guidance_mix < 0 or self.guidance_mix >= 1:
            raise UserValueError(f"meanflow: need 0 <= guidance_interval[0] <= [1] <= 1 and 0 <= guidance_mix < 1, "
                                 f"got {list(self.guidance_interval)} and {self.guidance_mix}")
        self.guidance_interval = (lo, hi)
        super().__post_init__()

    def check_model(self, model: ConsistencyModel) -> None:
        if not isinstance(model.schedule, LinearSchedule):
            raise UserValueError(f"meanflow is defined on the linear path; got the {type(model.schedule).__name__}: "
                                 f"set model.schedule={{name: linear}}")
        if not model.flow_map:
            raise UserValueError("meanflow trains a flow map X(x, t, r): give the backbone a second time input with "
                                 "model.backbone.time_inputs=2")
        if (self.guidance != 1.0 or self.guidance_mix) and not model.num_classes:
            raise UserValueError("meanflow guidance needs a class-conditional model (model.num_classes > 0, "
                                 "data.label_dropout > 0 for the null class): drop guidance or condition the model")

    def compute(self, ctx: ObjectiveContext) -> LossOutput:
        if ctx.r is None:
            raise UserValueError("meanflow needs (t, r) pairs: its time distribution must be a "
                                 "ctcm.TimePairDistribution such as {name: meanflow}")
        ctx.tangent_direction = v = guided_velocity(ctx, self.guidance, self.guidance_mix, self.guidance_interval)
        d = ctx.time_derivative  # u = d.raw and du/dt = d.d_raw along (v, 0, 1), no graph
        u = ctx.raw
        dtype = torch.promote_types(u.dtype, torch.float32)  # the target and the loss in fp32 under autocast
        target = meanflow_target(v.to(dtype), ctx.t.to(dtype), ctx.r.to(dtype), d.d_raw.to(dtype))
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
