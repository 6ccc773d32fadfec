"""Configuration as dataclasses with a strict YAML round trip.

Every config is a (nested) dataclass. :func:`from_dict` rejects unknown keys and lists the valid ones,
:func:`to_dict` gives plain YAML-able data, and ``from_dict(cls, to_dict(c)) == c``. A component
(backbone, schedule, objective term) is written ``{name: wfno, width: 64}``: its own keys are checked
against the registered constructor when it is built.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .atomic import atomic_write_text
from .errors import UserValueError

C = TypeVar("C")


class ConfigError(UserValueError):
    """A config that cannot be read: unknown key, wrong type, bad override."""


def _split_name(data: Any, where: str) -> tuple[str, dict[str, Any]]:
    """``"wfno"`` or ``{name: wfno, **rest}`` -> ("wfno", rest)."""
    if isinstance(data, str):
        return data, {}
    if not isinstance(data, dict) or "name" not in data:
        raise ConfigError(f"{where}: expected a name or a mapping with a 'name' key, got {data!r}")
    rest = dict(data)
    return str(rest.pop("name")), rest


@dataclass
class ComponentConfig:
    """A registered component by name plus its constructor arguments: ``{name: wfno, width: 64}``."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, where: str = "") -> "ComponentConfig":
        name, rest = _split_name(data, where or "component")
        return cls(name=name, kwargs=rest)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **copy.deepcopy(self.kwargs)}


@dataclass
class ObjectiveTermConfig:
    """One weighted term of a training objective: ``{name: tangent, weight: 0.1, normalize: true}``."""

    name: str
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, where: str = "") -> "ObjectiveTermConfig":
        name, rest = _split_name(data, where or "objective term")
        weight = rest.pop("weight", 1.0)
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise ConfigError(f"{where or 'objective term'} {name!r}: weight must be a number, "
                              f"got {weight!r}") from None
        return cls(name=name, weight=weight, kwargs=rest)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, **copy.deepcopy(self.kwargs)}


@dataclass
class ModelConfig:
    """Everything :func:`ctcm.build` needs: a model is backbone + schedule + data shape (what checkpoints
    rebuild); how it is trained belongs to a :class:`Recipe`.

    ``num_classes``: K > 0 makes the model class-conditional: the backbone is built with ``num_classes=K``
    (a label embedding with K + 1 rows, row K the null class of label dropout) and takes labels
    ``y`` in [0, K]; 0 (the default, and every 0.1/0.2 checkpoint) is unconditional.
    """

    backbone: ComponentConfig
    schedule: ComponentConfig
    channels: int = 3
    resolution: int = 32
    num_classes: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 0:
            raise ConfigError(f"model.num_classes must be an integer >= 0 (0: unconditional), got {self.num_classes!r}")


def model_dict_from_v01(data: dict[str, Any]) -> tuple[dict[str, Any], list[Any] | None]:
    """A stored 0.1 model section (``preset`` + ``objective`` inside the model) -> (ModelConfig data, the
    objective terms it carried or None). Current model sections pass through unchanged."""
    model = dict(data)
    model.pop("preset", None)
    return model, model.pop("objective", None)


@dataclass
class Recipe:
    """A model plus how to train it: the objective's terms (each with its time distribution / gap) and
    ``train``, defaults for :class:`ctcm.engine.TrainConfig` keys (``optim``, ``ema``, ``batch_size``...)."""

    model: ModelConfig
    objective: list[ObjectiveTermConfig]
    train: dict[str, Any] = field(default_factory=dict)


def merge(base: Any, override: Any) -> Any:
    """The one merge rule of every config layer (recipe <- YAML <- overrides, ``ctcm.build(backbone={...})``).

    Mappings merge key by key, recursively, except that a component mapping whose ``name`` changes replaces
    the base entirely (another component's arguments do not carry over); anything else replaces the base.
    """
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    if "name" in override and "name" in base and override["name"] != base["name"]:
        return copy.deepcopy(override)
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if key in out else copy.deepcopy(value)
    return out


