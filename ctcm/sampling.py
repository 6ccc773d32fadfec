"""Sampling in one place (after k-diffusion's ``sampling.py``): the multistep sampler (Eq. 12), the seed
rule, batches over ranks, and the uint8 conversion of images.

Samplers are free functions of what they need: a consistency function ``f(x, t, **cond)`` (any callable;
:class:`ctcm.ConsistencyModel` is one), the noise schedule, the image shape, and where to draw. This module
knows nothing of the model class (``ctcm.model`` imports it, never the reverse); the model's
:meth:`~ctcm.ConsistencyModel.sample` and :meth:`~ctcm.ConsistencyModel.sample_batches` fill these in.

The seed rule: image i of a run with seed s is a function of (s, i) alone. Image i owns a CPU generator
seeded with ``SeedSequence([s, i])``; its first draw is the starting noise, its k-th the re-noising eps of
step k. Images therefore do not depend on the batch size, on how batches are spread over ranks, or on
which device runs the network (the draws are made on the CPU in float32 and then moved). Bits of the
network's own arithmetic may still depend on the batch size for batch-size-dependent kernels.

Class labels follow the same rule (:func:`class_labels`): the label of image i of a class-balanced set is a
function of (s, i) (and the number of classes K) alone, every block of K consecutive images holding each
class once, so any prefix of n K images is exactly balanced. :func:`guided` turns a class-conditional
consistency function into its classifier-free guided combination (Eq. 32).

Every caller samples through :func:`sample_batches`: ``ctcm sample``, training grids, in-training FID and
:meth:`ctcm.ConsistencyModel.sample`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import UserValueError
from .interfaces import NoiseSchedule

Cond = Mapping[str, Tensor]
#: a consistency function f(x (B, C, H, W), t (B,), **cond) -> the clean-image estimate (B, C, H, W)
ConsistencyFunction = Callable[..., Tensor]
#: the step counts :func:`default_times` knows (more steps: pass explicit times)
SAMPLING_STEPS = (1, 2)


def default_times(schedule: NoiseSchedule, steps: int, t_mid: float | None = None) -> list[float]:
    """[t_max] for one step, [t_max, t_mid] for two (t_mid defaults to the schedule's ``default_t_mid``)."""
    if steps == 1:
        return [schedule.t_max]
    if steps == 2:
        return [schedule.t_max, schedule.default_t_mid if t_mid is None else t_mid]
    raise UserValueError(f"steps must be 1 or 2 (pass explicit times for more), got {steps}")


def multistep_sample(f: ConsistencyFunction, noise: Tensor, times: Sequence[float], *, schedule: NoiseSchedule,
                     noise_sampler: Callable[[], Tensor] | None = None, cond: Cond | None = None) -> Tensor:
    """Multistep consistency sampling (Eq. 12).

    x_{t_0} = prior_std * noise; x_0 <- f(x_{t_0}, t_0); then for each later t_k:
    x_{t_k} = alpha(t_k) x_0 + sigma(t_k) eps_k, x_0 <- f(x_{t_k}, t_k).

    Args:
        f: the consistency function, called ``f(x, t, **cond)`` with x (B, C, H, W) and t (B,).
        noise: (B, C, H, W) standard normal draws for the first step.
        times: strictly decreasing times within [t_min, t_max] of ``schedule``.
        schedule: the noise schedule of ``f`` (prior_std, alpha, sigma for the re-noising).
        noise_sampler: returns eps_k (B, C, H, W) for each later step (default ``torch.randn_like(noise)``).
        cond: conditioning passed to every call of ``f``, tensors (B, ...), e.g. ``{"y": labels}``.
    Returns:
        (B, C, H, W) samples (not clipped).
    """
    if len(times) == 0:
        raise UserValueError("times must hold at least one time")
    ts = torch.tensor(list(times), dtype=noise.dtype, device=noise.device)
    if ts[0] > schedule.t_max + 1e-9 or ts[-1] < schedule.t_min or (ts[1:] >= ts[:-1]).any():
        raise UserValueError(f"times must decrease strictly within [t_min, t_max] = [{schedule.t_min}, "
                             f"{schedule.t_max}], got {list(times)}")
    cond = dict(cond or {})
    draw = noise_sampler if noise_sampler is not None else (lambda: torch.randn_like(noise))
    b = noise.shape[0]
    x0 = f(schedule.prior_std * noise, ts[0].expand(b), **cond)
    for t in ts[1:]:
        tb = t.expand(b)
        x = schedule.alpha(tb).view(-1, 1, 1, 1) * x0 + schedule.sigma(tb).view(-1, 1, 1, 1) * draw()
        x0 = f(x, tb, **cond)
    return x0


def guided(f: ConsistencyFunction, guidance: float | None, null_class: int) -> ConsistencyFunction:
    """``f`` itself (``guidance`` None or 1), else the classifier-free combination of Eq. 32,
    f_w(x, t; y) = f(x, t; null) + w (f(x, t; y) - f(x, t; null)) (two calls of ``f``; w = 0: the
    unconditional model), for a class-conditional ``f`` whose label ``null_class`` means "no class". What it
    means for a consistency function, and why not at one step: docs/training.md, "Guidance".
    Shapes: x (B, C, H, W), t (B,), y (B,) -> (B, C, H, W)."""
    if guidance is None or guidance == 1.0:
        return f

    def combined(x: Tensor, t: Tensor, **cond: Tensor) -> Tensor:
        y = cond.get("y")
        if y is None:
            raise UserValueError(f"guidance={guidance} needs class labels cond={{'y': ...}} to guide towards")
        f_null = f(x, t, **{**cond, "y": torch.full_like(y, null_class)})
        return f_null + guidance * (f(x, t, **cond) - f_null)

    return combined


def class_labels(seed: int, start: int, stop: int, num_classes: int) -> Tensor:
    """Class-balanced labels of images [start, stop) of run ``seed``, int64 (stop - start,).

    Images [b K, (b + 1) K) (block b, K = ``num_classes``) hold every class once, in the order of the
    permutation drawn from ``SeedSequence([seed, b, K, 1])`` (apart from :func:`image_seed`'s two-word
    sequences): the label of image i depends on (seed, i, K) only, like its noise."""
    if num_classes < 1:
        raise UserValueError(f"class-balanced labels need num_classes >= 1, got {num_classes}")
    if start < 0 or stop < start:
        raise UserValueError(f"expected 0 <= start <= stop, got [{start}, {stop})")
    blocks = range(start // num_classes, -(-stop // num_classes))
    perms = [np.random.default_rng(np.random.SeedSequence([seed, b, num_classes, 1])).permutation(num_classes)
             for b in blocks]
    labels = np.concatenate(perms) if perms else np.zeros(0, np.int64)
    offset = blocks.start * num_classes
    return torch.from_numpy(labels[start - offset:stop - offset].astype(np.int64))


def class_cond(num_classes: int, seed: int, n: int, label: int | None = None) -> dict[str, Tensor]:
    """The conditioning of images 0..n-1 of run ``seed`` of a model with ``num_classes`` classes: ``{}`` for
    an unconditional one (0), else ``{"y": ...}`` with the class-balanced :func:`class_labels` (``label``
    None) or class ``label`` for every image."""
    if not num_classes:
        if label is not None:
            raise UserValueError(f"class {label} asked of an unconditional model (model.num_classes=0); drop the class")
        return {}
    if label is not None:
        if not 0 <= label < num_classes:
            raise UserValueError(f"class {label} is out of range: this model has classes 0..{num_classes - 1}")
        return {"y": torch.full((n,), label, dtype=torch.int64)}
    return {"y": class_labels(seed, 0, n, num_classes)}


def image_seed(seed: int, index: int) -> int:
    """The 64-bit seed of image ``index`` of run ``seed``: ``SeedSequence([seed, index])`` (well mixed)."""
    if seed < 0 or index < 0:
        raise UserValueError(f"seed and image index must be non-negative, got seed={seed}, index={index}")
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0])


