"""The consistency function f_theta(x_t, t) = c_skip(t) x_t + c_out(t) F_theta(c_in(t) x_t, c_noise(t)) (Eq. 3)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .config import ModelConfig
from .interfaces import Backbone, ComplexSafeModule, NoiseSchedule, check_backbone, expand_like
from . import sampling
from .errors import UserTypeError, UserValueError


@dataclass
class TimeDerivative:
    """f_theta(x_t, t) and its time derivative along the path, split as in Eq. 11:

        df/dt = network + path,  network = c_skip'(t) x_t + c_out(t) dF/dt,  path = c_skip(t) dx_t/dt + c_out'(t) F.

    ``network`` is the term sCM's tangent warm-up scales (for TrigFlow it is -sin t (x_t + sigma_d dF/dt)).
    Every tensor is (B, C, H, W); ``raw`` is F and ``d_raw`` its total derivative dF/dt.
    """

    f: Tensor
    raw: Tensor
    d_raw: Tensor
    network: Tensor
    path: Tensor

    def df_dt(self, warmup: float = 1.0) -> Tensor:
        """warmup * network + path: the exact df/dt at warmup = 1 (Eq. 11)."""
        return warmup * self.network + self.path


class ConsistencyModel(ComplexSafeModule):
    """Wraps a backbone F and a schedule into a consistency function with f(x, t_min) = x exactly.

    Args:
        backbone: a :class:`ctcm.Backbone` F(x, c_noise, **cond) -> same shape.
        schedule: a :class:`ctcm.NoiseSchedule`; it supplies c_skip, c_out, c_in and c_noise.
        channels, resolution: the data shape (C, resolution, resolution) used by :meth:`sample`.
        num_classes: K > 0 for a class-conditional model (a backbone built with ``num_classes=K``): labels
            ``y`` (B,) int in [0, K], K being the null class (:attr:`null_class`, "no label", what label
            dropout trains and what an unlabelled call uses); 0: unconditional (``cond`` passes through unchecked).
        config: the :class:`ModelConfig` that rebuilds this model (kept by checkpoints); ``None`` for a
            model assembled from instances, which then cannot be rebuilt by :func:`ctcm.load_checkpoint`.
    """

    backbone: Backbone
    #: the name of each class of a conditional model (index = label), kept by checkpoints; None: unnamed
    class_names: list[str] | None = None

    def __init__(self, backbone: Backbone, schedule: NoiseSchedule, *, channels: int = 3,
                 resolution: int = 32, num_classes: int = 0, config: ModelConfig | None = None) -> None:
        super().__init__()
        check_backbone(backbone)
        if backbone.in_channels != channels or backbone.out_channels != channels:
            raise UserValueError(
                f"backbone maps {backbone.in_channels} -> {backbone.out_channels} channels but the data has "
                f"{channels}; build the backbone with in_channels=out_channels={channels}"
            )
        self.backbone = backbone
        self.schedule = schedule
        self.channels = channels
        self.resolution = resolution
        self.num_classes = num_classes
        self.config = config

    @property
    def null_class(self) -> int:
        """The label meaning "no class" (row K of the label embedding) of a conditional model."""
        if not self.num_classes:
            raise UserValueError("this model is unconditional (model.num_classes=0): it has no classes")
        return self.num_classes

    # -- input checks ----------------------------------------------------------------------------------------
    #: check that t lies in [t_min, t_max] (one device sync per call). Set to False on an instance to evaluate
    #: the network outside the schedule's range on purpose (advanced use: the output is then extrapolated).
    validate_time: bool = True

    def _check_inputs(self, x: Tensor, t: Tensor | float, check_time: bool = True) -> Tensor:
        """Shape, dtype, batch size and (when ``check_time`` and ``validate_time``) the range and finiteness of
        t; returns t as a (B,) tensor of x's dtype and device. The images are not scanned (too costly)."""
        if not torch.is_tensor(x):
            raise UserTypeError(f"x must be a tensor of images (B, {self.channels}, H, W), got {type(x).__name__}")
        if not (x.is_floating_point() or x.is_complex()):
            raise UserTypeError(f"x must be floating-point images in [-1, 1], got dtype {x.dtype}; convert uint8 "
                                f"images with x.float() / 127.5 - 1")
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise UserValueError(f"expected images of shape (B, {self.channels}, H, W), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise UserValueError("x is an empty batch (B = 0); pass at least one image")
        if not self.backbone.resolution_agnostic and tuple(x.shape[-2:]) != (self.resolution,) * 2:
            raise UserValueError(
                f"this backbone works at {self.resolution}x{self.resolution} only, got "
                f"{x.shape[-2]}x{x.shape[-1]}; resize the input or use a resolution-agnostic backbone"
            )
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise UserValueError(f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(t.shape)}")
        if check_time and self.validate_time:
            self._check_time(t)
        return t

    def check_labels(self, y: Tensor, batch: int) -> None:
        """Labels of a conditional model: integers (B,) in [0, K] (K: the null class); one device sync."""
        k = self.num_classes
        if not torch.is_tensor(y) or y.dtype.is_floating_point or y.is_complex() or y.shape != (batch,):
            raise UserValueError(f"class labels y must be an integer tensor of shape ({batch},), got "
                             f"{type(y).__name__ if not torch.is_tensor(y) else f'{y.dtype} {tuple(y.shape)}'}")
        if bool(((y < 0) | (y > k)).any()):
            raise UserValueError(f"class labels y must lie in [0, {k - 1}] (or {k}: the null class), got "
                             f"{int(y[(y < 0) | (y > k)][0])}; this model has model.num_classes={k}")

    def _check_time(self, t: Tensor) -> None:
        first = self.schedule.first_time_outside(t)
        if first is not None:
            lo, hi = self.schedule.t_min, self.schedule.t_max
            raise UserValueError(f"t must be finite and in the schedule's range [t_min, t_max] = [{lo:.6g}, "
                                 f"{hi:.6g}], got {first!r} ({type(self.schedule).__name__}); set "
                                 f"model.validate_time = False to evaluate outside it on purpose")

    # -- the consistency function -----------------------------------------------------------------------------
    def raw(self, x: Tensor, t: Tensor, **cond: Any) -> Tensor:
        """F_theta(c_in(t) x, c_noise(t), **cond): the backbone's output before the skip mix."""
        _, _, c_in = self.schedule.coefficients(t)
        return self.backbone(expand_like(c_in, x) * x, self.schedule.c_noise(t), **cond)

    def forward(self, x: Tensor, t: Tensor | float, *, return_raw: bool = False, tangent_along: Tensor | None = None,
                check_time: bool = True,
                **cond: Any) -> Tensor | tuple[Tensor, Tensor] | tuple[Tensor, Tensor, TimeDerivative]:
        """f_theta(x_t, t; cond) (Eq. 3). x (B, C, H, W); t (B,) or scalar; cond: tensors (B, ...) for the
        backbone (e.g. class labels ``y``). Returns (B, C, H, W), or the pair (f, F) with the backbone's
        output F when ``return_raw`` (objectives written in F, such as sCM's).

        ``tangent_along`` = dx_t/dt (B, C, H, W): returns (f, F, d) with d the :class:`TimeDerivative` at
        (x, t) along it computed without a graph (stop-gradient), in one pass with the differentiable f
        (:meth:`ctcm.Backbone.forward_and_detached_tangent`); d equals :meth:`time_derivative`'s.

        ``check_time=False`` skips the range check of t (a device sync): for callers whose t is in range by
        construction, such as the objectives' training times (checked where they are drawn).
        """
        t = self._check_inputs(x, t, check_time)
        if check_time and self.num_classes and cond.get("y") is not None:  # the same sync-free opt-out
            self.check_labels(cond["y"], x.shape[0])
        if tangent_along is not None:
            if tangent_along.shape != x.shape:
                raise UserValueError(f"tangent_along (dx_t/dt) must have x's shape {tuple(x.shape)}, got "
                                     f"{tuple(tangent_along.shape)}")
            return self._forward_with_time_derivative(x, t, tangent_along, **cond)
        c_skip, c_out, _ = self.schedule.coefficients(t)
        raw = self.raw(x, t, **cond)
        f = expand_like(c_skip, x) * x + expand_like(c_out, x) * raw
        return (f, raw) if return_raw else f

    def resample_noise_(self, generator: torch.Generator | None = None, *, rank: int = 0, world_size: int = 1) -> None:
        """Draw the backbone's per-step randomness, this rank's slice of it under DDP (see
        :meth:`ctcm.Backbone.resample_noise_`)."""
        self.backbone.resample_noise_(generator, rank=rank, world_size=world_size)

    def time_derivative(self, x: Tensor, t: Tensor, dx_dt: Tensor, *, check_time: bool = True,
                        **cond: Any) -> TimeDerivative:
        """f and the parts of df/dt along the path, with one JVP of the backbone (Eq. 11), at fixed ``cond``.

        The backbone's :meth:`ctcm.Backbone.forward_and_tangent` gives (F, dF) along d/dt (c_in x, c_noise)
        (its own forward mode, Eq. 20, or ``torch.func.jvp`` by default). Returns a :class:`TimeDerivative`;
        ``.df_dt()`` is the exact total derivative, equal to :func:`ctcm.total_derivative` of :meth:`forward`.
        ``check_time``: as in :meth:`forward`.
        """
        t = self._check_inputs(x, t, check_time)
        values, rates = self.schedule.coefficients_with_rates(t)
        u, du, c_noise, d_noise = self._backbone_path(x, dx_dt, values, rates)
        raw, d_raw = self.backbone.forward_and_tangent(u, du, c_noise, d_noise, **cond)
        return self._assemble(x, dx_dt, values, rates, raw, d_raw)

    def _forward_with_time_derivative(self, x: Tensor, t: Tensor, dx_dt: Tensor,
                                      **cond: Any) -> tuple[Tensor, Tensor, TimeDerivative]:
        """(f, F) with their graph and the detached :class:`TimeDerivative`, from one backbone pass."""
        values, rates = self.schedule.coefficients_with_rates(t)
        u, du, c_noise, d_noise = self._backbone_path(x, dx_dt, values, rates)
        raw, d_raw = self.backbone.forward_and_detached_tangent(u, du, c_noise, d_noise, **cond)
        f = expand_like(values[0], x) * x + expand_like(values[1], x) * raw
        with torch.no_grad():
            return f, raw, self._assemble(x, dx_dt, values, rates, raw.detach(), d_raw)

    @staticmethod
    def _backbone_path(x: Tensor, dx_dt: Tensor, values: tuple[Tensor, ...],
                       rates: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The backbone's input c_in x and its d/dt c_in' x + c_in dx_t/dt, with (c_noise, c_noise')."""
        c_in, d_in = expand_like(values[2], x), expand_like(rates[2], x)
        return c_in * x, d_in * x + c_in * dx_dt, values[3], rates[3]

    @staticmethod
    def _assemble(x: Tensor, dx_dt: Tensor, values: tuple[Tensor, ...], rates: tuple[Tensor, ...], raw: Tensor,
                  d_raw: Tensor) -> TimeDerivative:
        """Eq. 11 from the coefficients, F and dF/dt."""
        c_skip, c_out = (expand_like(c, x) for c in values[:2])
        d_skip, d_out = (expand_like(c, x) for c in rates[:2])
        return TimeDerivative(f=c_skip * x + c_out * raw, raw=raw, d_raw=d_raw,
                              network=d_skip * x + c_out * d_raw, path=c_skip * dx_dt + d_out * raw)

    # -- sampling ---------------------------------------------------------------------------------------------
    def sample_batches(self, n: int, *, guidance: float | None = None, **options: Any) -> Iterator[tuple[int, Tensor]]:
        """:func:`ctcm.sampling.sample_batches` of this model: ``(first_index, images)`` for this rank's share of
        images 0..n-1 of run ``seed``, with the schedule, the image shape (C, R, R) and the device and dtype
        of the weights filled in. ``options``: ``seed``, ``steps``, ``t_mid``, ``times``, ``batch_size``,
        ``rank``, ``world_size``, ``cond``, ``clip``. ``guidance``: the classifier-free scale of a
        class-conditional model (:func:`ctcm.sampling.guided`, Eq. 32; None: none)."""
        param = next(self.parameters(), None)
        device, dtype = (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)
        shape = (self.channels, self.resolution, self.resolution)
        f = self if guidance is None or guidance == 1.0 else sampling.guided(self, guidance,
                                                                             self.guidance_null(guidance))
        return sampling.sample_batches(f, n, schedule=self.schedule, shape=shape, device=device, dtype=dtype,
                                       **options)

    def guidance_null(self, guidance: float) -> int:
        """The null class that guidance ``guidance`` combines with; a clear error for an unconditional model."""
        if not self.num_classes:
            raise UserValueError(f"guidance={guidance} needs a class-conditional model (model.num_classes > 0); drop "
                                 f"the guidance scale for this model")
        return self.null_class

    def sample(self, n: int, *, steps: int = 1, t_mid: float | None = None, times: Sequence[float] | None = None,
               seed: int | None = None, batch_size: int | None = None, cond: dict[str, Tensor] | None = None,
               clip: bool = True, guidance: float | None = None) -> Tensor:
        """Images 0..n-1 of run ``seed`` (n, C, R, R), in [-1, 1] when ``clip`` (the same images as ``ctcm
        sample --seed SEED``, for any ``batch_size``; default: one batch of n).

        One (``steps=1``), two (``steps=2``, intermediate time ``t_mid``) or ``len(times)`` network
        evaluations (Eq. 12). ``seed=None`` draws one from torch's global generator. ``cond``: tensors (n, ...),
        e.g. ``{"y": labels}`` of a class-conditional model; ``guidance``: its classifier-free scale (Eq. 32).
        """
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()))
        batches = self.sample_batches(n, seed=seed, steps=steps, t_mid=t_mid, times=times, batch_size=batch_size or n,
                                      cond=cond, clip=clip, guidance=guidance)
        return torch.cat([x for _, x in batches])


def compile_backbone(model: ConsistencyModel, **options: Any) -> ConsistencyModel:
    """``torch.compile`` the hot path of a training step in place: the backbone's forward (with its
    backward, through AOTAutograd), its ``forward_and_tangent`` and ``forward_and_detached_tangent``.

    The objectives evaluate the tangent and the no-grad target on the unwrapped model, so compiling the
    wrapper alone (``torch.compile(model)``) would leave them eager. Parameters, ``state_dict`` and
    checkpoints are unchanged. ``options`` go to ``torch.compile`` (e.g. ``mode``, ``fullgraph``).
    Returns ``model``.
    """
    backbone = model.backbone
    backbone.compile(**options)
    for name in ("forward_and_tangent", "forward_and_detached_tangent"):
        setattr(backbone, name, torch.compile(getattr(backbone, name), **options))
    return model
