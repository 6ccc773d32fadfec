"""Reproducible data order: which images (and flips) each rank sees at each step.

Epoch e visits the images in the order of ``randperm(N, generator seeded by (seed, e))`` and flips
image j of that order when ``rand(N)[j] < 1/2`` (same generator). Global batch k of an epoch is
positions [k B, (k + 1) B) of the permutation (the last partial batch is dropped) and rank r of W takes
the r-th of W equal slices of it. The order is therefore a pure function of (seed, step): resuming at
step s reproduces it exactly, and W ranks together see the same global batch as one process.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler
from ..config import ConfigError

EPOCH_STRIDE = 1_000_003  # a prime: keeps the per-epoch seeds of different run seeds apart


def epoch_order(n: int, seed: int, epoch: int, flip: bool) -> tuple[Tensor, Tensor]:
    """(permutation (n,), flip flags (n,) bool) of epoch ``epoch``."""
    g = torch.Generator().manual_seed(seed * EPOCH_STRIDE + epoch)
    perm = torch.randperm(n, generator=g)
    flips = torch.rand(n, generator=g) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return perm, flips


class StepBatchSampler(Sampler[list[tuple[int, bool]]]):
    """Yields this rank's ``[(index, flip), ...]`` for steps ``start_step, start_step + 1, ...`` (endless).

    Args:
        n: dataset size; batch_size: the global batch B (divisible by ``world_size``, at most n).
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, start_step: int = 0, flip: bool = True,
                 rank: int = 0, world_size: int = 1) -> None:
        if batch_size % world_size:
            raise ConfigError(f"batch_size {batch_size} is not divisible by the {world_size} ranks; "
                              f"choose a multiple of {world_size}")
        if n < batch_size:
            raise ConfigError(f"the dataset has {n} images, fewer than one batch of {batch_size}; "
                              f"lower batch_size or use more data")
        self.n, self.batch_size, self.seed, self.start_step, self.flip = n, batch_size, seed, start_step, flip
        self.rank, self.world_size = rank, world_size
        self.steps_per_epoch = n // batch_size

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        step = self.start_step
        local = self.batch_size // self.world_size
        while True:
            epoch, first = divmod(step, self.steps_per_epoch)
            perm, flips = (v.tolist() for v in epoch_order(self.n, self.seed, epoch, self.flip))  # once an epoch
            for k in range(first, self.steps_per_epoch):
                lo = k * self.batch_size + self.rank * local
                yield list(zip(perm[lo:lo + local], flips[lo:lo + local]))
            step = (epoch + 1) * self.steps_per_epoch

    def __len__(self) -> int:  # endless; DataLoader only needs this for len(), which we never call
        raise TypeError("StepBatchSampler is endless")


class FlippedDataset(Dataset):
    """``ds[(i, flip)]`` = ``ds[i]``, mirrored left-right when ``flip``. Items (C, H, W)."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, bool]) -> Tensor:
        index, flip = item
        x = self.base[index]
        if isinstance(x, (tuple, list)):  # (image, label) datasets: keep the image
            x = x[0]
        x = torch.as_tensor(x, dtype=torch.float32)
        return x.flip(-1) if flip else x
