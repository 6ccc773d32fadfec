"""Learning-rate schedule: linear warm-up, then cosine decay."""

from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, warmup_steps: int, decay_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    r(s) = (s + 1) / W for s < W; then m + (1 - m) (1 + cos(pi p)) / 2 with p = (s - W) / (D - W)
    clipped to [0, 1], m = ``min_ratio``, W = ``warmup_steps``, D = ``decay_steps``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, decay_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, decay_steps: int,
                    min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`warmup_cosine`; its state (the step count) goes into checkpoints."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup_steps, decay_steps, min_ratio))
