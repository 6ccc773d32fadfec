"""Dropout whose mask is shared by every forward of a training step (online, target and JVP passes)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ctcm.errors import UserValueError


class SharedDropout(nn.Module):
    """Element-wise dropout with 1 / (1 - p) rescaling whose mask is drawn once per training step.

    Consistency training compares f_theta at two times with the *same* network: ECT and iCT share the
    dropout mask between the online and the target branch, and the tangent's JVP must differentiate the
    same function. :meth:`resample_noise_` (called once per step by :class:`ctcm.Objective`) forgets the
    mask; the next forward draws one shaped like its input from the given generator, and every forward
    until the next resample reuses it. Identity in eval mode or with p = 0. Dropout is linear, so a
    (value, tangent) pair uses the same mask on both: :meth:`packed`.

    The mask is per sample. Under DDP rank r of W holds samples [r B, (r + 1) B) of the global batch of
    W B, and the generator is in the same state on every rank: the mask is drawn for the global batch,
    (W B, ...), and each rank keeps its slice, so W ranks apply the masks of one process.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise UserValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p
        self._mask: Tensor | None = None
        self._generator: torch.Generator | None = None
        self._rank, self._world_size = 0, 1

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def resample_noise_(self, generator: torch.Generator | None = None, *, rank: int = 0, world_size: int = 1) -> None:
        """Forget the mask; the next forward draws rank ``rank``'s slice of a mask for ``world_size`` ranks."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
        self._mask, self._generator = None, generator
        self._rank, self._world_size = rank, world_size

    def mask_for(self, z: Tensor) -> Tensor:
        """The step's mask for an input shaped like ``z`` (B, ...) (drawn on first use, for the global batch)."""
        if self._mask is None or self._mask.shape != z.shape:
            device = self._generator.device if self._generator is not None else z.device
            b = z.shape[0]
            keep = torch.full((b * self._world_size, *z.shape[1:]), 1.0 - self.p, device=device)
            mask = torch.bernoulli(keep, generator=self._generator)[self._rank * b:(self._rank + 1) * b]
            self._mask = (mask / (1.0 - self.p)).to(z.device)
        return self._mask.to(z.dtype)

    def forward(self, z: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return z
        return z * self.mask_for(z)

    def packed(self, zz: Tensor) -> Tensor:
        """dropout of a packed (value, tangent) pair [z; dz] (2B, ...): one mask, drawn for z, on both halves."""
        if not self.training or self.p == 0.0:
            return zz
        z = zz[: zz.shape[0] // 2]
        return (zz.view(2, *z.shape) * self.mask_for(z)).view_as(zz)