# -- generic dataclass <-> dict ------------------------------------------------------------------------------
def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain dicts/lists/scalars (YAML- and ``weights_only``-safe)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        own = getattr(obj, "to_dict", None)  # a config with its own layout (ComponentConfig, ...)
        return own() if own is not None else {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def from_dict(cls: type[C], data: Any, where: str = "") -> C:
    """Build dataclass ``cls`` from ``data``, recursing into nested dataclasses.

    Raises:
        ConfigError: unknown keys (the valid keys are listed), a missing required key, or a wrong type.
    """
    own = getattr(cls, "from_dict", None)  # a config with its own layout (ComponentConfig, ...)
    if own is not None:
        return own(data, where)
    label = where or cls.__name__
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping, got {type(data).__name__} {data!r}")
    fields = {f.name: f for f in dataclasses.fields(typing.cast(Any, cls)) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{label}: unknown key(s) {unknown}. Valid keys: {sorted(fields)}.")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{label}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{label}: {exc}") from exc


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where) if len(inner) == 1 else value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is tuple:
        n = len(args) if args and args[-1] is not Ellipsis else None
        if not isinstance(value, (list, tuple)) or (n is not None and len(value) != n):
            raise ConfigError(f"{where}: expected a list of {n or 'some'} values, e.g. [0.9, 0.99]; got {value!r}")
        return tuple(_coerce(args[min(i, len(args) - 1)] if args and n else Any, v, f"{where}[{i}]")
                     for i, v in enumerate(value))
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "2e-3" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def coerce_kwargs(factory: Any, kwargs: dict[str, Any], what: str) -> dict[str, Any]:
    """``kwargs`` typed against the annotations of ``factory``'s parameters, as dataclass fields are typed
    (:func:`from_dict`): ``dropout: 5e-2`` (a string to YAML 1.1) becomes the float 0.05, ``width: 64.0`` the
    int 64. Parameters without a usable annotation pass through.

    Raises:
        ConfigError: a value that cannot be read as its parameter's type (one line naming both).
    """
    if isinstance(factory, type) and not dataclasses.is_dataclass(factory):  # its __init__'s annotations
        target = next(vars(c)["__init__"] for c in factory.__mro__ if "__init__" in vars(c))
    else:  # a function, or a dataclass: its fields' annotations, each resolved in its own class's module
        target = factory
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # annotations naming what the module cannot resolve at run time: no coercion
        hints = {}
    return {k: _coerce(hints[k], v, f"{what} argument {k}") if k in hints else v for k, v in kwargs.items()}


# -- YAML and command-line overrides --------------------------------------------------------------------------
def read_yaml_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a YAML file; a ConfigError (with the line) for malformed, binary or non-mapping files."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text YAML file (it holds binary data); give the YAML config") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}; fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys (e.g. 'steps: 100'), got {type(data).__name__}")
    return data


def load_yaml(cls: type[C], path: str | os.PathLike, overrides: list[str] | None = None) -> C:
    """Read ``cls`` from a YAML file, then apply ``key.sub=value`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    return from_dict(cls, apply_overrides(read_yaml_mapping(path), overrides or []), where="")


def save_yaml(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(to_dict(obj), sort_keys=False))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (value parsed as YAML) to a nested dict, returning a new dict.

    A path into a component mapping may add a key (a constructor argument, checked when built); elsewhere
    the later :func:`from_dict` rejects unknown keys. A list index is written as a number: ``objective.1.weight=0.2``.
    """
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            node = _step_into(node, part, ".".join(parts[: i + 1]))
        last = parts[-1]
        value = yaml.safe_load(raw)
        if isinstance(node, list):
            node[_index(node, last, key)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"override {key!r}: {'.'.join(parts[:-1])} is not a mapping")
    return data


def _step_into(node: Any, part: str, where: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, where)]
    if not isinstance(node, dict):
        raise ConfigError(f"override path {where!r} goes through a value that is not a mapping")
    return node.setdefault(part, {})


def _index(node: list, part: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override {where!r}: list index {part!r} out of range (length {len(node)})")
    return int(part)
