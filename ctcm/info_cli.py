"""``ctcm info``: what is registered (presets, backbones, schedules, objectives)."""

from __future__ import annotations

from . import registry


def main_info(argv: list[str]) -> int:
    for label, names in (("presets", registry.list_models()), ("backbones", registry.list_backbones()),
                         ("schedules", registry.list_schedules()), ("objectives", registry.list_objectives())):
        print(f"{label}: {', '.join(names)}")
    return 0
