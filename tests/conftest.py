"""Shared fixtures: tiny models that run in milliseconds on CPU."""

from __future__ import annotations

import pytest
import torch

import ctcm

TINY_WFNO = {"width": 8, "n_layers": 2, "modes": 4, "emb_dim": 16, "n_freqs": 4}
SCHEDULES = ["geometric", "trigflow"]


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
