"""``ctcm info``: what is registered (recipes, backbones, schedules, objectives, time distributions, gaps)."""

from __future__ import annotations

import argparse

from . import registry
from .errors import add_debug_option, run_cli


def main_info(argv: list[str]) -> int:
    """``ctcm info``."""
    return run_cli("ctcm info", _main, argv)


def _main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ctcm info", description="List the registered recipes, backbones, schedules, "
                                "objectives, time distributions and gaps (installed plugins included; none is "
                                "imported).")
    add_debug_option(p)
    p.parse_args(argv)
    for label, names in (("recipes", registry.list_recipes()), ("backbones", registry.list_backbones()),
                         ("schedules", registry.list_schedules()), ("objectives", registry.list_objectives()),
                         ("time distributions", registry.list_time_distributions()), ("gaps", registry.list_gaps())):
        print(f"{label}: {', '.join(names)}")
    return 0
