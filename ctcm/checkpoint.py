"""Checkpoints: atomic writes, ``weights_only`` loads, a checksum of every tensor, config kept so the model
can be rebuilt."""

from __future__ import annotations

from typing import TYPE_CHECKING

import hashlib
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import torch
from torch import nn

from .atomic import atomic_write
from .config import ModelConfig, from_dict, model_dict_from_v01, to_dict
from .devices import parse_device
from .errors import UserError

if TYPE_CHECKING:
    from .model import ConsistencyModel

from .runtime import unwrap
from .errors import UserValueError

FORMAT = "ctcm-checkpoint/1"
CHECKSUM_KEY = "tensor_sha256"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that is missing, truncated, corrupted, not ours, or holds more than plain data."""


def _tensors(obj: Any, where: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(path, tensor) for every tensor in a nest of dicts/lists/tuples, in a fixed order."""
    if torch.is_tensor(obj):
        yield where, obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from _tensors(obj[k], f"{where}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{where}/{i}")


def tensor_checksum(payload: dict[str, Any]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of every tensor in ``payload`` (but its checksum)."""
    h = hashlib.sha256()
    for where, t in _tensors({k: v for k, v in payload.items() if k != CHECKSUM_KEY}):
        t = t.detach().cpu().contiguous()
        h.update(f"{where}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`ctcm.atomic.atomic_write` (temporary file, fsync, rename)."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, ema: Any = None, optimizer: Any = None,
                    lr_scheduler: Any = None, step: int | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write model (live weights), EMA weights, optimiser/scheduler state, step and ``extra`` atomically,
    with a checksum of every tensor (verified by :func:`read_checkpoint`).

    ``extra`` must hold only tensors and plain Python data (it is loaded with ``weights_only=True``).
    """
    net = unwrap(model)
    config = getattr(net, "config", None)
    payload = {
        "format": FORMAT,
        "config": to_dict(config) if config is not None else None,
        "class_names": getattr(net, "class_names", None),  # what a conditional model's labels mean (grids)
        "model": net.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "lr_scheduler": lr_scheduler.state_dict() if lr_scheduler is not None else None,
        "step": step,
        "extra": extra or {},
    }
    payload[CHECKSUM_KEY] = tensor_checksum(payload)
    return atomic_save(payload, path)


def _looks_like_torch_file(path: Path) -> bool:
    """A torch.save file is a zip archive (current format) or a pickle (legacy format, starts with 0x80)."""
    with path.open("rb") as fh:
        head = fh.read(4)
    return head[:2] == b"PK" or head[:1] == b"\x80"


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict, loaded with ``weights_only=True`` and its checksum verified.

    Raises:
        DeviceError: ``map_location`` names no usable device (checked before the file is read).
        CheckpointError: a missing, truncated, corrupted or foreign file, with what to do about it.
    """
    if isinstance(map_location, (str, torch.device)):
        map_location = parse_device(map_location)
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not _looks_like_torch_file(path):
        raise CheckpointError(f"{path} is not a checkpoint (not a file written by torch.save); pass a .pt file "
                              f"written by training, e.g. RUN/checkpoints/latest.pt")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refused to load {path}: it holds objects other than tensors and plain data, which "
            f"weights_only loading does not execute. Only load checkpoints you trust; ctcm writes none "
            f"like this. ({str(exc).splitlines()[0]})"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is truncated or corrupted ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Use an earlier checkpoint."
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a ctcm checkpoint (expected format {FORMAT!r})")
    stored = payload.get(CHECKSUM_KEY)
    if stored is not None and stored != tensor_checksum(payload):
        raise CheckpointError(f"checkpoint {path} is corrupted: its tensors do not match the checksum written "
                              f"with them (a damaged copy or disk). Use an earlier checkpoint.")
    return payload


def _registry_hint(exc: Exception) -> str:
    """For an unknown component name: the checkpoint needs a plugin that is not installed here."""
    from .registry import RegistryError

    if isinstance(exc, RegistryError) and "unknown" in str(exc):
        name = str(exc).split("'")[1] if "'" in str(exc) else "?"
        return f" Install the package that provides '{name}' (or import the module that registers it)."
    return ""


def network_weights(payload: dict[str, Any], weights: str = "ema") -> dict[str, Any]:
    """The network state dict of a checkpoint payload: ``ema`` (the averaged weights when it has them, else
    the live ones) or ``model`` (the live training weights)."""
    return payload["ema"]["model"] if weights == "ema" and payload.get("ema") else payload["model"]


def load_checkpoint(path: str | os.PathLike, *, weights: str = "ema",
                    map_location: Any = "cpu") -> ConsistencyModel:
    """Rebuild the model stored in ``path``, load its weights, and return it **in eval mode** (no
    weight-drop or other training-time randomness; call ``.train()`` to fine-tune).

    Args:
        weights: ``ema`` (the averaged weights when the checkpoint has them, else the live ones) or
            ``model`` (the live training weights).
    """
    from .build import build, stored_model
    from .registry import RegistryError

    if weights not in ("ema", "model"):
        raise UserValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    if isinstance(map_location, (str, torch.device)):
        map_location = parse_device(map_location)
    payload = read_checkpoint(path, map_location)
    if payload["config"] is None:
        raise CheckpointError(
            f"{path} holds a model built from instances (no config); rebuild it yourself and call "
            f"model.load_state_dict(ctcm.read_checkpoint(path)['model'])"
        )
    try:
        model = build(stored_model(from_dict(ModelConfig, model_dict_from_v01(payload["config"])[0])))
    except RegistryError as exc:
        raise CheckpointError(f"cannot rebuild the model of {path}: {exc}{_registry_hint(exc)}") from exc
    state = network_weights(payload, weights)
    stored = next((v.dtype for v in state.values() if torch.is_tensor(v) and v.is_floating_point()), None)
    if stored is not None:
        model.to(stored)  # a float64 checkpoint comes back in float64, bit for bit
    model.load_state_dict(state)
    model.class_names = payload.get("class_names")  # absent before 0.3: labels are then shown as numbers
    model.eval()
    return model.to(map_location) if isinstance(map_location, torch.device) else model
