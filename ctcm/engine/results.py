"""What a training run leaves behind (:class:`TrainResult`) and the summary of its learning measure."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainResult:
    """What a run leaves behind. ``interrupted``: the signal number that stopped it early (else None).
    ``trailing_nonfinite``: skipped steps at the very end of the run (0 when its last step was applied)."""

    out: Path
    step: int
    checkpoint: Path | None
    files: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    nonfinite: int = 0
    interrupted: int | None = None
    trailing_nonfinite: int = 0


def summarise_learning(metrics: dict[str, Any]) -> dict[str, Any]:
    """Initial vs final distances and whether every one of them went down."""
    first, last = metrics.get("learning_initial"), metrics.get("learning_final")
    if not first or not last:
        return {}
    keys = [k for k in last if k != "step" and k in first]
    return {"improved": all(last[k] < first[k] for k in keys),
            **{k: {"initial": first[k], "final": last[k]} for k in keys}}