class ImageNoise:
    """Standard normal draws for images ``indices`` of run ``seed``: each call returns the next draw of
    every image, (len(indices), *shape), draw k of image i depending only on (seed, i, k)."""

    def __init__(self, seed: int, indices: range, shape: Sequence[int], *, device: torch.device,
                 dtype: torch.dtype) -> None:
        self.generators = [torch.Generator().manual_seed(image_seed(seed, i)) for i in indices]
        self.shape, self.device, self.dtype = tuple(shape), device, dtype

    def __call__(self) -> Tensor:
        draws = [torch.randn(self.shape, generator=g) for g in self.generators]
        return torch.stack(draws).to(self.device, self.dtype)


@torch.no_grad()
def sample_range(f: ConsistencyFunction, start: int, stop: int, *, schedule: NoiseSchedule, shape: Sequence[int],
                 seed: int, times: Sequence[float], device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, cond: Cond | None = None, clip: bool = True) -> Tensor:
    """Images [start, stop) of run ``seed``, (stop - start, *shape) in [-1, 1] when ``clip``.

    ``shape`` is one image's (C, H, W); the draws are moved to ``device`` / ``dtype`` (those of ``f``'s
    weights); ``cond`` holds this range's conditioning, tensors (stop - start, ...)."""
    device = torch.device(device)
    noise = ImageNoise(seed, range(start, stop), shape, device=device, dtype=dtype)
    cond = {k: v.to(device) for k, v in (cond or {}).items()}
    x = multistep_sample(f, noise(), times, schedule=schedule, noise_sampler=noise, cond=cond)
    return x.clamp(-1, 1) if clip else x


