"""Side-by-side timing: interleaved repeats, medians, device synchronisation, activation memory."""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager, nullcontext
from contextlib import AbstractContextManager
from collections.abc import Callable, Iterator

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels (CUDA); a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fns: dict[str, Callable[[], object]], *, device: torch.device, warmup: int = 1,
            repeats: int = 5, clock: str = "wall") -> dict[str, dict[str, float]]:
    """Time every callable of ``fns`` side by side.

    After ``warmup`` untimed rounds, ``repeats`` rounds each call every function once, in an order that
    alternates (forward, then reversed) so that slow drifts of a noisy machine hit all of them alike.
    Two clocks are read around each (synchronised) call: wall time and this process's CPU time (all
    threads; insensitive to other processes taking the cores, the usual noise of a shared CPU machine).
    Returns {name: {"median_s", "min_s", "max_s" (of the ``clock`` chosen, ``wall`` or ``cpu``),
    "wall_median_s", "cpu_median_s"}}.
    """
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    synchronize(device)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(max(1, repeats)):
        for name in names if r % 2 == 0 else reversed(names):
            synchronize(device)
            w0, c0 = time.perf_counter(), time.process_time()
            fns[name]()
            synchronize(device)
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    out = {}
    for n in names:
        main = wall[n] if clock == "wall" else cpu[n]
        out[n] = {"median_s": statistics.median(main), "min_s": min(main), "max_s": max(main),
                  "wall_median_s": statistics.median(wall[n]), "cpu_median_s": statistics.median(cpu[n])}
    return out


@contextmanager
def saved_tensor_bytes() -> Iterator[list[int]]:
    """Count the bytes autograd saves for backward inside the block (activation memory, any device).

    Yields a one-element list holding the running total. Tensors saved twice count twice (an upper
    bound of what the allocator holds).
    """
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield total


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float | None:
    """Peak CUDA memory allocated during ``fn()`` above what was allocated before, in MiB; None on CPU."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def precision_context(device: torch.device, precision: str) -> AbstractContextManager:
    """``fp32``: nothing; ``bf16``: autocast to bfloat16 on ``device`` (weights stay fp32)."""
    if precision == "fp32":
        return nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"unknown precision {precision!r}; use fp32 or bf16")


def matmul_flops(device: torch.device, precision: str, n: int, *, warmup: int = 1,
                 repeats: int = 5, clock: str = "wall") -> dict[str, float]:
    """Achieved FLOP/s of an n x n x n matrix product (2 n^3 FLOPs): the machine's reference rate."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = measure({"mm": lambda: a @ b}, device=device, warmup=warmup, repeats=repeats, clock=clock)["mm"]["median_s"]
    return {"n": n, "seconds": t, "flops_per_s": 2 * n**3 / t}
