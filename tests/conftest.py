"""Shared fixtures: tiny models that run in milliseconds on CPU, and ``stub``, a backbone for core tests."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import Tensor, nn

import ctcm

TINY_WFNO = {"width": 8, "n_layers": 2, "modes": 4, "emb_dim": 16, "n_freqs": 4}
SCHEDULES = ["geometric", "trigflow", "linear"]

needs_neuralop = pytest.mark.skipif(importlib.util.find_spec("neuralop") is None,
                                    reason="needs the optional extra: pip install 'ctcm[neuralop]'")


@ctcm.register_backbone("stub")
class StubBackbone(ctcm.Backbone):
    """F(x, c; y) = tanh(a x + w c + b + E[y]), per channel: elementwise per sample (so the same image for any
    batch size, bit for bit), resolution-agnostic, optionally class-conditional (``n_classes`` > 0); with
    ``time_inputs=2``, c = (c_1, c_2) and w c = w c_1 + w_2 c_2 (a flow map's two times).
    Shapes: x (B, C, H, W), c_noise (B,) or (B, 2), y (B,) int -> (B, C, H, W)."""

    resolution_agnostic = True

    def __init__(self, in_channels: int = 3, out_channels: int | None = None, n_classes: int = 0,
                 time_inputs: int = 1) -> None:
        super().__init__()
        self.time_inputs = time_inputs
        self.time_r = nn.Parameter(torch.linspace(0.4, -0.2, in_channels)) if time_inputs == 2 else None
        self.in_channels, self.out_channels = in_channels, out_channels or in_channels
        if self.out_channels != in_channels:
            raise ValueError("the stub backbone maps C channels to C channels")
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, in_channels))
        self.time = nn.Parameter(torch.linspace(-0.3, 0.3, in_channels))
        self.bias = nn.Parameter(torch.zeros(in_channels))
        self.labels = nn.Embedding(n_classes, in_channels) if n_classes else None

    def forward(self, x: Tensor, c_noise: Tensor, y: Tensor | None = None) -> Tensor:
        if self.time_r is None:
            per_sample = c_noise[:, None] * self.time + self.bias  # (B, C)
        else:
            per_sample = c_noise[:, :1] * self.time + c_noise[:, 1:] * self.time_r + self.bias
        if y is not None:
            if self.labels is None:
                raise ValueError("class labels y given to an unconditional stub backbone (n_classes=0)")
            per_sample = per_sample + self.labels(y)
        return torch.tanh(x * self.scale[:, None, None] + per_sample[:, :, None, None])


def stub_model(schedule: str = "geometric", dtype: torch.dtype = torch.float64, resolution: int = 8,
               **backbone) -> ctcm.ConsistencyModel:
    """A 3x``resolution``^2 consistency model with the stub backbone, seeded, in ``dtype``."""
    torch.manual_seed(0)
    model = ctcm.build("wfno-cifar", backbone={"name": "stub", **backbone}, schedule=schedule, resolution=resolution)
    return model.to(dtype)


def tiny_model(schedule: str = "geometric", dtype: torch.dtype = torch.float64, resolution: int = 8,
               **backbone) -> ctcm.ConsistencyModel:
    """A 3x8x8 WFNO consistency model, seeded, in ``dtype``."""
    torch.manual_seed(0)
    model = ctcm.build("wfno-cifar", backbone={**TINY_WFNO, **backbone}, schedule=schedule, resolution=resolution)
    return model.to(dtype)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that takes ``schedule_name`` once per reference schedule (a parametrisation,
    so it combines with hypothesis)."""
    if "schedule_name" in metafunc.fixturenames:
        metafunc.parametrize("schedule_name", SCHEDULES)


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP hand-offs, which dominate on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
