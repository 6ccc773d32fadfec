"""Few-step consistency samplers as small functions (Eq. 12), in the style of k-diffusion."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def default_times(schedule, steps: int, t_mid: float | None = None) -> list[float]:
    """[t_max] for one step, [t_max, t_mid] for two (t_mid defaults to the schedule's ``default_t_mid``)."""
    if steps == 1:
        return [schedule.t_max]
    if steps == 2:
        return [schedule.t_max, schedule.default_t_mid if t_mid is None else t_mid]
    raise ValueError(f"steps must be 1 or 2 (pass explicit times for more), got {steps}")


def sample(model, noise: Tensor, times: Sequence[float], *, generator: torch.Generator | None = None) -> Tensor:
    """Multistep consistency sampling (Eq. 12).

    x_{t_0} = prior_std * noise; x_0 <- f(x_{t_0}, t_0); then for each later t_k:
    x_{t_k} = alpha(t_k) x_0 + sigma(t_k) eps_k, x_0 <- f(x_{t_k}, t_k).

    Args:
        model: a :class:`ctcm.ConsistencyModel` (``model.schedule`` is used for the re-noising).
        noise: (B, C, H, W) standard normal draws for the first step.
        times: strictly decreasing times, the first at most ``t_max``.
    Returns:
        (B, C, H, W) samples (not clipped).
    """
    schedule = model.schedule
    if len(times) == 0:
        raise ValueError("times must hold at least one time")
    ts = torch.tensor(list(times), dtype=noise.dtype, device=noise.device)
    if ts[0] > schedule.t_max + 1e-9 or ts[-1] < schedule.t_min or (ts[1:] >= ts[:-1]).any():
        raise ValueError(
            f"times must decrease strictly within [t_min, t_max] = [{schedule.t_min}, {schedule.t_max}], got {list(times)}"
        )
    b = noise.shape[0]
    x = schedule.prior_std * noise
    x0 = model(x, ts[0].expand(b))
    for t in ts[1:]:
        eps = torch.randn(noise.shape, generator=generator, device=noise.device, dtype=noise.dtype)
        tb = t.expand(b)
        x = schedule.alpha(tb).view(-1, 1, 1, 1) * x0 + schedule.sigma(tb).view(-1, 1, 1, 1) * eps
        x0 = model(x, tb)
    return x0


def sample_onestep(model, noise: Tensor) -> Tensor:
    """x_0 = f(prior_std * noise, t_max): one network evaluation."""
    return sample(model, noise, default_times(model.schedule, 1))


def sample_twostep(model, noise: Tensor, t_mid: float | None = None, *,
                   generator: torch.Generator | None = None) -> Tensor:
    """Two evaluations: t_max, then ``t_mid`` (default: the schedule's ``default_t_mid``)."""
    return sample(model, noise, default_times(model.schedule, 2, t_mid), generator=generator)
