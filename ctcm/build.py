"""Assembling models and objectives from recipes, configs and overrides."""

from __future__ import annotations

import copy
from typing import Any

from .config import ComponentConfig, ConfigError, ModelConfig, ObjectiveTermConfig, Recipe, merge
from .interfaces import Backbone, NoiseSchedule
from .model import ConsistencyModel
from .objective import Objective, WeightedSum
from .registry import BACKBONES, OBJECTIVES, SCHEDULES, check_kwargs, create_recipe
from .errors import UserTypeError


def _override(part: ComponentConfig, value: Any) -> ComponentConfig | Any:
    """A dict or a registered name merges into ``part`` by :func:`ctcm.config.merge`; an instance is kept."""
    if value is None:
        return part
    if isinstance(value, str):
        value = {"name": value}
    if isinstance(value, dict):
        return ComponentConfig.from_dict(merge(part.to_dict(), value))
    return value


def build(recipe: str | ModelConfig = "wfno-cifar", *, backbone: Any = None, schedule: Any = None,
          channels: int | None = None, resolution: int | None = None) -> ConsistencyModel:
    """Build the :class:`ConsistencyModel` of a recipe name or a :class:`ModelConfig` (untrained weights).

    ``backbone`` / ``schedule`` override the recipe's: a dict merges into its keyword arguments
    (``backbone={"width": 32}``), a string picks another registered name (``backbone="my-net"``), and an
    instance is used as is (the model then stores no rebuildable config for that part).
    """
    cfg = create_recipe(recipe).model if isinstance(recipe, str) else copy.deepcopy(recipe)
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
        raise UserTypeError(f"backbone must be a dict, a registered name or a ctcm.Backbone, got {type(bb).__name__}")
    if isinstance(sc, ComponentConfig):
        cfg.schedule = sc
        sc = SCHEDULES.create(sc.name, **sc.kwargs)
    elif not isinstance(sc, NoiseSchedule):
        raise UserTypeError(f"schedule must be a dict, a registered name or a NoiseSchedule, got {type(sc).__name__}")
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


def build_objective(spec: str | Recipe | list[ObjectiveTermConfig]) -> Objective:
    """The weighted sum of a recipe's (or a list's) objective terms: ``sum_i w_i create_objective(name_i)``."""
    terms = create_recipe(spec).objective if isinstance(spec, str) else (
        spec.objective if isinstance(spec, Recipe) else spec)
    if not terms:
        raise ConfigError("the objective has no terms; give at least one {name: ..., weight: ...}")
    return WeightedSum([(t.weight, OBJECTIVES.create(t.name, **t.kwargs)) for t in terms])
