"""Device strings, checked before anything else is blamed: ``cpu``, ``cuda``, ``cuda:N``, ``auto``."""

from __future__ import annotations

import torch

from .errors import UserValueError


class DeviceError(UserValueError):
    """A device string that names no device, or a device this machine does not have."""


def parse_device(requested: str | torch.device, local_rank: int = 0) -> torch.device:
    """The :class:`torch.device` for ``requested``.

    ``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``; ``cuda`` -> ``cuda:LOCAL_RANK``;
    ``cpu:N`` -> ``cpu`` (one CPU device, whatever the index).

    Raises:
        DeviceError: an unknown device type, or CUDA (or a CUDA index) that this machine does not have.
    """
    if isinstance(requested, torch.device):
        requested = str(requested)
    text = str(requested).strip()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cuda":
        text = f"cuda:{local_rank}"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise DeviceError(f"unknown device {requested!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {requested!r} requested but this machine has no usable CUDA GPU; "
                              f"use --device cpu (or auto)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device {requested!r} requested but only {count} CUDA device(s) are visible; "
                              f"use cuda:0 .. cuda:{count - 1}")
    return device
