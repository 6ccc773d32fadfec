"""Training objectives: the base class, the per-step context they share, and their composition.

An objective is called as ``objective(model, x0, step)`` and returns a :class:`LossOutput`. Objectives
compose in user code: ``cons + 0.1 * tangent`` is a :class:`WeightedSum` whose terms share one
:class:`ObjectiveContext` per call, hence one draw of (t, eps) and one differentiable forward
f_theta(x_t, t): a term's extra cost is only what it adds (a target forward, a JVP).
"""

from __future__ import annotations

import abc
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, cast

import torch
from torch import Tensor, nn

from .runtime import unwrap
from .time_distributions import TimeDistribution, TimePairDistribution, make_time_distribution
from .errors import UserValueError

if TYPE_CHECKING:
    from .model import ConsistencyModel, TimeDerivative


@dataclass
class LossOutput:
    """``loss``: scalar tensor to minimise; ``logs``: what to report, one per term (plus any extras), as detached
    0-dim tensors (or floats): converting a device tensor to a float waits for the device, so the engine does
    it once per ``log_every`` steps, for every log together (EDM's ``training_stats`` does the same).
    ``explain``: optional, called only when the loss is not finite, says what made it so (the trainer's guard
    reports it)."""

    loss: Tensor
    logs: dict[str, Tensor | float] = field(default_factory=dict)
    explain: Callable[[], str] | None = None


