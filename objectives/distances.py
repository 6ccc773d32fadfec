"""Per-sample distances and time weightings shared by the reference objectives (Eq. 13)."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from ctcm.errors import UserValueError

DISTANCES = ("l2", "pseudo_huber")


def per_sample_distance(a: Tensor, b: Tensor, kind: str = "l2", huber_c: float | None = None) -> Tensor:
    """d(a, b) for each sample, (B, ...) -> (B,).

    ``l2``: mean over elements of (a - b)^2. ``pseudo_huber``: sqrt(||a - b||^2 + c^2) - c with
    c = 0.00054 sqrt(D) by default (iCT), divided by D so both kinds share a scale per element. Computed in
    float32 at least (docs/architecture.md, "Precision").
    """
    diff = (a.float() - b.float()).flatten(1)  # fp32 under bf16 autocast: the loss is a small difference
    dim = diff.shape[1]
    if kind == "l2":
        return diff.pow(2).mean(1)
    if kind == "pseudo_huber":
        c = 0.00054 * math.sqrt(dim) if huber_c is None else huber_c
        return (torch.sqrt(diff.pow(2).sum(1) + c**2) - c) / dim
    raise UserValueError(f"unknown distance {kind!r}; choose one of {DISTANCES}")


def check_distance(kind: str) -> None:
    if kind not in DISTANCES:
        raise UserValueError(f"unknown distance {kind!r}; choose one of {DISTANCES}")
