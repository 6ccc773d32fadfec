"""The consistency function f_theta(x_t, t) = c_skip(t) x_t + c_out(t) F_theta(c_in(t) x_t, c_noise(t)) (Eq. 3)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import ModelConfig
from .interfaces import ComplexSafeModule, NoiseSchedule, check_backbone, expand_like
from .samplers import default_times, sample


class ConsistencyModel(ComplexSafeModule):
    """Wraps a backbone F and a schedule into a consistency function with f(x, t_min) = x exactly.

    Args:
        backbone: any module F(x, c_noise) -> same shape (see :class:`ctcm.Backbone`).
        schedule: a :class:`ctcm.NoiseSchedule`; it supplies c_skip, c_out, c_in and c_noise.
        channels, resolution: the data shape (C, resolution, resolution) used by :meth:`sample`.
        config: the :class:`ModelConfig` that rebuilds this model (kept by checkpoints); ``None`` for a
            model assembled from instances, which then cannot be rebuilt by :func:`ctcm.load_checkpoint`.
    """

    def __init__(self, backbone: nn.Module, schedule: NoiseSchedule, *, channels: int = 3,
                 resolution: int = 32, config: ModelConfig | None = None) -> None:
        super().__init__()
        check_backbone(backbone)
        if backbone.in_channels != channels or backbone.out_channels != channels:
            raise ValueError(
                f"backbone maps {backbone.in_channels} -> {backbone.out_channels} channels but the data has "
                f"{channels}; build the backbone with in_channels=out_channels={channels}"
            )
        self.backbone = backbone
        self.schedule = schedule
        self.channels = channels
        self.resolution = resolution
        self.config = config

    # -- shape checks ----------------------------------------------------------------------------------------
    def _check_inputs(self, x: Tensor, t: Tensor | float) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected images of shape (B, {self.channels}, H, W), got {tuple(x.shape)}")
        if not self.backbone.resolution_agnostic and tuple(x.shape[-2:]) != (self.resolution,) * 2:
            raise ValueError(
                f"this backbone works at {self.resolution}x{self.resolution} only, got "
                f"{x.shape[-2]}x{x.shape[-1]}; resize the input or use a resolution-agnostic backbone"
            )
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(t.shape)}")
        return t

    # -- the consistency function -----------------------------------------------------------------------------
    def raw(self, x: Tensor, t: Tensor) -> Tensor:
        """F_theta(c_in(t) x, c_noise(t)): the backbone's output before the skip mix."""
        _, _, c_in = self.schedule.coefficients(t)
        return self.backbone(expand_like(c_in, x) * x, self.schedule.c_noise(t))

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        """f_theta(x_t, t) (Eq. 3). x (B, C, H, W); t (B,) or scalar. Returns (B, C, H, W)."""
        t = self._check_inputs(x, t)
        c_skip, c_out, _ = self.schedule.coefficients(t)
        return expand_like(c_skip, x) * x + expand_like(c_out, x) * self.raw(x, t)

    def time_derivative(self, x: Tensor, t: Tensor, dx_dt: Tensor, *,
                        warmup: float = 1.0) -> tuple[Tensor, Tensor]:
        """(f, df/dt) along the path, with one JVP of the backbone (Eq. 11).

        A backbone may provide ``forward_and_tangent(x, dx, c_noise, dc_noise) -> (F, dF)``, its own
        forward mode (faster than ``torch.func.jvp``; Eq. 20); otherwise ``torch.func.jvp`` is used.

        df/dt = [c_skip' x_t + c_out dF/dt] + [c_skip dx_t/dt + c_out' F]. ``warmup`` in [0, 1] scales the
        first bracket (sCM's tangent warm-up, generalised to any schedule); at 1 this is the exact total
        derivative, equal to :func:`ctcm.total_derivative` of :meth:`forward`.
        """
        t = self._check_inputs(x, t)
        ones = torch.ones_like(t)
        # every schedule coefficient and its d/dt in one jvp (each torch.func call costs ~1 ms of overhead)
        (c_skip, c_out, c_in, c_noise), (d_skip, d_out, d_in, d_noise) = torch.func.jvp(
            lambda s: (*self.schedule.coefficients(s), self.schedule.c_noise(s)), (t,), (ones,))
        tangent_rule = getattr(self.backbone, "forward_and_tangent", None)
        if tangent_rule is None:
            raw, d_raw = torch.func.jvp(self.raw, (x, t), (dx_dt, ones))
        else:  # the backbone's own forward mode, along d/dt (c_in x, c_noise)
            u, du = expand_like(c_in, x) * x, expand_like(d_in, x) * x + expand_like(c_in, x) * dx_dt
            raw, d_raw = tangent_rule(u, du, c_noise, d_noise)
        e = lambda c: expand_like(c, x)  # noqa: E731
        f = e(c_skip) * x + e(c_out) * raw
        df_dt = warmup * (e(d_skip) * x + e(c_out) * d_raw) + e(c_skip) * dx_dt + e(d_out) * raw
        return f, df_dt

    # -- sampling ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, steps: int = 1, t_mid: float | None = None, times: list[float] | None = None,
               generator: torch.Generator | None = None, device: torch.device | str | None = None,
               clip: bool = True) -> Tensor:
        """n images (n, C, R, R) in [-1, 1] from one (``steps=1``), two (``steps=2``, intermediate time
        ``t_mid``, default the schedule's) or ``len(times)`` network evaluations."""
        times = default_times(self.schedule, steps, t_mid) if times is None else times
        param = next(self.parameters(), None)
        device = device if device is not None else (param.device if param is not None else "cpu")
        dtype = param.dtype if param is not None else torch.float32
        shape = (n, self.channels, self.resolution, self.resolution)
        noise = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        x = sample(self, noise, times, generator=generator)
        return x.clamp(-1, 1) if clip else x


def compile_backbone(model: ConsistencyModel, **options) -> ConsistencyModel:
    """``torch.compile`` the hot path of a training step in place: the backbone's forward (with its
    backward, through AOTAutograd) and, when it has one, its hand-written ``forward_and_tangent``.

    The objectives evaluate the tangent and the no-grad target on the unwrapped model, so compiling the
    wrapper alone (``torch.compile(model)``) would leave them eager. Parameters, ``state_dict`` and
    checkpoints are unchanged. ``options`` go to ``torch.compile`` (e.g. ``mode``, ``fullgraph``).
    Returns ``model``.
    """
    backbone = model.backbone
    backbone.compile(**options)
    rule = getattr(backbone, "forward_and_tangent", None)
    if rule is not None:
        backbone.forward_and_tangent = torch.compile(rule, **options)
    return model
