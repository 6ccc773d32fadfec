"""``python -m benchmarks quality-cost``: the compute of one training step of each quality recipe.

The quality study compares recipes at equal images seen; this gives the other axis, compute per image.
For each recipe (its last phase) the model and objective its training command would build (the same
config file and overrides, through ctcm's one config resolution) take ``repeats`` optimiser steps
(objective, backward, AdamW) on a random batch of the size's batch size, interleaved across recipes
(:func:`benchmarks.timing.measure`; CPU time on a CPU, synchronised wall time on CUDA).

    python -m benchmarks quality-cost --size cpu --recipes ect,unet,fno
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any
from collections.abc import Callable

import torch

import ctcm
from ctcm.engine.config import TrainConfig, load_train_config

from .models import n_parameters
from .quality_plan import REPO, SIZE_OVERRIDES, SIZES, budget, resolve_recipe
from .timing import measure


def recipe_config(name: str, size: str) -> TrainConfig:
    """The training config of recipe ``name``'s last phase at ``size`` (its budget settings at the size's images)."""
    recipe = resolve_recipe(name, size)
    steps = max(1, SIZES[size]["images"] // SIZES[size]["batch"])
    phase = (recipe.get("phases") or [{}])[-1]
    overrides = [budget(o, steps) for o in [*SIZE_OVERRIDES[size], *recipe["overrides"], *phase.get("overrides", [])]]
    config = recipe["config"] if Path(recipe["config"]).is_absolute() else str(REPO / recipe["config"])
    return load_train_config(config, overrides + [f"batch_size={SIZES[size]['batch']}"])


def recipe_step(name: str, size: str, device: torch.device) -> tuple[Callable[[], None], int]:
    """One optimiser step of recipe ``name`` at ``size`` as a callable, and the model's parameter count."""
    cfg = recipe_config(name, size)
    steps = max(1, SIZES[size]["images"] // SIZES[size]["batch"])
    torch.manual_seed(0)
    model = ctcm.build(cfg.model).to(device).train()
    objective = ctcm.build_objective(cfg.objective)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    x0 = torch.rand(cfg.batch_size, model.channels, model.resolution, model.resolution, device=device) * 2 - 1
    generator = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        objective(model, x0, step=steps // 2, generator=generator).loss.backward()
        optimizer.step()

    return step, n_parameters(model)


def quality_cost(size: str, recipes: list[str], *, repeats: int = 10, device: str = "cpu") -> list[dict[str, Any]]:
    """Per recipe: parameters, median step time, images/s and the ratio to the first recipe's step."""
    dev = torch.device(device)
    steps, params = {}, {}
    for name in recipes:
        steps[name], params[name] = recipe_step(name, size, dev)
    clock = "wall" if dev.type == "cuda" else "cpu"
    times = measure(steps, device=dev, warmup=2, repeats=repeats, clock=clock)
    batch, first = SIZES[size]["batch"], times[recipes[0]]["median_s"]
    return [{"recipe": n, "params": params[n], "batch": batch, "step_s": times[n]["median_s"],
             "images_per_s": batch / times[n]["median_s"], "ratio": times[n]["median_s"] / first, "clock": clock}
            for n in recipes]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks quality-cost", description=__doc__.splitlines()[0])
    p.add_argument("--size", default="cpu", choices=sorted(SIZES), help="the quality study's size")
    p.add_argument("--recipes", default="ect,unet,fno", help="comma-separated recipe names (the first is the 1.00x)")
    p.add_argument("--repeats", type=int, default=10, help="timed steps per recipe (medians)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    a = p.parse_args(argv)
    recipes = [r for r in a.recipes.split(",") if r]
    if not recipes or a.repeats < 1:
        p.error("give at least one recipe (--recipes ect,unet) and --repeats >= 1")
    try:
        rows = quality_cost(a.size, recipes, repeats=a.repeats, device=a.device)
    except ValueError as exc:  # an unknown recipe or a config that does not resolve: one line, exit 2
        p.error(str(exc).splitlines()[0])
    print(f"| recipe | parameters | batch | step ms ({rows[0]['clock']}) | images/s | vs {rows[0]['recipe']} |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['recipe']} | {r['params']:,} | {r['batch']} | {1e3 * r['step_s']:.1f} | "
              f"{r['images_per_s']:.0f} | {r['ratio']:.2f}x |")
