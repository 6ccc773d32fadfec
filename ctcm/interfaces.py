"""The contracts a plugin implements: :class:`Backbone` and :class:`NoiseSchedule`.

Objectives have their own module (:mod:`ctcm.objective`) because composition lives there too.
Equation numbers refer to ``docs/maths.md``.
"""

from __future__ import annotations

import abc
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from typing_extensions import Self, override  # typing's own from Python 3.11 / 3.12

from .errors import UserTypeError


class ComplexSafeModule(nn.Module):
    """An ``nn.Module`` whose dtype casts keep complex parameters complex.

    ``Module.double()`` skips complex tensors and ``Module.to(torch.float64)`` casts them to a *real*
    tensor, silently dropping the imaginary part. Here every cast is applied to the real view
    (``view_as_real``) of a complex tensor, so complex64 <-> complex128 follows float32 <-> float64.
    The wrapped function is passed down to every submodule, so one such module at the root of a model
    protects every complex parameter below it (including those of third-party layers).
    """

    @override
    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Self:
        def complex_safe(t: Tensor) -> Tensor:
            if t.is_complex():
                out = fn(torch.view_as_real(t))
                return torch.view_as_complex(out.contiguous()) if out.is_floating_point() else out
            return fn(t)

        return super()._apply(complex_safe, recurse)


class Backbone(ComplexSafeModule, abc.ABC):
    """The contract of a network F(x, c_noise, **cond) used inside :class:`ctcm.ConsistencyModel` (Eq. 3).

    Subclasses set ``in_channels``, ``out_channels`` and ``resolution_agnostic`` and implement
    :meth:`forward`. Two hooks have defaults that a subclass may override:

    * :meth:`forward_and_tangent`: (F, dF) along a direction (Eq. 20); default ``torch.func.jvp``.
    * :meth:`resample_noise_`: draw new per-step randomness (weight-drop masks); default no randomness.

    ``**cond`` holds per-sample conditioning (e.g. class labels ``y`` of shape (B,)); a backbone that
    takes none refuses unknown keys by its signature.
    """

    in_channels: int
    out_channels: int
    resolution_agnostic: bool = False
    #: the values of constructor arguments whose default has changed (or that did not exist) as checkpoints
    #: written before 0.3 built them: those stored only the arguments a user gave, so an argument missing
    #: from a stored config takes its value here, not today's default (:func:`ctcm.build.stored_model`)
    legacy_defaults: ClassVar[Mapping[str, Any]] = {}

    @abc.abstractmethod
    def forward(self, x: Tensor, c_noise: Tensor, **cond: Any) -> Tensor:
        """Args: x (B, C_in, H, W); c_noise (B,), one conditioning value per sample; cond: tensors (B, ...).
        Returns: (B, C_out, H, W)."""

    def forward_and_tangent(self, x: Tensor, dx: Tensor, c_noise: Tensor, dc_noise: Tensor,
                            **cond: Any) -> tuple[Tensor, Tensor]:
        """(F(x, c), dF = J_x F dx + d_c F dc) at fixed ``cond``: one ``torch.func.jvp``. All (B, C_out, H, W)."""
        f, df = torch.func.jvp(lambda u, c: self(u, c, **cond), (x, c_noise), (dx, dc_noise))[:2]
        return f, df

    def forward_and_detached_tangent(self, x: Tensor, dx: Tensor, c_noise: Tensor, dc_noise: Tensor,
                                     **cond: Any) -> tuple[Tensor, Tensor]:
        """F(x, c) recording its graph (as :meth:`forward`) and dF along (dx, dc) without one: what a
        stop-gradient tangent objective needs at the point of its differentiable forward (sCM, ``tangent``).

        This default runs the forward, then :meth:`forward_and_tangent` under ``no_grad`` (the value twice);
        a backbone can override it to reuse the forward's activations (wfno does). All (B, C_out, H, W).
        """
        out = self(x, c_noise, **cond)
        with torch.no_grad():
            d_out = self.forward_and_tangent(x, dx, c_noise, dc_noise, **cond)[1]
        return out, d_out

    def resample_noise_(self, generator: torch.Generator | None = None, *, rank: int = 0,
                        world_size: int = 1) -> None:
        """Draw new per-step randomness (called once per training step, before any forward); default none.

        Every forward of one step (the differentiable one, the no-grad target, the JVP) then sees the same
        randomness, as consistency training requires (ECT shares dropout masks across the two branches).
        ``generator`` is in the same state on every rank; randomness drawn per sample (dropout masks) must be
        drawn for the global batch of ``world_size`` x the local one, this rank (``rank``) keeping its slice,
        so that W ranks see the draws of one process. Per-step randomness (weight-drop) ignores them."""


REQUIRED_BACKBONE_ATTRIBUTES = ("in_channels", "out_channels", "resolution_agnostic")


def check_backbone(backbone: Any) -> None:
    """Raise a TypeError naming what is missing when ``backbone`` does not fulfil the contract."""
    if not isinstance(backbone, Backbone):
        raise UserTypeError(f"a backbone must subclass ctcm.Backbone (it supplies forward_and_tangent and "
                            f"resample_noise_), got {type(backbone).__name__}")
    missing = [a for a in REQUIRED_BACKBONE_ATTRIBUTES if not hasattr(backbone, a)]
    if missing:
        raise UserTypeError(
            f"backbone {type(backbone).__name__} lacks attribute(s) {missing}; set them in __init__. "
            f"Required: {list(REQUIRED_BACKBONE_ATTRIBUTES)}."
        )
    params = inspect.signature(backbone.resample_noise_).parameters
    if not {"rank", "world_size"} <= set(params) and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise UserTypeError(
            f"backbone {type(backbone).__name__}.resample_noise_ must take the keyword arguments rank and "
            f"world_size (its slice of the global batch under DDP); declare it as "
            f"resample_noise_(self, generator=None, *, rank=0, world_size=1)"
        )


