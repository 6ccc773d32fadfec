"""Reproducible data order: which images (flips, label drops, resolution) each rank sees at each step.

Epoch e visits the images in the order of ``randperm(N, generator seeded by (seed, e))`` and flips
image j of that order when ``rand(N)[j] < 1/2`` (same generator); with label dropout p (classifier-free
guidance's p_uncond) it then replaces the label of image j by the null class when ``rand(N)[j] < p`` (a third
draw of the same generator, so the order and flips are those of a run without it). Global batch k of an epoch is
positions [k B, (k + 1) B) of the permutation (the last partial batch is dropped) and rank r of W takes
the r-th of W equal slices of it. The order is therefore a pure function of (seed, step): resuming at
step s reproduces it exactly, and W ranks together see the same global batch as one process.

Multi-resolution training (``data.resolutions``, several sizes): the batch of step k of epoch e is resized to
``resolutions[i_k]``, i_k the k-th of ``randint(len(resolutions), (steps per epoch,))`` drawn by a second
generator seeded by (seed, e) (so a run with one resolution keeps the order and flips it had before the option),
the same for every rank. The resize is bicubic with antialiasing (``F.interpolate``), clamped to [-1, 1].
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, Sampler
from ..config import ConfigError
from ..errors import UserError, UserValueError

EPOCH_STRIDE = 1_000_003  # a prime: keeps the per-epoch seeds of different run seeds apart
RESOLUTION_STREAM = 2**62  # offset of the resolution generator's seeds: a stream apart from the order's


class Item(NamedTuple):
    """One image of a step's batch: its index (``image``), whether to mirror it and drop its label, and the
    size to resize it to (0: as stored)."""

    image: int
    flip: bool
    drop: bool
    size: int = 0


def epoch_order(n: int, seed: int, epoch: int, flip: bool, label_dropout: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """(permutation (n,), flip flags (n,) bool, label-drop flags (n,) bool) of epoch ``epoch``."""
    g = torch.Generator().manual_seed(seed * EPOCH_STRIDE + epoch)
    perm = torch.randperm(n, generator=g)
    flips = torch.rand(n, generator=g) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    drops = torch.rand(n, generator=g) < label_dropout if label_dropout > 0 else torch.zeros(n, dtype=torch.bool)
    return perm, flips, drops


def epoch_resolutions(steps: int, seed: int, epoch: int, resolutions: Sequence[int]) -> list[int]:
    """The training resolution of each of the ``steps`` global batches of epoch ``epoch``."""
    if len(resolutions) < 2:
        return [resolutions[0] if resolutions else 0] * steps
    g = torch.Generator().manual_seed(RESOLUTION_STREAM + seed * EPOCH_STRIDE + epoch)
    return [resolutions[i] for i in torch.randint(len(resolutions), (steps,), generator=g).tolist()]


def resize(x: Tensor, size: int) -> Tensor:
    """Images (..., C, H, W) in [-1, 1] -> (..., C, size, size): bicubic, antialiased, clamped to [-1, 1]."""
    if size == 0 or tuple(x.shape[-2:]) == (size, size):
        return x
    lead = x.shape[:-3]
    y = F.interpolate(x.reshape(-1, *x.shape[-3:]), size=(size, size), mode="bicubic", antialias=True,
                      align_corners=False)
    return y.clamp(-1.0, 1.0).reshape(*lead, *y.shape[-3:])


def check_training_resolutions(model: Any, resolutions: list[int] | None) -> None:
    """``data.resolutions`` other than the model's need a resolution-agnostic backbone that runs at each of them
    (one forward of one image per size, before the run writes anything): one clear line otherwise."""
    other = [r for r in resolutions or () if r != model.resolution]
    if other and not model.backbone.resolution_agnostic:
        raise ConfigError(f"data.resolutions={resolutions} trains at {other}, but the backbone "
                          f"{type(model.backbone).__name__} works at {model.resolution}x{model.resolution} only: "
                          f"use a resolution-agnostic backbone (wfno, fno, unet) or data.resolutions=null")
    device, training = next(model.parameters()).device, model.training
    model.eval()  # the probe draws no dropout mask
    try:
        for r in other:
            try:
                with torch.no_grad():
                    model(torch.zeros(1, model.channels, r, r, device=device), model.schedule.t_max)
            except UserError as exc:
                raise ConfigError(f"data.resolutions: this model cannot train at {r}x{r} ({exc}); drop {r} from "
                                  f"data.resolutions") from exc
    finally:
        model.train(training)


class StepBatchSampler(Sampler[list[Item]]):
    """Yields this rank's ``[Item(image, flip, drop, size), ...]`` for steps ``start_step, start_step + 1,
    ...`` (endless).

    Args:
        n: dataset size; batch_size: the global batch B (divisible by ``world_size``, at most n).
        label_dropout: the probability that an item's label is replaced by the null class.
        resolutions: the training resolutions a step's batch is resized to (``()``: as stored).
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, start_step: int = 0, flip: bool = True,
                 rank: int = 0, world_size: int = 1, label_dropout: float = 0.0,
                 resolutions: Sequence[int] = ()) -> None:
        if batch_size % world_size:
            raise ConfigError(f"batch_size {batch_size} is not divisible by the {world_size} ranks; "
                              f"choose a multiple of {world_size}")
        if n < batch_size:
            raise ConfigError(f"the dataset has {n} images, fewer than one batch of {batch_size}; "
                              f"lower batch_size or use more data")
        self.n, self.batch_size, self.seed, self.start_step, self.flip = n, batch_size, seed, start_step, flip
        self.rank, self.world_size, self.label_dropout = rank, world_size, label_dropout
        self.resolutions = tuple(resolutions)
        self.steps_per_epoch = n // batch_size

    def __iter__(self) -> Iterator[list[Item]]:
        step = self.start_step
        local = self.batch_size // self.world_size
        while True:
            epoch, first = divmod(step, self.steps_per_epoch)
            order = epoch_order(self.n, self.seed, epoch, self.flip, self.label_dropout)
            perm, flips, drops = (v.tolist() for v in order)  # read once an epoch
            sizes = epoch_resolutions(self.steps_per_epoch, self.seed, epoch, self.resolutions)
            for k in range(first, self.steps_per_epoch):
                lo = k * self.batch_size + self.rank * local
                yield [Item(*item, sizes[k]) for item in zip(perm[lo:lo + local], flips[lo:lo + local],
                                                             drops[lo:lo + local])]
            step = (epoch + 1) * self.steps_per_epoch

    def __len__(self) -> int:  # endless; DataLoader only needs this for len(), which we never call
        raise TypeError("StepBatchSampler is endless")


class OrderedDataset(Dataset):
    """``ds[Item(i, flip, drop, size)]`` = ``ds[i]``, mirrored left-right when ``flip``, resized to ``size``
    (:func:`resize`; 0: as stored). Items (C, H, W); for a labelled ``base`` (items ``(x, y)``) and
    ``null_label`` set, ``(x, y)`` with y = ``null_label`` when ``drop``, so image and label travel together
    through the order, flips, resolutions and label dropout."""

    def __init__(self, base: Dataset, null_label: int | None = None) -> None:
        self.base, self.null_label = base, null_label

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, item: Item) -> Tensor | tuple[Tensor, Tensor]:
        index, flip, drop, size = Item(*item)
        x = self.base[index]
        y = None
        if isinstance(x, (tuple, list)):  # (image, label) datasets
            x, y = x[0], x[1]
        x = torch.as_tensor(x, dtype=torch.float32)
        x = resize(x.flip(-1) if flip else x, size)
        if self.null_label is None:
            return x
        if y is None:
            raise UserValueError("a conditional run needs a labelled dataset, items (image, label)")
        return x, torch.tensor(self.null_label if drop else int(y), dtype=torch.int64)
