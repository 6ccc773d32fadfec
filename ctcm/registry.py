"""One registry pattern for every pluggable part: backbones, schedules, objectives, time
distributions, gaps and recipes.

A name is bound either by the decorator (``@ctcm.register_backbone("my-net")`` in a user's script) or by an
entry point in an installed package (``[project.entry-points."ctcm.backbones"] my-net = "pkg.mod:MyNet"``).
Entry points are discovered on the first lookup and *loaded* only when their name is asked for, so that
importing ``ctcm`` never imports a plugin. Binding a name twice is an error, never a silent override.

An entry point may name an object (it is registered under the entry point's name) or a module (importing
it must register the name through the decorator).

Every kind has the same three functions: ``register_<kind>(name)`` (a decorator), ``create_<kind>(name,
**kwargs)`` and ``list_<kind>s()``, for backbones, schedules, objectives, time distributions, gaps and recipes.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import types
import warnings
from collections.abc import Callable
from importlib import metadata
from typing import Any, Generic, TypeVar

from .config import Recipe, coerce_kwargs
from .errors import UserError, UserTypeError

T = TypeVar("T")


class RegistryError(UserError, KeyError):
    """An unknown name, a name bound twice, or a broken plugin."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly instead
        return str(self.args[0]) if self.args else ""


class ArgumentError(UserTypeError):
    """A component given keyword arguments its constructor does not take (the valid ones are listed)."""


