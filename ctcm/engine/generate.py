"""Reproducible batched sampling: image i depends only on (seed, i // batch_size, steps), not on ranks."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

BATCH_STRIDE = 1_000_003


def batch_generator(seed: int, batch_index: int, device: torch.device) -> torch.Generator:
    """The generator of batch ``batch_index``: seeded with ``seed * 1_000_003 + batch_index``."""
    return torch.Generator(device=device).manual_seed(seed * BATCH_STRIDE + batch_index)


@torch.no_grad()
def sample_batches(model: nn.Module, n: int, *, steps: int = 1, seed: int = 0, batch_size: int = 250,
                   device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1
                   ) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(first_index, images)`` for this rank's share of n images, images (b, C, R, R) in [-1, 1].

    Batch k holds images [k batch_size, (k + 1) batch_size) and goes to rank k mod world_size, so the
    union over ranks is the same n images for any world size (at a fixed ``batch_size``).
    """
    device = torch.device(device)
    for k in range(rank, -(-n // batch_size), world_size):
        b = min(batch_size, n - k * batch_size)
        gen = batch_generator(seed, k, device)
        yield k * batch_size, model.sample(b, steps=steps, generator=gen, device=device)


def sample_all(model: nn.Module, n: int, **kwargs) -> Tensor:
    """All n images of :func:`sample_batches` in one tensor (n, C, R, R)."""
    return torch.cat([x for _, x in sample_batches(model, n, **kwargs)])
