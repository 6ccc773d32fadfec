"""Section 4: the trainer's real training throughput (images/s) for the default CIFAR recipe.

A :class:`ctcm.engine.Trainer` is built from ``examples/cifar10/configs/default_cifar.yaml`` (model,
objective consistency + 0.1 tangent, AdamW, EMA, grad clipping, spectral weight-drop) with the batch
size, precision and ``compile`` under test, and its own optimiser step (``Trainer._train_step``: autocast,
objective, backward, clip, AdamW, EMA update) is timed on one device-resident batch, under the run's
determinism setting. Data loading is left out (the batch is already on the device). The first step
(compilation included when ``compile`` is on) is reported separately as ``first_step_s``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

import torch
from torch.utils.data import Dataset

from .timing import measure, synchronize

DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "examples" / "cifar10" / "configs" / "default_cifar.yaml"
QUIET = ["log_every=1000000", "sample_every=0", "checkpoint_every=0", "eval.learning_samples=0", "eval.grid=0",
         "eval.fid_every=0", "data.num_workers=0", "optim.warmup_steps=1"]


class RandomImages(Dataset):
    """n random images (C, R, R) in [-1, 1]: the trainer needs a dataset; throughput does not read it."""

    def __init__(self, n: int, channels: int, resolution: int) -> None:
        self.x = torch.rand(n, channels, resolution, resolution) * 2 - 1

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


def train_throughput(batch: int, precision: str, compile_model: bool | str, device: torch.device, *,
                     steps: int = 10, warmup: int = 2, overrides: list[str] | None = None,
                     clock: str = "wall") -> dict[str, Any]:
    """Images/s of the trainer's step for the default recipe.

    Args:
        batch: global batch size. precision: ``bf16`` (autocast, CUDA only, as the trainer) or ``fp32``.
        compile_model: ``False``, ``True`` (the trainer's ``compile: true``: inductor) or a backend name
            passed to :func:`ctcm.compile_backbone` (e.g. ``aot_eager``: the same code path without C++
            compilation, for the CPU smoke test).
        steps, warmup: timed and untimed steps after the first one. overrides: extra ``key=value`` config
            overrides (e.g. a tiny backbone).
    Returns {"batch", "precision", "compile", "images_per_s", "step_s", "first_step_s", "error"}.
    """
    from ctcm.engine import Trainer, load_train_config

    row: dict[str, Any] = {"batch": batch, "precision": precision, "compile": compile_model, "error": None}
    cfg = load_train_config(DEFAULT_RECIPE, QUIET + [f"batch_size={batch}", f"precision={precision}",
                                                    f"compile={str(compile_model is True).lower()}",
                                                    f"device={device.type}", *(overrides or [])])
    res = cfg.model.resolution or 32
    with tempfile.TemporaryDirectory() as out, _determinism(cfg.deterministic):
        trainer = Trainer(cfg, out, dataset=RandomImages(batch, 3, res), heldout=RandomImages(2, 3, res),
                          progress=False)
        if isinstance(compile_model, str):
            import ctcm

            ctcm.compile_backbone(trainer.model, backend=compile_model)
        x0 = torch.rand(batch, 3, res, res, device=trainer.device) * 2 - 1
        step: Callable[[], object] = lambda: trainer._train_step(x0, {})
        t0 = time.perf_counter()
        step()
        synchronize(trainer.device)
        row["first_step_s"] = time.perf_counter() - t0
        t = measure({"step": step}, device=trainer.device, warmup=warmup, repeats=steps, clock=clock)["step"]
    row["step_s"] = t["median_s"]
    row["images_per_s"] = batch / t["median_s"]
    return row


class _determinism:
    """``cfg.deterministic`` as ``Trainer.run`` applies it, restored on exit."""

    def __init__(self, on: bool) -> None:
        self.on = on

    def __enter__(self) -> None:
        self.old = (torch.are_deterministic_algorithms_enabled(),
                    torch.is_deterministic_algorithms_warn_only_enabled())
        if self.on:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)

    def __exit__(self, *exc: object) -> None:
        torch.use_deterministic_algorithms(self.old[0], warn_only=self.old[1])


def run_throughput(grid: list[tuple[int, str, bool | str]], device: torch.device, *, steps: int, warmup: int,
                   overrides: list[str] | None = None, clock: str = "wall",
                   log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """:func:`train_throughput` over (batch, precision, compile) triples; a failure is recorded, not raised."""
    rows = []
    for batch, precision, compiled in grid:
        log(f"[train] batch={batch} {precision} compile={compiled}")
        try:
            rows.append(train_throughput(batch, precision, compiled, device, steps=steps, warmup=warmup,
                                         overrides=overrides, clock=clock))
        except Exception as exc:  # recorded in the results
            rows.append({"batch": batch, "precision": precision, "compile": compiled,
                         "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"})
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows
