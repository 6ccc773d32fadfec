"""sCM's continuous-time consistency loss on TrigFlow (Lu & Song 2024, Algorithm 1; Eq. 24-25)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ctcm.interfaces import expand_like
from ctcm.objective import LossOutput, ObjectiveContext, TimedObjective
from ctcm.schedules import TrigFlowSchedule

from .tangent import tangent_warmup
from ctcm.errors import UserValueError

if TYPE_CHECKING:
    from ctcm.model import ConsistencyModel

SCM_TIME = {"name": "lognormal", "p_mean": -1.0, "p_std": 1.4}


class AdaptiveWeight(nn.Module):
    """w_phi(t): a small MLP on Fourier features of t (Eq. 25). Its last layer starts at zero, so w = 0.

    Features cos(f_k t), sin(f_k t) with fixed frequencies f_k = 2^(k / 2), k = 0..n_freqs-1 (low
    frequencies: t lies in [0, pi/2]). Shapes: t (B,) -> (B,).
    """

    def __init__(self, n_freqs: int = 16, hidden: int = 128) -> None:
        super().__init__()
        self.register_buffer("freqs", 2.0 ** (torch.arange(n_freqs, dtype=torch.float32) / 2), persistent=False)
        self.net = nn.Sequential(nn.Linear(2 * n_freqs, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, t: Tensor) -> Tensor:
        angles = t[:, None].to(self.freqs.dtype) * self.freqs
        return self.net(torch.cat([angles.cos(), angles.sin()], dim=1)).squeeze(1).to(t.dtype)


@dataclass
class SCMObjective(TimedObjective):
    """sCM's loss as published (Algorithm 1), for a model on the ``trigflow`` schedule:

        g = -cos^2 t (sigma_d F^- - dx_t/dt) - r cos t sin t (x_t + sigma_d dF^-/dt),   g <- g / (||g|| + c),
        L = E_t [ w_prior(t) e^{-w_phi(t)} / D ||F_theta - F^- - g||^2 + w_phi(t) ]          (Eq. 24-25)

    F^- = stopgrad F_theta(x_t / sigma_d, t) and dF^-/dt its total time derivative (one JVP, no grad),
    r = min(1, step / warmup_steps), w_prior = 1 / (sigma_d tan t) when ``prior_weighting``, w_phi the learned
    :class:`AdaptiveWeight` when ``adaptive`` (its parameters are trained with the model). Without adaptive
    weighting the loss is the batch mean of w_prior times the per-sample mean of squares.

    Args:
        warmup_steps: H of the tangent warm-up (0: off).
        normalize, norm_c: the tangent normalisation g / (||g|| + c) (||.|| the per-sample L2 norm).
        prior_weighting: multiply by 1 / (sigma_d tan t).
        adaptive: learn w_phi(t); ``adaptive_freqs`` / ``adaptive_hidden`` size its MLP.
        time: training-time distribution (default sCM's ``{name: lognormal, p_mean: -1.0, p_std: 1.4}``).
    """

    warmup_steps: int = 10_000
    normalize: bool = True
    norm_c: float = 0.1
    prior_weighting: bool = False
    adaptive: bool = True
    adaptive_freqs: int = 16
    adaptive_hidden: int = 128
    name = "scm"
    uses_time_derivative = True
    default_time = SCM_TIME

    def __post_init__(self) -> None:
        super().__post_init__()
        self._weight = AdaptiveWeight(self.adaptive_freqs, self.adaptive_hidden) if self.adaptive else None

    def parameters_module(self) -> nn.Module | None:
        return self._weight

    def check_model(self, model: ConsistencyModel) -> None:
        if not isinstance(model.schedule, TrigFlowSchedule):
            raise UserValueError(f"the scm objective is defined on TrigFlow; this model uses "
                                 f"{type(model.schedule).__name__}: build it with schedule='trigflow' (e.g. the "
                                 f"wfno-cifar-trigflow recipe)")

    def tangent(self, ctx: ObjectiveContext) -> Tensor:
        """The normalised g of Algorithm 1 (no grad), (B, C, H, W)."""
        self.check_model(ctx.net)
        sd, x_t, t = ctx.schedule.sigma_data, ctx.x_t, ctx.t
        d = ctx.time_derivative  # no graph (stop-gradient), from the differentiable forward's pass
        cos, sin = expand_like(torch.cos(t), x_t), expand_like(torch.sin(t), x_t)
        r = tangent_warmup(ctx.step, self.warmup_steps)
        g = -cos**2 * (sd * d.raw - ctx.dx_dt) - r * cos * sin * (x_t + sd * d.d_raw)
        if self.normalize:
            g = g / expand_like(g.flatten(1).norm(dim=1) + self.norm_c, g)
        return g

    def compute(self, ctx: ObjectiveContext) -> LossOutput:
        g = self.tangent(ctx)
        raw = ctx.raw
        mse = (raw - raw.detach() - g).pow(2).flatten(1).mean(1)  # ||F - F^- - g||^2 / D, (B,)
        if self.prior_weighting:
            mse = mse / (ctx.schedule.sigma_data * torch.tan(ctx.t))
        logs: dict[str, Tensor | float] = {"mse": mse.detach().mean()}
        if self._weight is None:
            return LossOutput(mse.mean(), logs)
        w = self._weight(ctx.t)
        logs["w_phi"] = w.detach().mean()
        return LossOutput((torch.exp(-w) * mse + w).mean(), logs)


__all__ = ["AdaptiveWeight", "SCMObjective"]
