"""Sizes, settings and run plans of ``python -m benchmarks quality``: a recipe and a seed -> training commands.

:func:`resolve_recipe` merges a recipe of :mod:`benchmarks.quality_recipes` with what it ``extends``;
:func:`plan_run` turns it, with the :class:`Settings` of a study, into one run's folders, phases, step
counts and ``examples/cifar10/train.py`` commands. Nothing here runs anything (:mod:`benchmarks.quality_jobs`
does).
"""

from __future__ import annotations

import copy
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .quality_recipes import DEFAULT_CONFIGS, DEFAULT_RECIPES, DESIGN_OBJECTIVE, PEER_BACKBONES, RECIPES

REPO = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO / "examples" / "cifar10" / "train.py"
OFFLINE_ZIP = Path("/work/shared/data/cifar10/cifar10-jpeg75.zip")

# what a size adds to every recipe (before the recipe's own overrides): the short GPU run needs a short
# warm-up and an EMA that forgets the first steps
SIZE_OVERRIDES = {
    "cpu": [],
    "gpu": ["optim.warmup_steps=20", "ema.half_life_images=10000", "data.num_workers=2", "sample_every=0"],
}
SIZES: dict[str, dict[str, Any]] = {
    "cpu": dict(images=64_000, batch=32, points=4, jobs=2, n=1000, fid_every_point=False, device="cpu",
                eval_batch=250),
    "gpu": dict(images=51_200, batch=256, points=4, jobs=2, n=5000, fid_every_point=True, device="cuda",
                eval_batch=250),
}


@dataclass
class Settings:
    size: str = "cpu"
    images: int = 64_000
    batch: int = 32
    points: int = 4
    jobs: int = 2
    n: int = 1000
    n_fid: int = 1000
    fid_steps: list[int] = field(default_factory=lambda: [1, 2])  # the step counts FID is computed for
    fid_every_point: bool = False
    device: str = "cpu"
    eval_batch: int = 250
    data: str | None = None  # training source (None: the config's)
    fd8_heldout: str | int = "test"
    fid_ref: str | None = None  # FID reference source (None: the training source)
    recipes: list[str] = field(default_factory=lambda: list(DEFAULT_RECIPES))
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    overrides: list[str] = field(default_factory=list)  # appended to every run's training command
    compute_of: str | None = None  # equal compute: this recipe gets `images`, the others its compute
    costs: dict[str, Any] | None = None  # the step-cost table (benchmarks.quality_budget.step_costs)
    images_by_recipe: dict[str, int] = field(default_factory=dict)  # per-recipe budgets (equal compute)
    out: str = ""
    tag: str = ""
    python: str = sys.executable


def default_data() -> str:
    """``cifar10`` when torchvision's copy is present, else the offline JPEG zip, else the config's source."""
    from ctcm.data.sources import default_cifar10_root

    if (default_cifar10_root() / "cifar-10-batches-py").is_dir():
        return "cifar10"
    return str(OFFLINE_ZIP) if OFFLINE_ZIP.is_file() else "cifar10"


# -- recipes -> run plans -----------------------------------------------------------------------------------------
def resolve_recipe(name: str, size: str) -> dict[str, Any]:
    """The recipe with ``extends`` merged, ``@backbone:X`` expanded and its config filled in."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from {sorted(RECIPES)}")
    r = copy.deepcopy(RECIPES[name])
    if r.get("extends"):
        base = resolve_recipe(r["extends"], size)
        r["overrides"] = base["overrides"] + r.get("overrides", [])
        r["phases"] = r.get("phases") or base.get("phases")
        r["config"] = r.get("config") or base["config"]

    def expand(items: list[str]) -> list[str]:
        out: list[str] = []
        for item in items:
            if item.startswith("@backbone:"):
                swap = PEER_BACKBONES[size][item.split(":", 1)[1]]
            elif item == "@objective:design":
                swap = DESIGN_OBJECTIVE[size]
            else:
                swap = item
            out += [swap] if isinstance(swap, str) else list(swap)
        return out

    r["overrides"] = expand(r.get("overrides", []))
    for ph in r.get("phases") or []:
        ph["overrides"] = expand(ph.get("overrides", []))
    r["config"] = r.get("config") or DEFAULT_CONFIGS[size]
    r.pop("extends", None)
    return r


def budget(override: str, steps: int) -> str:
    """``$STEPS`` -> the phase's steps, ``$STEPS/N`` -> steps // N (at least 1): budget-relative settings."""
    return re.sub(r"\$STEPS(?:/(\d+))?", lambda m: str(max(1, steps // int(m.group(1) or 1))), override)


def checkpoint_file(folder: Path, step: int) -> Path:
    return folder / "checkpoints" / f"step_{step:08d}.pt"


def plan_run(s: Settings, name: str, seed: int) -> dict[str, Any]:
    """Folders, steps and training commands of one run (recipe x seed)."""
    recipe = resolve_recipe(name, s.size)
    total = max(1, s.images_by_recipe.get(name, s.images) // s.batch)
    interval = max(1, total // max(1, s.points))
    phases = recipe.get("phases") or [{"fraction": 1.0, "overrides": [], "init_from_previous": False}]
    fractions = [float(p["fraction"]) for p in phases]
    steps = [max(1, round(total * f / sum(fractions))) for f in fractions[:-1]]
    steps.append(max(1, total - sum(steps)))
    run_dir = Path(s.out) / "runs" / s.size / name / f"seed{seed}"
    config = recipe["config"] if Path(recipe["config"]).is_absolute() else str(REPO / recipe["config"])
    plan: dict[str, Any] = {"recipe": name, "seed": seed, "dir": str(run_dir), "phases": []}
    offset = 0
    for i, (ph, n_steps) in enumerate(zip(phases, steps)):
        folder = run_dir if i == len(phases) - 1 else run_dir / f"phase{i + 1}"
        final = checkpoint_file(folder, n_steps)
        cmd = [s.python, str(TRAIN_SCRIPT), "--config", config, "--out", str(folder), "--no-progress"]
        cmd += ["--data", s.data] if s.data else []
        cmd += ["--device", s.device]
        if ph.get("init_from_previous") and i > 0:
            cmd += ["--init-from", str(Path(plan["phases"][-1]["dir"]) / "checkpoints" / "latest.pt")]
        cmd += ["threads=1", f"seed={seed}", "eval.learning_samples=0", "eval.fid_every=0", f"steps={n_steps}",
                f"batch_size={s.batch}", f"checkpoint_every={min(interval, n_steps)}", "keep_checkpoints=0",
                "data.heldout=test"]
        cmd += [budget(o, n_steps) for o in SIZE_OVERRIDES[s.size] + recipe["overrides"]
                + list(ph.get("overrides", [])) + s.overrides]
        plan["phases"].append({"dir": str(folder), "steps": n_steps, "every": min(interval, n_steps),
                               "images_offset": offset, "final": str(final),
                               "command": cmd, "log": str(folder / "train.log")})
        offset += n_steps * s.batch
    plan["images"] = offset
    return plan
