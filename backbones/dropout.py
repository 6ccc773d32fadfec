"""Dropout whose mask is shared by every forward of a training step (online, target and JVP passes)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ctcm.runtime import rank_world


class SharedDropout(nn.Module):
    """Element-wise dropout with 1 / (1 - p) rescaling whose mask is drawn once per training step.

    Consistency training compares f_theta at two times with the *same* network: ECT and iCT share the
    dropout mask between the online and the target branch, and the tangent's JVP must differentiate the
    same function. :meth:`resample_noise_` (called once per step by :class:`ctcm.Objective`) forgets the
    mask; the next forward draws one shaped like its input from the given generator, and every forward
    until the next resample reuses it. Identity in eval mode or with p = 0. Dropout is linear, so a
    (value, tangent) pair uses the same mask on both: :meth:`packed`. Under ``torch.distributed`` the mask is
    drawn for the global batch (world size x the local batch) and each rank keeps its slice, as the objective's
    own draws are, so W ranks see the masks of one process.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p
        self._mask: Tensor | None = None
        self._generator: torch.Generator | None = None

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def resample_noise_(self, generator: torch.Generator | None = None) -> None:
        self._mask, self._generator = None, generator

    def mask_for(self, z: Tensor) -> Tensor:
        """The step's mask for an input shaped like ``z`` (drawn on first use; this rank's slice of the global one)."""
        if self._mask is None or self._mask.shape != z.shape:
            device = self._generator.device if self._generator is not None else z.device
            rank, world = rank_world()
            b = z.shape[0]
            keep = torch.full((b * world, *z.shape[1:]), 1.0 - self.p, device=device)
            mask = torch.bernoulli(keep, generator=self._generator)[rank * b:(rank + 1) * b]
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
