"""Total time derivatives of f(x_t, t) along a path, by forward-mode AD (Eq. 10)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from .errors import UserTypeError, UserValueError


def total_derivative(fn: Callable[[Tensor, Tensor], Tensor], x_t: Tensor, t: Tensor,
                     dx_dt: Tensor) -> tuple[Tensor, Tensor]:
    """(f, df/dt) with df/dt = d/dt f(x(t), t) = J_x f . dx/dt + d_t f, one ``torch.func.jvp``.

    Args:
        fn: f(x, t), e.g. a :class:`ctcm.ConsistencyModel`. Must not be DDP-wrapped (pass ``.module``).
        x_t: (B, C, H, W) the point on the path.
        t: (B,) times.
        dx_dt: (B, C, H, W) the path velocity at (x_t, t).
    Returns:
        f(x_t, t) and its total derivative, both (B, C, H, W).

    Gradients with respect to parameters still flow through the primal output when autograd is on; wrap
    the call in ``torch.no_grad()`` when only the tangent is needed (it halves the memory).
    """
    if isinstance(fn, torch.nn.parallel.DistributedDataParallel):
        raise UserTypeError(
            "torch.func.jvp cannot run through DistributedDataParallel; pass model.module. Gradients through "
            "its output then bypass DDP's synchronisation: use it under torch.no_grad() for the tangent only, "
            "as the tangent objective does, and take the differentiable forward through the DDP wrapper."
        )
    if dx_dt.shape != x_t.shape:
        raise UserValueError(f"dx_dt has shape {tuple(dx_dt.shape)} but x_t has {tuple(x_t.shape)}")
    f, df_dt = torch.func.jvp(fn, (x_t, t), (dx_dt, torch.ones_like(t)))[:2]
    return f, df_dt
