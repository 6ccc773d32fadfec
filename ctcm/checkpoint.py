"""Checkpoints: atomic writes, ``weights_only`` loads, config kept so the model can be rebuilt."""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import ModelConfig, from_dict, to_dict
from .runtime import unwrap

FORMAT = "ctcm-checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, not ours, or holds more than plain data."""


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash mid-write leaves the previous file intact, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, ema: Any = None, optimizer: Any = None,
                    lr_scheduler: Any = None, step: int | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write model (live weights), EMA weights, optimiser/scheduler state, step and ``extra`` atomically.

    ``extra`` must hold only tensors and plain Python data (it is loaded with ``weights_only=True``).
    """
    net = unwrap(model)
    config = getattr(net, "config", None)
    payload = {
        "format": FORMAT,
        "config": to_dict(config) if config is not None else None,
        "model": net.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "lr_scheduler": lr_scheduler.state_dict() if lr_scheduler is not None else None,
        "step": step,
        "extra": extra or {},
    }
    return atomic_save(payload, path)


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict, loaded with ``weights_only=True``; clear errors for every failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refused to load {path}: it holds objects other than tensors and plain data, which "
            f"weights_only loading does not execute. Only load checkpoints you trust; ctcm writes none "
            f"like this. ({str(exc).splitlines()[0]})"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is truncated or corrupted ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Use an earlier checkpoint."
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a ctcm checkpoint (expected format {FORMAT!r})")
    return payload


def load_checkpoint(path: str | os.PathLike, *, weights: str = "ema", map_location: Any = "cpu"):
    """Rebuild the model stored in ``path`` and load its weights.

    Args:
        weights: ``ema`` (the averaged weights when the checkpoint has them, else the live ones) or
            ``model`` (the live training weights).
    """
    from .build import build

    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    payload = read_checkpoint(path, map_location)
    if payload["config"] is None:
        raise CheckpointError(
            f"{path} holds a model built from instances (no config); rebuild it yourself and call "
            f"model.load_state_dict(ctcm.read_checkpoint(path)['model'])"
        )
    model = build(from_dict(ModelConfig, payload["config"]))
    state = payload["ema"]["model"] if weights == "ema" and payload["ema"] is not None else payload["model"]
    stored = next((v.dtype for v in state.values() if torch.is_tensor(v) and v.is_floating_point()), None)
    if stored is not None:
        model.to(stored)  # a float64 checkpoint comes back in float64, bit for bit
    model.load_state_dict(state)
    return model.to(map_location) if isinstance(map_location, (str, torch.device)) else model
