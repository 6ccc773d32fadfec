"""``ctcm info``: what is registered (recipes, backbones, schedules, objectives, time distributions, gaps)."""

from __future__ import annotations

from . import registry


def main_info(argv: list[str]) -> int:
    for label, names in (("recipes", registry.list_models()), ("backbones", registry.list_backbones()),
                         ("schedules", registry.list_schedules()), ("objectives", registry.list_objectives()),
                         ("time distributions", registry.TIME_DISTRIBUTIONS.names()), ("gaps", registry.GAPS.names())):
        print(f"{label}: {', '.join(names)}")
    return 0
