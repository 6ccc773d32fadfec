"""What ``--resume`` may change. A resumed run continues the stored one: the settings that fix the model's
shape, the data and its order cannot change; optimiser, EMA, logging and evaluation settings can, and take
effect from the resumed step (the learning-rate schedule keeps its position)."""

from __future__ import annotations

from typing import Any

from ..build import stored_model
from ..config import ConfigError, ModelConfig, from_dict, model_dict_from_v01, to_dict
from .config import resolve_train_dict

# dotted prefixes of the resolved config that a resumed run must keep
FROZEN = ("model", "seed", "batch_size", "data.flip", "data.heldout", "data.label_dropout", "data.resolutions")
# what may change (documented in docs/training.md); everything not frozen may
CHANGEABLE = ("steps", "optim.*", "ema.*", "eval.*", "log_every", "sample_every", "checkpoint_every",
              "keep_checkpoints", "max_nonfinite", "threads", "device", "precision", "compile", "deterministic",
              "data.source", "data.num_workers")


def checkpoint_config(resolved: dict[str, Any]) -> dict[str, Any]:
    """The run config a checkpoint stores in ``extra.config``: the resolved config without its model section,
    which the checkpoint already holds once, as ``config`` (what :func:`ctcm.load_checkpoint` rebuilds from)."""
    return {k: v for k, v in resolved.items() if k != "model"}


def stored_train_config(payload: dict[str, Any]) -> dict[str, Any]:
    """The resolved run config of a checkpoint: ``extra.config`` plus the model section rebuilt from
    ``config`` (checkpoints written before the split carry the model section in ``extra.config`` too), with
    every constructor argument spelled out (:func:`ctcm.build.stored_model`)."""
    stored = dict(payload["extra"]["config"])
    model, objective = model_dict_from_v01(stored.get("model") or payload["config"])  # 0.1: objective in model
    if objective is not None:
        stored.setdefault("objective", objective)
    stored["model"] = to_dict(stored_model(from_dict(ModelConfig, model)))  # 0.1/0.2 stored given arguments only
    return stored


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out if data else {prefix: {}}
    return {prefix: data}


def frozen_changes(stored: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The frozen keys whose value differs between the stored and the new resolved config."""
    a, b = _flatten(stored), _flatten(new)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return [k for k in keys if any(k == f or k.startswith(f + ".") for f in FROZEN)]


def check_resume_config(stored: dict[str, Any], new: dict[str, Any], path: Any) -> None:
    """Raise a ConfigError naming each frozen key that ``new`` changes (with both values). ``stored`` is read
    with today's defaults for keys added since it was written (model.num_classes: 0, data.label_dropout: 0)."""
    stored = to_dict(resolve_train_dict(stored, resolved=True))
    changed = frozen_changes(stored, new)
    if changed:
        a, b = _flatten(stored), _flatten(new)
        detail = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in changed[:5])
        more = f" (+{len(changed) - 5} more)" if len(changed) > 5 else ""
        raise ConfigError(
            f"--resume cannot change {detail}{more}: {path} was trained with the stored values, and the model's "
            f"shape, seed, batch size and data split are fixed for a run. Drop these overrides to resume, "
            f"or start a new run with another --out. (Changeable on resume: {', '.join(CHANGEABLE)}.)")