class ObjectiveContext:
    """Per-call state shared by the terms of a composed objective (all lazily computed, once).

    Attributes:
        model: the model to differentiate through (may be DDP-wrapped: gradients then synchronise).
        x0: (B, C, H, W) data batch in [-1, 1] (this rank's slice of the global batch).
        step: the optimiser step (for warm-ups and curricula).
        generator: optional generator for every random draw (reproducible losses).
        time_distribution: draws t (the objective's; default ``lognormal``).
        cond: conditioning passed to every model call, tensors (B, ...) (this rank's slice, like ``x0``).
        rank, world_size: with a generator in the same state on every rank, each draw is made for the
            global batch and this rank keeps its slice, so W ranks see exactly the draws of one process.
        with_time_derivative: compute :attr:`time_derivative` in the same backbone pass as the
            differentiable forward (:attr:`f`, :attr:`raw`), reusing its activations; set when a term uses
            both (:attr:`Objective.uses_time_derivative`).
    """

    def __init__(self, model: nn.Module, x0: Tensor, step: int = 0, generator: torch.Generator | None = None,
                 *, time_distribution: TimeDistribution | None = None, rank: int = 0, world_size: int = 1,
                 cond: dict[str, Tensor] | None = None, with_time_derivative: bool = False) -> None:
        self.model, self.x0, self.step, self.generator = model, x0, int(step), generator
        self.with_time_derivative = with_time_derivative
        self.time_distribution = time_distribution or make_time_distribution(None)
        self.cond: dict[str, Tensor] = dict(cond or {})
        self.rank, self.world_size = int(rank), int(world_size)

    def _shard(self, draws: Tensor) -> Tensor:
        """This rank's slice of draws made for the global batch (world_size x the local batch)."""
        b = draws.shape[0] // self.world_size
        return draws[self.rank * b:(self.rank + 1) * b]

    def null_cond(self) -> dict[str, Tensor]:
        """The step's conditioning with every class label replaced by the null class: the unconditional
        prediction at the same x_t (a class-conditional model, ``model.num_classes`` > 0), the hook of
        training-time guidance (MeanFlow's target, docs/training.md "Guidance"). No labels: ``cond`` as is."""
        y = self.cond.get("y")
        if y is None:
            return dict(self.cond)
        return {**self.cond, "y": torch.full_like(y, cast("ConsistencyModel", self.net).null_class)}

    @cached_property
    def net(self) -> nn.Module:
        """The unwrapped :class:`ctcm.ConsistencyModel`, for no-grad evaluations and JVPs."""
        return unwrap(self.model)

    @property
    def schedule(self):
        return self.net.schedule

    def randn_like(self, x: Tensor) -> Tensor:
        """N(0, I) draws shaped like ``x`` (B, ...), drawn for the global batch (a term's own extra randomness:
        drawn after :attr:`t`, :attr:`noise` and :attr:`uniform`, in the order the terms ask for it)."""
        shape = (x.shape[0] * self.world_size, *x.shape[1:])
        return self._shard(torch.randn(shape, generator=self.generator, device=x.device, dtype=x.dtype))

    def rand(self, n: int) -> Tensor:
        """(n,) U[0, 1) draws for this rank's n samples (a term's own extra randomness, as :meth:`randn_like`)."""
        return self._shard(torch.rand(n * self.world_size, generator=self.generator, device=self.x0.device,
                                      dtype=self.x0.dtype))

    @cached_property
    def _draws(self) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        """(t, r, eps, u), drawn together in this fixed order on first use of any of them: whichever term asks
        first, the generator yields the same values (the same seed gives the same run for any order of the
        terms), and the backbone's dropout masks, drawn by the first forward, always come after them. r comes
        with t from a :class:`ctcm.TimePairDistribution` (None otherwise)."""
        n, g, device, dtype = self.x0.shape[0] * self.world_size, self.generator, self.x0.device, self.x0.dtype
        r: Tensor | None = None
        if isinstance(self.time_distribution, TimePairDistribution):
            pair = self.time_distribution.draw_pair(n, self.schedule, generator=g, device=device, dtype=dtype)
            t, r = self._shard(pair[0]), self._shard(pair[1])
        else:
            t = self._shard(self.time_distribution.draw(n, self.schedule, generator=g, device=device, dtype=dtype))
        return t, r, self.randn_like(self.x0), self.rand(self.x0.shape[0])

    @cached_property
    def t(self) -> Tensor:
        """(B,) training times from the objective's time distribution (assignable, as :attr:`r`)."""
        return self._draws[0]

    @cached_property
    def r(self) -> Tensor | None:
        """(B,) a flow map's target times r <= t, drawn with t by a :class:`ctcm.TimePairDistribution`; None
        for a one-time distribution (a flow map then maps to t_min: its consistency function)."""
        return self._draws[1]

    @cached_property
    def noise(self) -> Tensor:
        """(B, C, H, W) eps ~ N(0, I), shared by every point of the path."""
        return self._draws[2]

    @cached_property
    def uniform(self) -> Tensor:
        """(B,) u ~ U[0, 1) per sample, for a random consistency gap (shared by the terms, like t and eps)."""
        return self._draws[3]

    @cached_property
    def _path(self) -> tuple[Tensor, Tensor]:
        return self.schedule.noisy(self.x0, self.noise, self.t)

    @property
    def x_t(self) -> Tensor:
        return self._path[0]

    @property
    def dx_dt(self) -> Tensor:
        """Path velocity alpha'(t) x_0 + sigma'(t) eps (Eq. 2)."""
        return self._path[1]

    @cached_property
    def tangent_direction(self) -> Tensor:
        """The dx_t/dt that :attr:`time_derivative` is taken along: the path velocity :attr:`dx_dt`, unless a term
        assigns another before the model runs (MeanFlow's guided velocity, Eq. 41)."""
        return self.dx_dt

    @cached_property
    def _outputs(self) -> tuple[Tensor, ...]:
        along = self.tangent_direction if self.with_time_derivative else None
        return self.model(self.x_t, self.t, self.r, return_raw=True, tangent_along=along, check_time=False,
                          **self.cond)

    @cached_property
    def time_derivative(self) -> TimeDerivative:
        """The stop-gradient :class:`ctcm.model.TimeDerivative` of f at (x_t, t) along :attr:`tangent_direction`
        (Eq. 11; of the flow map at fixed r, Eq. 36): from the differentiable forward's pass when
        ``with_time_derivative``, else one no-grad JVP of the model."""
        if self.with_time_derivative:
            return cast("TimeDerivative", self._outputs[2])
        with torch.no_grad():
            net = cast("ConsistencyModel", self.net)
            return net.time_derivative(self.x_t, self.t, self.tangent_direction, self.r, check_time=False, **self.cond)

    @property
    def f(self) -> Tensor:
        """f_theta(x_t, t) (a flow map's X_theta(x_t, t, r)) with gradients, through ``model`` (so DDP synchronises
        them)."""
        return self._outputs[0]

    @property
    def raw(self) -> Tensor:
        """The backbone's output F_theta(c_in x_t, c_noise(t)) of the same differentiable forward as :attr:`f`."""
        return self._outputs[1]


