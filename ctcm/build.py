"""Assembling models and objectives from recipes, configs and overrides."""

from __future__ import annotations

import copy
import inspect
from typing import Any

from .config import ComponentConfig, ConfigError, ModelConfig, ObjectiveTermConfig, Recipe, coerce_kwargs, merge
from .interfaces import Backbone, NoiseSchedule
from .model import ConsistencyModel
from .objective import Objective, WeightedSum
from .registry import BACKBONES, OBJECTIVES, SCHEDULES, Registry, check_kwargs, create_recipe
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
        cfg.backbone = resolve_backbone(bb, cfg.num_classes)
        bb = BACKBONES.get(bb.name)(in_channels=cfg.channels, out_channels=cfg.channels, **cfg.backbone.kwargs,
                                    **({"num_classes": cfg.num_classes} if cfg.num_classes else {}))
    elif not isinstance(bb, Backbone):
        raise UserTypeError(f"backbone must be a dict, a registered name or a ctcm.Backbone, got {type(bb).__name__}")
    if isinstance(sc, ComponentConfig):
        cfg.schedule = resolve_component(SCHEDULES, sc, "schedule")
        sc = SCHEDULES.get(sc.name)(**cfg.schedule.kwargs)
    elif not isinstance(sc, NoiseSchedule):
        raise UserTypeError(f"schedule must be a dict, a registered name or a NoiseSchedule, got {type(sc).__name__}")
    return ConsistencyModel(bb, sc, channels=cfg.channels, resolution=cfg.resolution, num_classes=cfg.num_classes,
                            config=cfg if rebuildable else None)


BACKBONE_CHANNELS = ("in_channels", "out_channels")  # given by the model's ``channels``, never stored


def resolve_component(registry: Registry[Any], part: ComponentConfig, kind: str,
                      fixed: tuple[str, ...] = ()) -> ComponentConfig:
    """``part`` with every constructor argument spelled out: the given ones typed against the constructor's
    annotations (:func:`ctcm.config.coerce_kwargs`), then each default of the signature that ``part`` leaves
    out (resolved now, so a later version's new default cannot change a stored model; diffusers' ConfigMixin
    does the same). ``fixed`` names the arguments the caller supplies itself (the channels). Defaults that
    are not plain data (YAML / ``weights_only`` safe) stay implicit; tuples are stored as lists.

    Raises:
        ConfigError: an argument in ``fixed`` given by the user, or a value of the wrong type.
        ArgumentError: an argument the constructor does not take (the valid ones are listed).
    """
    what = f"{kind} '{part.name}'"
    clash = set(fixed) & set(part.kwargs)
    if clash:
        raise ConfigError(f"{kind} argument(s) {sorted(clash)} come from the model's 'channels'; remove them")
    factory = registry.get(part.name)
    check_kwargs(factory, {**dict.fromkeys(fixed), **part.kwargs}, what)
    given = coerce_kwargs(factory, part.kwargs, what)
    try:
        params: list[inspect.Parameter] = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        params = []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    defaults = {p.name: p.default for p in params if p.kind in kinds and p.name not in fixed
                and p.default is not inspect.Parameter.empty and _is_plain(p.default)}
    resolved = {name: given.pop(name, default) for name, default in defaults.items()}
    return ComponentConfig(part.name, _plain({**resolved, **given}))


def resolve_backbone(part: ComponentConfig, num_classes: int = 0) -> ComponentConfig:
    """:func:`resolve_component` of a backbone. Its ``num_classes`` argument comes from the model section's
    (passed at build for a conditional model, never stored in the backbone's arguments).

    Raises:
        ConfigError: ``num_classes`` in the backbone section, or a conditional model whose backbone takes none.
    """
    if "num_classes" in part.kwargs:
        raise ConfigError("backbone argument num_classes comes from the model section; remove it from the backbone "
                          "and set model.num_classes instead")
    if num_classes and not _takes_keyword(BACKBONES.get(part.name), "num_classes"):
        raise ConfigError(f"backbone '{part.name}' takes no num_classes argument, so it cannot be class-conditional "
                          f"(model.num_classes={num_classes}); use wfno, unet or fno, or set model.num_classes=0")
    resolved = resolve_component(BACKBONES, part, "backbone", BACKBONE_CHANNELS)
    resolved.kwargs.pop("num_classes", None)  # its default (0) is the model section's business
    return resolved


def _takes_keyword(factory: Any, name: str) -> bool:
    """Whether ``factory`` accepts the keyword argument ``name`` (explicitly or through ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def stored_model(cfg: ModelConfig) -> ModelConfig:
    """A model config read from a checkpoint, resolved (:func:`resolve_model`) after each backbone argument it
    lacks is set from the backbone's ``legacy_defaults``: a stored config that lacks an argument was written
    before every argument was stored (0.1/0.2), by a version whose default that was. So a 0.2 ``wfno``
    checkpoint rebuilds the 0.2 design whatever today's defaults are."""
    legacy = getattr(BACKBONES.get(cfg.backbone.name), "legacy_defaults", {})
    kwargs = {**{k: copy.deepcopy(v) for k, v in legacy.items() if k not in cfg.backbone.kwargs},
              **cfg.backbone.kwargs}
    return resolve_model(ModelConfig(ComponentConfig(cfg.backbone.name, kwargs), cfg.schedule, cfg.channels,
                                     cfg.resolution, cfg.num_classes))


def resolve_model(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` with its backbone's and schedule's arguments spelled out (:func:`resolve_component`): how a
    0.1/0.2 checkpoint, which stored only the arguments a user gave, is compared with a current config."""
    return ModelConfig(resolve_backbone(cfg.backbone, cfg.num_classes),
                       resolve_component(SCHEDULES, cfg.schedule, "schedule"), cfg.channels, cfg.resolution,
                       cfg.num_classes)


def _is_plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, float, str))


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (YAML's safe dumper writes no tuples)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def build_objective(spec: str | Recipe | list[ObjectiveTermConfig]) -> Objective:
    """The weighted sum of a recipe's (or a list's) objective terms: ``sum_i w_i create_objective(name_i)``."""
    terms = create_recipe(spec).objective if isinstance(spec, str) else (
        spec.objective if isinstance(spec, Recipe) else spec)
    if not terms:
        raise ConfigError("the objective has no terms; give at least one {name: ..., weight: ...}")
    return WeightedSum([(t.weight, OBJECTIVES.create(t.name, **t.kwargs)) for t in terms])
