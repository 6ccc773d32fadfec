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

    # -- input checks ----------------------------------------------------------------------------------------
    #: check that t lies in [t_min, t_max] (one device sync per call). Set to False on an instance to evaluate
    #: the network outside the schedule's range on purpose (advanced use: the output is then extrapolated).
    validate_time: bool = True

    def _check_inputs(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Shape, dtype, batch size and (unless ``validate_time`` is False) the range and finiteness of t;
        returns t as a (B,) tensor of x's dtype and device. The images are not scanned (too costly)."""
        if not torch.is_tensor(x):
            raise TypeError(f"x must be a tensor of images (B, {self.channels}, H, W), got {type(x).__name__}")
        if not (x.is_floating_point() or x.is_complex()):
            raise TypeError(f"x must be floating-point images in [-1, 1], got dtype {x.dtype}; convert uint8 images "
                            f"with x.float() / 127.5 - 1")
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected images of shape (B, {self.channels}, H, W), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError("x is an empty batch (B = 0); pass at least one image")
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
        if self.validate_time:
            self._check_time(t)
        return t

    def _check_time(self, t: Tensor) -> None:
        lo, hi = float(self.schedule.t_min), float(self.schedule.t_max)
        tol = 1e-5 * (hi - lo) + 1e-7  # float32 rounding of an endpoint is not an error
        plain = t.detach().real if t.is_complex() else t.detach()
        bad = ~(torch.isfinite(plain) & (plain >= lo - tol) & (plain <= hi + tol))
        if bool(bad.any()):
            first = float(plain[bad][0])
            raise ValueError(f"t must be finite and in the schedule's range [t_min, t_max] = [{lo:.6g}, {hi:.6g}], "
                             f"got {first!r} ({type(self.schedule).__name__}); set model.validate_time = False "
                             f"to evaluate outside it on purpose")

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
        tangent_rule = getattr(self.backbone, "forward_and_tangent", None)
        if tangent_rule is None:
            raw, d_raw = torch.func.jvp(self.raw, (x, t), (dx_dt, ones))
        else:  # the backbone's own forward mode, along d/dt (c_in x, c_noise)
            (c_in, c_noise), (d_in, d_noise) = torch.func.jvp(
                lambda s: (self.schedule.coefficients(s)[2], self.schedule.c_noise(s)), (t,), (ones,))
            u, du = expand_like(c_in, x) * x, expand_like(d_in, x) * x + expand_like(c_in, x) * dx_dt
            raw, d_raw = tangent_rule(u, du, c_noise, d_noise)
        (c_skip, c_out), (d_skip, d_out) = torch.func.jvp(
            lambda s: self.schedule.coefficients(s)[:2], (t,), (ones,)
        )
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