class Objective(abc.ABC):
    """Base class of every objective. Subclasses implement :meth:`compute` and set ``name``.

    An objective owns the distribution of its training times (:meth:`time_distribution`; terms of a sum
    share one draw, so they must agree) and any trainable parameters of its own (:meth:`parameters_module`,
    e.g. sCM's adaptive weighting): the engine optimises those with the model, checkpoints them and keeps
    them in sync across ranks.
    """

    name: str = "objective"
    #: True when :meth:`compute` uses both ``ctx.time_derivative`` and the differentiable ``ctx.f`` / ``ctx.raw``:
    #: the context then gets both from one backbone pass (the tangent reuses the forward's activations).
    uses_time_derivative: bool = False

    def time_distribution(self) -> TimeDistribution | None:
        """The distribution of t this objective is defined with (None: no preference)."""
        return None

    def parameters_module(self) -> nn.Module | None:
        """A module holding this objective's trainable parameters, or None."""
        return None

    def check_model(self, model: ConsistencyModel) -> None:
        """Raise a :class:`ctcm.UserValueError` naming the fix when this objective cannot train ``model`` (sCM needs the
        TrigFlow schedule). The trainer calls it before loading any data; default: any model will do."""
        return None

    @abc.abstractmethod
    def compute(self, ctx: ObjectiveContext) -> LossOutput:
        """The loss for one batch, using (and sharing) what ``ctx`` provides."""

    def __call__(self, model: nn.Module, x0: Tensor, step: int = 0, *, generator: torch.Generator | None = None,
                 rank: int = 0, world_size: int = 1, cond: dict[str, Tensor] | None = None) -> LossOutput:
        """Evaluate on a batch x0 (B, C, H, W) with conditioning ``cond`` (tensors (B, ...)): draw per-step
        randomness (:meth:`ctcm.Backbone.resample_noise_`), then compute every term.

        The logs always hold ``loss`` and one entry per term (see :class:`WeightedSum`)."""
        net = cast("ConsistencyModel", unwrap(model))
        if net.training:
            net.resample_noise_(generator, rank=rank, world_size=world_size)
        total = WeightedSum(self.terms())
        ctx = ObjectiveContext(model, x0, step, generator, time_distribution=total.time_distribution(),
                               rank=rank, world_size=world_size, cond=cond,
                               with_time_derivative=total.uses_time_derivative)
        return total.compute(ctx)

    def terms(self) -> list[tuple[float, "Objective"]]:
        return [(1.0, self)]

    def labels(self) -> list[str]:
        """The log key of each term's loss, in order (see :class:`WeightedSum`)."""
        return WeightedSum(self.terms()).labels()

    def __add__(self, other: "Objective") -> "WeightedSum":
        if not isinstance(other, Objective):
            return NotImplemented
        return WeightedSum(self.terms() + other.terms())

    def __mul__(self, weight: float) -> "WeightedSum":
        if not isinstance(weight, numbers.Real):
            return NotImplemented
        return WeightedSum([(float(weight) * w, o) for w, o in self.terms()])

    __rmul__ = __mul__


def _explained(terms: list[tuple[str, Tensor, Callable[[], str] | None]]) -> Callable[[], str]:
    """What made a sum's loss non-finite, from its non-finite terms' own explanations (``LossOutput.explain``);
    the terms' finiteness is read only when this is called (the trainer calls it for a non-finite loss)."""
    def explain() -> str:
        return "; ".join(f"term '{label}': {why() if why else 'non-finite loss'}"
                         for label, loss, why in terms if not bool(torch.isfinite(loss)))
    return explain


