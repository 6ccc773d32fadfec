"""The sizes each mode runs: ``smoke`` (seconds, for the tests), ``quick`` (minutes on a CPU), ``full``."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

RECIPES = ("wfno-cifar", "fno-cifar", "unet-cifar")

# Tiny backbones with each recipe's structure, for --smoke (the real recipes take seconds per forward).
SMOKE_BACKBONES: dict[str, dict[str, Any]] = {
    "wfno-cifar": {"width": 8, "n_layers": 1, "modes": 4},
    "fno-cifar": {"width": 8, "n_layers": 1, "modes": 4, "time_channels": 4},
    "unet-cifar": {"model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "emb_dim": 16},
}


# Trainer throughput on a GPU: the default recipe's batch, bf16 eager / compiled, fp32 eager
GPU_TRAIN_GRID = [(512, "bf16", False), (512, "bf16", True), (512, "fp32", False)]
SMOKE_TRAIN = ["model.backbone.width=8", "model.backbone.n_layers=1", "model.backbone.modes=4",
               "model.backbone.emb_dim=16", "model.resolution=16"]


@dataclass
class Settings:
    """What one run measures.

    ``fft_configs``: (width, modes, resolution, batch) of the spectral-layer section. ``model_batch``:
    batch of the JVP / training / sampling section. ``backbone_overrides``: per-recipe backbone kwargs
    (smoke only). ``precisions``: ``fp32`` and, on GPU, ``bf16`` (autocast). ``clock``: ``wall`` or
    ``cpu`` (process CPU time, the default on CPU devices; see :func:`benchmarks.timing.measure`).
    """

    mode: str
    fft_configs: list[tuple[int, int, int, int]]
    model_batch: int
    warmup: int
    repeats: int
    model_repeats: int
    matmul_n: int
    precisions: tuple[str, ...] = ("fp32",)
    recipes: tuple[str, ...] = RECIPES
    backbone_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    clock: str = "wall"
    model_resolution: int | None = None  # None: the recipe's (32); smoke uses 16
    # (batch, precision, compile) of the trainer-throughput section; train_overrides: config overrides
    train_grid: list[tuple[int, str, bool]] = field(default_factory=list)
    train_overrides: list[str] = field(default_factory=list)


def settings_for(mode: str, device_type: str) -> Settings:
    """The :class:`Settings` of ``mode`` (smoke | quick | full) on a ``cpu`` or ``cuda`` device."""
    gpu = device_type == "cuda"
    precisions = ("fp32", "bf16") if gpu else ("fp32",)
    if mode == "smoke":
        return Settings("smoke", [(8, 4, 16, 2)], model_batch=2, warmup=0, repeats=1, model_repeats=1,
                        matmul_n=64, backbone_overrides=SMOKE_BACKBONES, model_resolution=16,
                        train_grid=[(4, "fp32", False)], train_overrides=SMOKE_TRAIN)
    if mode == "quick":
        if gpu:
            grid = list(itertools.product((32, 64, 128, 256), (8, 16), (32, 64), (64,)))
            return Settings("quick", grid, model_batch=64, warmup=3, repeats=10, model_repeats=5,
                            matmul_n=4096, precisions=precisions, train_grid=GPU_TRAIN_GRID)
        grid = [(32, 16, 32, 4), (128, 12, 32, 4), (128, 16, 32, 4), (256, 16, 32, 4), (128, 16, 64, 4)]
        return Settings("quick", grid, model_batch=4, warmup=1, repeats=5, model_repeats=5, matmul_n=1024,
                        train_grid=[(8, "fp32", False)])
    if mode == "full":
        batches = (32, 128) if gpu else (8, 32)
        grid = list(itertools.product((32, 64, 128, 256), (8, 12, 16), (32, 64), batches))
        return Settings("full", grid, model_batch=128 if gpu else 16, warmup=3 if gpu else 1,
                        repeats=20 if gpu else 5, model_repeats=10 if gpu else 5,
                        matmul_n=8192 if gpu else 2048, precisions=precisions,
                        train_grid=GPU_TRAIN_GRID if gpu else [(8, "fp32", False), (8, "fp32", True)])
    raise ValueError(f"unknown mode {mode!r}; use smoke, quick or full")
