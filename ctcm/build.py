"""Assembling models and objectives from recipes, configs and overrides."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from typing import Any

from .config import ComponentConfig, ConfigError, ModelConfig, ObjectiveTermConfig, Recipe, merge
from .interfaces import Backbone, NoiseSchedule
from .model import ConsistencyModel
from .objective import Objective, WeightedSum
from .registry import BACKBONES, OBJECTIVES, RECIPES, SCHEDULES, check_kwargs


def get_recipe(name: str) -> Recipe:
    """The :class:`Recipe` registered as ``name`` (a fresh copy)."""
    recipe = RECIPES.get(name)()
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe '{name}' returned {type(recipe).__name__}, expected ctcm.Recipe")
    return copy.deepcopy(recipe)


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
    cfg = get_recipe(recipe).model if isinstance(recipe, str) else copy.deepcopy(recipe)
    if channels is not None:
        cfg.channels = channels
    if resolution is not None:
        cfg.resolution = resolution
    bb, sc = _override(cfg.backbone, backbone), _override(cfg.schedule, schedule)
    rebuildable = isinstance(bb, ComponentConfig) and isinstance(sc, ComponentConfig)
    if isinstance(bb, ComponentConfig):
        cfg.backbone = bb
        bb = _create_backbone(bb, cfg.channels, cfg.num_classes)
    elif not isinstance(bb, Backbone):
        raise TypeError(f"backbone must be a dict, a registered name or a ctcm.Backbone, got {type(bb).__name__}")
    if isinstance(sc, ComponentConfig):
        cfg.schedule = sc
        sc = SCHEDULES.create(sc.name, **sc.kwargs)
    elif not isinstance(sc, NoiseSchedule):
        raise TypeError(f"schedule must be a dict, a registered name or a NoiseSchedule, got {type(sc).__name__}")
    return ConsistencyModel(bb, sc, channels=cfg.channels, resolution=cfg.resolution, num_classes=cfg.num_classes,
                            config=cfg if rebuildable else None)


def _takes_keyword(factory: Callable[..., Any], name: str) -> bool:
    """Whether ``factory`` accepts the keyword argument ``name`` (explicitly or through ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _create_backbone(part: ComponentConfig, channels: int, num_classes: int = 0) -> Backbone:
    """The registered backbone with the model's channels and, for a conditional model, ``num_classes``."""
    clash = {"in_channels", "out_channels", "num_classes"} & set(part.kwargs)
    if clash:
        raise ConfigError(f"backbone argument(s) {sorted(clash)} come from the model's 'channels' / 'num_classes'; "
                          f"remove them from the backbone section (set model.num_classes instead)")
    factory = BACKBONES.get(part.name)
    kwargs = {"in_channels": channels, "out_channels": channels, **part.kwargs}
    if num_classes:
        kwargs["num_classes"] = num_classes
        if not _takes_keyword(factory, "num_classes"):
            raise ConfigError(f"backbone '{part.name}' takes no num_classes argument, so it cannot be "
                              f"class-conditional (model.num_classes={num_classes}); use wfno, unet or fno, or set "
                              f"model.num_classes=0")
    check_kwargs(factory, kwargs, f"backbone '{part.name}'")
    return factory(**kwargs)


def build_objective(spec: str | Recipe | list[ObjectiveTermConfig]) -> Objective:
    """The weighted sum of a recipe's (or a list's) objective terms: ``sum_i w_i create_objective(name_i)``."""
    terms = get_recipe(spec).objective if isinstance(spec, str) else (
        spec.objective if isinstance(spec, Recipe) else spec)
    if not terms:
        raise ConfigError("the objective has no terms; give at least one {name: ..., weight: ...}")
    return WeightedSum([(t.weight, OBJECTIVES.create(t.name, **t.kwargs)) for t in terms])
