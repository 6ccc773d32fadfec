"""Process groups under ``torchrun``, and the collective helpers of the training loop.

Under DDP every rank gets B/W images of a global batch of B. The trainer calls the objective with
``rank``/``world_size``: the per-sample randomness (t, eps, the consistency gap) is drawn for all B images
from a generator that is identical on every rank, and each rank keeps its own slice
(:class:`ctcm.ObjectiveContext`); per-step randomness (the weight-drop mask) is therefore also the same
on every rank. DDP averages the gradients of the per-rank means, which is the gradient of the mean over
the global batch: W ranks compute what one process with the whole batch computes (up to float rounding).
"""

from __future__ import annotations

from collections.abc import Iterable

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..devices import parse_device

@dataclass
class DistInfo:
    """rank / world_size / local_rank of this process; ``enabled`` when a process group is up."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """This process's rank / world size / local rank from torchrun's environment (nothing is initialised)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")), False)


def init_distributed(device: str) -> DistInfo:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, ...), if any.

    Backend: NCCL for CUDA devices, gloo otherwise. Without WORLD_SIZE > 1 nothing is initialised.
    """
    info = dist_info()
    if info.world_size <= 1:
        return info
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend, rank=info.rank, world_size=info.world_size,
                                timeout=datetime.timedelta(minutes=30))
    return DistInfo(info.rank, info.world_size, info.local_rank, True)


def pick_device(requested: str, info: DistInfo) -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``; ``cuda`` gets the local rank.

    Raises:
        DeviceError: see :func:`ctcm.devices.parse_device`.
    """
    device = parse_device(requested, info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_ranks_true(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Logical AND of ``flag`` over ranks (every rank gets the same answer)."""
    if not info.enabled:
        return flag
    return all_ranks_all(torch.tensor([flag], device=device), info)[0]


def all_ranks_all(flags: torch.Tensor, info: DistInfo) -> list[bool]:
    """Element-wise logical AND of the bool tensor ``flags`` (n,) over ranks, as Python bools: one host sync
    (and one all-reduce under DDP) for all n of them."""
    t = flags.to(torch.float32)
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return [v > 0.5 for v in t.tolist()]


def any_rank_true(flag: bool, info: DistInfo, device: torch.device) -> bool:
    return not all_ranks_true(not flag, info, device)


def mean_logs(logs: dict[str, torch.Tensor | float], info: DistInfo, device: torch.device) -> dict[str, float]:
    """Logs (0-dim tensors or floats, the same keys on every rank) averaged over ranks, as floats: one host
    sync (and one all-reduce under DDP) for all of them."""
    if not logs:
        return {}
    keys = sorted(logs)
    t = torch.stack([torch.as_tensor(logs[k], dtype=torch.float64, device=device).reshape(()) for k in keys])
    if info.enabled:
        dist.all_reduce(t)
        t = t / info.world_size
    return dict(zip(keys, t.tolist()))


def average_gradients(params: Iterable[torch.nn.Parameter], info: DistInfo) -> None:
    """All-reduce and average the gradients of parameters outside the DDP-wrapped model (no-op on one rank)."""
    if not info.enabled:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= info.world_size