class WeightedSum(Objective):
    """sum_i w_i L_i over terms sharing one :class:`ObjectiveContext`.

    ``logs`` holds ``loss`` (the weighted total), each term's unweighted loss under its name (repeated
    names get ``_2``, ``_3``...), and each term's own extra logs as ``name/key``.
    """

    name = "sum"

    def __init__(self, terms: list[tuple[float, Objective]]) -> None:
        if not terms:
            raise UserValueError("a WeightedSum needs at least one term")
        self._terms = list(terms)

    def terms(self) -> list[tuple[float, Objective]]:
        return list(self._terms)

    @property
    def uses_time_derivative(self) -> bool:  # type: ignore[override]
        return any(o.uses_time_derivative for _, o in self._terms)

    def time_distribution(self) -> TimeDistribution | None:
        """The terms' common time distribution (they share one draw of t); an error if two terms differ."""
        found = [(label, o.time_distribution()) for (_, o), label in zip(self._terms, self.labels())]
        found = [(label, d) for label, d in found if d is not None]
        for label, d in found[1:]:
            if d != found[0][1]:
                raise UserValueError(
                    f"objective terms '{found[0][0]}' and '{label}' use different time distributions "
                    f"({found[0][1]} vs {d}) but share one draw of t: give them the same 'time'")
        return found[0][1] if found else None

    def check_model(self, model: ConsistencyModel) -> None:
        for _, term in self._terms:
            term.check_model(model)

    def parameters_module(self) -> nn.Module | None:
        """The terms' parameter modules in a ModuleDict keyed by term label (None when no term has any)."""
        mods = {label: m for (_, o), label in zip(self._terms, self.labels())
                if (m := o.parameters_module()) is not None}
        return nn.ModuleDict(mods) if mods else None

    def labels(self) -> list[str]:
        seen: dict[str, int] = {}
        labels = []
        for _, obj in self._terms:
            seen[obj.name] = seen.get(obj.name, 0) + 1
            labels.append(obj.name if seen[obj.name] == 1 else f"{obj.name}_{seen[obj.name]}")
        return labels

    def compute(self, ctx: ObjectiveContext) -> LossOutput:
        total: Tensor = torch.zeros((), device=ctx.x0.device, dtype=ctx.x0.dtype)
        logs: dict[str, Tensor | float] = {}
        terms: list[tuple[str, Tensor, Callable[[], str] | None]] = []
        for (weight, obj), label in zip(self._terms, self.labels()):
            out = obj.compute(ctx)
            total = total + weight * out.loss
            logs[label] = out.loss.detach()
            logs.update({f"{label}/{k}": v for k, v in out.logs.items() if k != obj.name})
            terms.append((label, out.loss.detach(), out.explain))
        logs["loss"] = total.detach()
        return LossOutput(total, logs, explain=_explained(terms))

    def __repr__(self) -> str:
        return " + ".join(f"{w:g} * {type(o).__name__}" for w, o in self._terms)


@dataclass
class TimedObjective(Objective):
    """An objective defined with its own distribution of t, given as ``time`` (the one home of that field).

    ``time``: ``{name: lognormal, p_mean: ..., p_std: ...}`` (Eq. 23), ``{name: uniform}``, any registered
    time distribution, an instance, or None for the class's ``default_time`` (ECT's / iCT's lognormal
    (-1.1, 2.0) unless a subclass says otherwise). It is built once, in ``__post_init__`` (a subclass with its
    own ``__post_init__`` calls ``super().__post_init__()``), so a bad ``time`` fails when the objective is made.
    """

    time: Any = None
    default_time: ClassVar[dict[str, Any]] = {"name": "lognormal"}

    def __post_init__(self) -> None:
        self._time: TimeDistribution = make_time_distribution(self.time, self.default_time)

    def time_distribution(self) -> TimeDistribution:
        return self._time