class Registry(Generic[T]):
    """Names -> objects for one kind of plugin, with lazy entry-point discovery.

    Args:
        kind: what is registered, for messages ("backbone").
        group: the entry-point group scanned for plugins ("ctcm.backbones").
        old_group: a former name of ``group``: its entry points are not loaded (they were written for an
            older interface) but each gets a ``FutureWarning`` naming ``group``, and so does a lookup of its name.
    """

    def __init__(self, kind: str, group: str, old_group: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self.old_group = old_group
        self._old: dict[str, metadata.EntryPoint] = {}
        self._entries: dict[str, T] = {}
        self._pending: dict[str, metadata.EntryPoint] | None = None
        self._loading: set[str] = set()
        self._conflicts: dict[str, str] = {}

    # -- discovery -------------------------------------------------------------------------------------
    def _discover(self) -> dict[str, metadata.EntryPoint]:
        """Entry points of the group by name. A name declared by two different entry points is recorded as
        a conflict: only that name fails (on lookup), every other name keeps working."""
        if self._pending is None:
            pending: dict[str, metadata.EntryPoint] = {}
            for ep in metadata.entry_points(group=self.group):
                other = pending.get(ep.name)
                if other is not None and other.value != ep.value:
                    self._conflicts[ep.name] = (
                        f"{self.kind} '{ep.name}' is declared by two entry points in group '{self.group}': "
                        f"'{other.value}' and '{ep.value}'. Uninstall or rename one.")
                pending[ep.name] = ep
            self._pending = pending
            self._warn_old_group()
        return self._pending

    def _warn_old_group(self) -> None:
        if self.old_group is None:
            return
        for ep in metadata.entry_points(group=self.old_group):
            self._old[ep.name] = ep
            warnings.warn(self._old_message(ep), FutureWarning, stacklevel=4)

    def _old_message(self, ep: metadata.EntryPoint) -> str:
        return (f"{self.kind} '{ep.name}' ('{ep.value}') is declared in the entry-point group '{self.old_group}', "
                f"which is now '{self.group}': it is not loaded. Declare it under "
                f"[project.entry-points.\"{self.group}\"] in the plugin's pyproject.toml (docs/plugins.md).")

    def _load(self, name: str) -> None:
        ep = self._discover().get(name)
        if name in self._conflicts and name not in self._entries:
            raise RegistryError(self._conflicts[name])
        if ep is None or name in self._entries:
            return
        self._loading.add(name)
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must say which one it is
            raise RegistryError(
                f"{self.kind} '{name}' could not be loaded from entry point '{ep.value}' "
                f"(group '{self.group}'): {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            self._loading.discard(name)
        del self._discover()[name]
        if isinstance(obj, types.ModuleType):
            if name not in self._entries:
                raise RegistryError(
                    f"entry point '{ep.value}' for {self.kind} '{name}' imported a module that did not "
                    f"register '{name}'. Point the entry point at the object, or decorate it with "
                    f"the register function."
                )
        else:
            self._entries[name] = obj

    # -- public API ------------------------------------------------------------------------------------
    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Bind ``name`` to ``obj``; without ``obj``, return a decorator that does so.

        Raises:
            RegistryError: ``name`` is already bound (by a decorator or an installed entry point).
        """
        if not isinstance(name, str) or not name:
            raise UserTypeError(f"a {self.kind} name must be a non-empty string, got {name!r}")

        def bind(target: T) -> T:
            if name in self._entries and self._entries[name] is not target:
                raise RegistryError(
                    f"{self.kind} '{name}' is already registered ({_describe(self._entries[name])}). "
                    f"Choose another name."
                )
            ep = self._discover().get(name)
            if ep is not None and name not in self._loading:
                # the plugin's own module registering itself (imported before its entry point was used)
                if ep.module != getattr(target, "__module__", None):
                    raise RegistryError(
                        f"{self.kind} '{name}' is already provided by the installed entry point "
                        f"'{ep.value}'. Choose another name."
                    )
                del self._discover()[name]
            self._entries[name] = target
            return target

        return bind if obj is None else bind(obj)

    def unregister(self, name: str) -> T:
        """Remove ``name`` (for tests and interactive sessions); returns what it was bound to."""
        self._load(name)
        if name not in self._entries:
            raise self._unknown(name)
        return self._entries.pop(name)

    def get(self, name: str) -> T:
        """The object bound to ``name``, loading its plugin if needed."""
        if name not in self._entries:
            self._load(name)
        if name not in self._entries:
            raise self._unknown(name)
        return self._entries[name]

    def create(self, name: str, **kwargs: Any) -> Any:
        """Call the object bound to ``name`` with ``kwargs``, rejecting unknown keyword arguments and typing
        the others against its annotations (:func:`ctcm.config.coerce_kwargs`)."""
        factory: Any = self.get(name)
        check_kwargs(factory, kwargs, f"{self.kind} '{name}'")
        return factory(**coerce_kwargs(factory, kwargs, f"{self.kind} '{name}'"))

    def names(self) -> list[str]:
        """Every registered name, loaded or not, sorted."""
        return sorted(set(self._entries) | set(self._discover()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._entries or name in self._discover())

    def _unknown(self, name: str) -> RegistryError:
        if name in self._old:
            return RegistryError(self._old_message(self._old[name]))
        names = self.names()
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        listing = ", ".join(names) if names else "(none)"
        return RegistryError(f"unknown {self.kind} '{name}'.{hint} Registered {self.kind}s: {listing}.")


def check_kwargs(factory: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    """Raise a TypeError naming the valid parameters when ``kwargs`` has a key ``factory`` does not take."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ArgumentError(f"{what} got unknown argument(s) {unknown}. Valid arguments: {valid}. (Switching "
                            f"to another backbone? Its keys merge into the recipe's: give only keys it takes.)")


def _describe(obj: object) -> str:
    module = getattr(obj, "__module__", "?")
    return f"{module}.{getattr(obj, '__qualname__', type(obj).__name__)}"


BACKBONES: Registry[Any] = Registry("backbone", "ctcm.backbones")
SCHEDULES: Registry[Any] = Registry("schedule", "ctcm.schedules")
OBJECTIVES: Registry[Any] = Registry("objective", "ctcm.objectives")
RECIPES: Registry[Any] = Registry("recipe", "ctcm.recipes", old_group="ctcm.presets")
TIME_DISTRIBUTIONS: Registry[Any] = Registry("time distribution", "ctcm.time_distributions")
GAPS: Registry[Any] = Registry("gap", "ctcm.gaps")


def register_backbone(name: str, obj: Any = None) -> Any:
    """Register a backbone class (or factory) under ``name``; usable as a decorator."""
    return BACKBONES.register(name, obj)


def register_schedule(name: str, obj: Any = None) -> Any:
    """Register a noise-schedule class under ``name``; usable as a decorator."""
    return SCHEDULES.register(name, obj)


def register_objective(name: str, obj: Any = None) -> Any:
    """Register an objective class under ``name``; usable as a decorator."""
    return OBJECTIVES.register(name, obj)


def register_time_distribution(name: str, obj: Any = None) -> Any:
    """Register a training-time distribution class (:class:`ctcm.TimeDistribution`) under ``name``."""
    return TIME_DISTRIBUTIONS.register(name, obj)


def register_gap(name: str, obj: Any = None) -> Any:
    """Register a consistency-gap class (:class:`ctcm.Gap`) under ``name``."""
    return GAPS.register(name, obj)


def register_recipe(name: str, obj: Any = None) -> Any:
    """Register a recipe: a zero-argument callable returning a :class:`ctcm.Recipe`."""
    return RECIPES.register(name, obj)


def create_backbone(name: str, **kwargs: Any) -> Any:
    """The backbone ``name`` built with ``kwargs`` (a :class:`ctcm.Backbone`)."""
    return BACKBONES.create(name, **kwargs)


def create_schedule(name: str, **kwargs: Any) -> Any:
    """The noise schedule ``name`` built with ``kwargs`` (a :class:`ctcm.NoiseSchedule`)."""
    return SCHEDULES.create(name, **kwargs)


def create_objective(name: str, **kwargs: Any) -> Any:
    """The objective ``name`` built with ``kwargs`` (a :class:`ctcm.Objective`)."""
    return OBJECTIVES.create(name, **kwargs)


def create_time_distribution(name: str, **kwargs: Any) -> Any:
    """The time distribution ``name`` built with ``kwargs`` (a :class:`ctcm.TimeDistribution`)."""
    return TIME_DISTRIBUTIONS.create(name, **kwargs)


def create_gap(name: str, **kwargs: Any) -> Any:
    """The gap ``name`` built with ``kwargs`` (a :class:`ctcm.Gap`)."""
    return GAPS.create(name, **kwargs)


def create_recipe(name: str) -> Recipe:
    """A fresh copy of the :class:`ctcm.Recipe` registered as ``name`` (its model: ``ctcm.build(name)``)."""
    recipe = RECIPES.get(name)()
    if not isinstance(recipe, Recipe):
        raise UserTypeError(f"recipe '{name}' returned {type(recipe).__name__}, expected ctcm.Recipe")
    return copy.deepcopy(recipe)


def list_backbones() -> list[str]:
    return BACKBONES.names()


def list_schedules() -> list[str]:
    return SCHEDULES.names()


def list_objectives() -> list[str]:
    return OBJECTIVES.names()


def list_time_distributions() -> list[str]:
    return TIME_DISTRIBUTIONS.names()


def list_gaps() -> list[str]:
    return GAPS.names()


def list_recipes() -> list[str]:
    """Names of the registered recipes, usable with :func:`create_recipe`, :func:`ctcm.build` and for training."""
    return RECIPES.names()


def get_recipe(name: str) -> Recipe:
    """Deprecated in 0.3 (removed in 0.4): :func:`create_recipe`."""
    warnings.warn("ctcm.get_recipe is now ctcm.create_recipe (0.3; the old name goes in 0.4)", DeprecationWarning,
                  stacklevel=2)
    return create_recipe(name)


def list_models() -> list[str]:
    """Deprecated in 0.3 (removed in 0.4): :func:`list_recipes`."""
    warnings.warn("ctcm.list_models is now ctcm.list_recipes (0.3; the old name goes in 0.4)", DeprecationWarning,
                  stacklevel=2)
    return list_recipes()