class NoiseSchedule(abc.ABC):
    """The noising path x_t = alpha(t) x_0 + sigma(t) eps, eps ~ N(0, I), on t in [t_min, t_max] (Eq. 1).

    A schedule also owns the consistency parameterisation's coefficients (Eq. 3), chosen so that
    c_skip(t_min) = 1 and c_out(t_min) = 0 exactly (the boundary condition f(x, t_min) = x), the
    conditioning input c_noise(t) with a bounded time derivative and the prior at t_max. The training-time
    distribution over t belongs to the objective (:mod:`ctcm.time_distributions`), not to the schedule.
    All methods take and return tensors of the dtype/device of ``t``.
    """

    t_min: float
    t_max: float
    sigma_data: float
    default_t_mid: float  # intermediate time of the two-step sampler

    # -- the path (Eq. 1) ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def alpha(self, t: Tensor) -> Tensor: ...

    @abc.abstractmethod
    def sigma(self, t: Tensor) -> Tensor: ...

    @abc.abstractmethod
    def d_alpha(self, t: Tensor) -> Tensor:
        """d alpha / dt."""

    @abc.abstractmethod
    def d_sigma(self, t: Tensor) -> Tensor:
        """d sigma / dt."""

    # -- parameterisation (Eq. 3) and conditioning ----------------------------------------------------------
    @abc.abstractmethod
    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in), each shaped like ``t``."""

    @abc.abstractmethod
    def c_noise(self, t: Tensor) -> Tensor:
        """The backbone's conditioning value, shaped like ``t``, with |d c_noise/dt| bounded."""

    def coefficients_with_rates(self, t: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """((c_skip, c_out, c_in, c_noise), their d/dt), each shaped like ``t``: what a JVP of the model
        needs (Eq. 11). This default differentiates :meth:`coefficients` and :meth:`c_noise` with one
        ``torch.func.jvp``; schedules with closed forms override it (Eq. 31: the jvp's overhead, ~3 ms
        a call on CPU, is paid before the backbone's kernels are queued)."""
        out = torch.func.jvp(lambda s: (*self.coefficients(s), self.c_noise(s)), (t,), (torch.ones_like(t),))
        return tuple(out[0]), tuple(out[1])

    def first_time_outside(self, t: Tensor) -> float | None:
        """The first entry of ``t`` that is not finite or lies outside [t_min, t_max] (float32 rounding of an
        endpoint is allowed), or None when every entry is in range. One device sync: call it where t enters
        (a user's call, a time distribution's first draw), not on every step of a training loop."""
        lo, hi = float(self.t_min), float(self.t_max)
        tol = 1e-5 * (hi - lo) + 1e-7
        plain = t.detach().real if t.is_complex() else t.detach()
        bad = ~(torch.isfinite(plain) & (plain >= lo - tol) & (plain <= hi + tol))
        return float(plain[bad][0]) if bool(bad.any()) else None

    # -- noise level in data units ----------------------------------------------------------------------------
    def edm_sigma(self, t: Tensor) -> Tensor:
        """s(t) = sigma(t) / alpha(t), the noise-to-signal ratio in data units (EDM's sigma; Eq. 8).

        Training-time distributions and gap curricula are stated in s, so they mean the same noise levels
        on every schedule."""
        return self.sigma(t) / self.alpha(t)

    def t_of_edm_sigma(self, s: Tensor) -> Tensor:
        """Inverse of :meth:`edm_sigma` (monotone increasing), clipped to [t_min, t_max].

        This default bisects in float64 (60 halvings); schedules with a closed form override it."""
        lo = torch.full(s.shape, self.t_min, dtype=torch.float64, device=s.device)
        hi = torch.full(s.shape, self.t_max, dtype=torch.float64, device=s.device)
        target = s.double()
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            below = self.edm_sigma(mid) < target
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return (0.5 * (lo + hi)).to(s.dtype)

    def noisy(self, x0: Tensor, noise: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """x_t and the path velocity dx_t/dt = alpha'(t) x_0 + sigma'(t) eps at fixed (x_0, eps) (Eq. 2)."""
        a, s = expand_like(self.alpha(t), x0), expand_like(self.sigma(t), x0)
        da, ds = expand_like(self.d_alpha(t), x0), expand_like(self.d_sigma(t), x0)
        return a * x0 + s * noise, da * x0 + ds * noise

    @property
    def prior_std(self) -> float:
        """Std of x_{t_max} for data of std sigma_data: sqrt(alpha^2 sigma_d^2 + sigma^2) at t_max (Eq. 9)."""
        t = torch.tensor(self.t_max, dtype=torch.float64)
        return math.sqrt(float(self.alpha(t)) ** 2 * self.sigma_data**2 + float(self.sigma(t)) ** 2)


def expand_like(coef: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) broadcastable against ``like``."""
    return coef.reshape(coef.shape + (1,) * (like.ndim - coef.ndim))

