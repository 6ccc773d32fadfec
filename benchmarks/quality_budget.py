"""Equal-compute budgets for ``python -m benchmarks quality``: images per recipe from measured step costs.

Compute here is the **measured CPU time of one optimiser step** (objective, backward, AdamW; one thread; the
study's batch; median of interleaved steps, :func:`benchmarks.quality_cost.quality_cost`; synchronised wall time
on CUDA), not a FLOP count. Why: at the CPU size (0.1M parameters, 32x32) the element-wise work that FLOP counts
leave out (GroupNorm, GELU, FiLM, the tangent rules, the FFT's memory traffic) is a large part of a step, and
what a user pays for is the time on the machine that trains. The price of that choice is noise: a measurement
under load moves the ratios (seen here: the FNO at 1.39x the WFNO's step on an idle machine, 1.68x with two
other jobs), so a study measures its table once, stores it (``<out>/costs-<size>.json``) and reuses it, and
the report prints it.

With ``--compute-of R`` recipe R trains on ``--images`` and every other recipe r on
``images * cost(R) / cost(r)`` images (a multiple of the batch): every run gets the compute of R's budget.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any


def costs_path(out: str | Path, size: str) -> Path:
    return Path(out) / f"costs-{size}.json"


def step_costs(size: str, recipes: list[str], out: str | Path, *, device: str = "cpu", repeats: int = 10,
               log: Any = print) -> dict[str, Any]:
    """The stored cost table of ``out`` if it has every recipe, else a new measurement of all of them (stored).
    Returns ``{"clock", "load", "step_s": {recipe: seconds per step}}``."""
    path = costs_path(out, size)
    if path.is_file():
        table = json.loads(path.read_text())
        if set(recipes) <= set(table["step_s"]):
            log(f"step costs from {path} (measured {table['measured']}, load {table['load']})")
            return table
    from .quality_cost import quality_cost

    load = os.getloadavg()[0]
    rows = quality_cost(size, recipes, repeats=repeats, device=device)
    table = {"clock": rows[0]["clock"], "load": round(load, 2), "repeats": repeats,
             "measured": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
             "step_s": {r["recipe"]: r["step_s"] for r in rows}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table, indent=1))
    log(f"step costs measured ({table['clock']} time, load {load:.2f}) -> {path}")
    return table


def equal_compute_images(images: int, batch: int, step_s: dict[str, float], reference: str) -> dict[str, int]:
    """Images per recipe for the compute of ``images`` on ``reference``: images * cost(ref) / cost(r), rounded to
    a multiple of ``batch`` (at least one batch)."""
    if reference not in step_s:
        raise ValueError(f"--compute-of {reference!r} is not among the recipes measured: {sorted(step_s)}")
    ref = step_s[reference]
    return {r: max(batch, round(images * ref / s / batch) * batch) for r, s in step_s.items()}


def compute_units(images: int, recipe: str, costs: dict[str, Any] | None, reference: str | None) -> float | None:
    """Training compute of ``images`` on ``recipe`` in reference-recipe images (images * cost(r) / cost(ref))."""
    if not costs or not reference:
        return None
    step = costs["step_s"]
    return images * step[recipe] / step[reference] if recipe in step and reference in step else None
