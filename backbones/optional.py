"""Optional dependencies of the reference backbones, imported on use with an error that names the extra."""

from __future__ import annotations

import importlib
from types import ModuleType


def import_neuralop(module: str, user: str) -> ModuleType:
    """``neuralop.<module>``, or an ImportError telling how to install it (``pip install 'ctcm[neuralop]'``)."""
    try:
        return importlib.import_module(f"neuralop.{module}")
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("neuralop"):
            raise
        raise ImportError(f"{user} needs neuraloperator, an optional extra: pip install 'ctcm[neuralop]'") from exc