def sample_batches(f: ConsistencyFunction, n: int, *, schedule: NoiseSchedule, shape: Sequence[int], seed: int = 0,
                   steps: int = 1, t_mid: float | None = None, times: Sequence[float] | None = None,
                   batch_size: int = 250, rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32, cond: Cond | None = None,
                   clip: bool = True) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(first_index, images)`` for this rank's share of images 0..n-1, images (b, *shape).

    Batch k holds images [k batch_size, (k + 1) batch_size) and goes to rank k mod world_size. ``times``
    (explicit) or ``steps``/``t_mid`` (see :func:`default_times`) choose the sampler; ``cond`` holds the
    conditioning of all n images, tensors (n, ...), sliced per batch. See :func:`sample_range` for the rest.
    """
    if n < 1 or batch_size < 1:
        raise UserValueError(f"n and batch_size must be positive, got n={n}, batch_size={batch_size}")
    for key, value in (cond or {}).items():
        if value.shape[0] != n:
            raise UserValueError(f"cond[{key!r}] has {value.shape[0]} rows for {n} images")
    times = default_times(schedule, steps, t_mid) if times is None else list(times)
    for k in range(rank, -(-n // batch_size), world_size):
        start, stop = k * batch_size, min((k + 1) * batch_size, n)
        part = {key: value[start:stop] for key, value in (cond or {}).items()}
        yield start, sample_range(f, start, stop, schedule=schedule, shape=shape, seed=seed, times=times,
                                  device=device, dtype=dtype, cond=part, clip=clip)


def sample_all(f: ConsistencyFunction, n: int, **options: Any) -> Tensor:
    """All of this rank's images of :func:`sample_batches` (same ``options``) in one tensor (one rank: all n)."""
    return torch.cat([x for _, x in sample_batches(f, n, **options)])


def to_uint8(x: Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> (B, H, W, C) uint8 as saving PNGs does: floor(x * 127.5 + 128) in [0, 255].

    The one conversion used for PNG files, ``.npz`` sample sets, grids and FID features."""
    if x.ndim != 4:
        raise UserValueError(f"expected images (B, C, H, W), got shape {tuple(x.shape)}")
    u8 = (x.detach().float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return u8.permute(0, 2, 3, 1).cpu().numpy()
