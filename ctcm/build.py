"""Assembling models and objectives from presets, configs and overrides."""

from __future__ import annotations

import copy
from typing import Any

from .config import ComponentConfig, ConfigError, ModelConfig, ObjectiveTermConfig
from .interfaces import Backbone, NoiseSchedule
from .model import ConsistencyModel
from .objective import Objective, WeightedSum
from .registry import BACKBONES, OBJECTIVES, PRESETS, SCHEDULES, check_kwargs


def preset_config(name: str) -> ModelConfig:
    """The :class:`ModelConfig` of a registered preset (a fresh copy)."""
    cfg = PRESETS.get(name)()
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"preset '{name}' returned {type(cfg).__name__}, expected ctcm.ModelConfig")
    return copy.deepcopy(cfg)


def _override(part: ComponentConfig, value: Any) -> ComponentConfig | Any:
    """dict -> merge into kwargs; str -> another registered name (its defaults); else an instance."""
    if value is None:
        return part
    if isinstance(value, dict):
        value = dict(value)
        name = value.pop("name", part.name)
        base = part.kwargs if name == part.name else {}
        return ComponentConfig(name, {**base, **value})
    if isinstance(value, str):
        return ComponentConfig(value)
    if isinstance(value, ComponentConfig):
        return value
    return value


def build(preset: str | ModelConfig = "wfno-cifar", *, backbone: Any = None, schedule: Any = None,
          channels: int | None = None, resolution: int | None = None) -> ConsistencyModel:
    """Build a :class:`ConsistencyModel` from a preset name or a :class:`ModelConfig`.

    ``backbone`` / ``schedule`` override the preset's: a dict merges into its keyword arguments
    (``backbone={"width": 32}``), a string picks another registered name (``backbone="my-net"``), and an
    instance is used as is (the model then stores no rebuildable config for that part).
    """
    cfg = preset_config(preset) if isinstance(preset, str) else copy.deepcopy(preset)
    if channels is not None:
        cfg.channels = channels
    if resolution is not None:
        cfg.resolution = resolution
    bb, sc = _override(cfg.backbone, backbone), _override(cfg.schedule, schedule)
    rebuildable = isinstance(bb, ComponentConfig) and isinstance(sc, ComponentConfig)
    if isinstance(bb, ComponentConfig):
        cfg.backbone = bb
        bb = _create_backbone(bb, cfg.channels)
    elif not isinstance(bb, Backbone):
        raise TypeError(f"backbone must be a dict, a registered name or a ctcm.Backbone, got {type(bb).__name__}")
    if isinstance(sc, ComponentConfig):
        cfg.schedule = sc
        sc = SCHEDULES.create(sc.name, **sc.kwargs)
    elif not isinstance(sc, NoiseSchedule):
        raise TypeError(f"schedule must be a dict, a registered name or a NoiseSchedule, got {type(sc).__name__}")
    return ConsistencyModel(bb, sc, channels=cfg.channels, resolution=cfg.resolution,
                            config=cfg if rebuildable else None)


def _create_backbone(part: ComponentConfig, channels: int) -> Backbone:
    clash = {"in_channels", "out_channels"} & set(part.kwargs)
    if clash:
        raise ConfigError(f"backbone argument(s) {sorted(clash)} come from the model's 'channels'; remove them")
    factory = BACKBONES.get(part.name)
    kwargs = {"in_channels": channels, "out_channels": channels, **part.kwargs}
    check_kwargs(factory, kwargs, f"backbone '{part.name}'")
    return factory(**kwargs)


def build_objective(spec: str | ModelConfig | list[ObjectiveTermConfig]) -> Objective:
    """The weighted sum of a preset's (or config's) objective terms: ``sum_i w_i create_objective(name_i)``."""
    terms = preset_config(spec).objective if isinstance(spec, str) else (
        spec.objective if isinstance(spec, ModelConfig) else spec)
    if not terms:
        raise ConfigError("the objective has no terms; give at least one {name: ..., weight: ...}")
    return WeightedSum([(t.weight, OBJECTIVES.create(t.name, **t.kwargs)) for t in terms])
