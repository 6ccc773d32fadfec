"""Sections 2 and 3: JVP cost against a forward, training-step cost, training and sampling throughput.

For each recipe (``wfno-cifar``, ``fno-cifar``, ``unet-cifar``, matched at ~30.4M parameters), on one
batch (x_t, t, dx_t/dt) drawn from the recipe's schedule, measured side by side:

* ``forward``: f(x_t, t), no grad;                 ``forward_grad``: the same, recording the graph;
* ``forward_double_batch``: f at 2B samples, no grad (the floor of a JVP that runs its linear maps on [z; dz]);
* ``jvp_nograd``: ``model.time_derivative`` (one ``torch.func.jvp`` of the backbone), no grad;
* ``total_derivative``: ``ctcm.total_derivative(model, ...)`` (jvp of the whole model), no grad;
* ``jvp_grad``: ``model.time_derivative`` recording the graph;
* ``finite_difference``: the two-forward alternative (f(x + h v, t + h) - f(x - h v, t - h)) / 2h;
* ``step_consistency`` / ``step_consistency_tangent``: one optimiser step (zero_grad, loss, backward,
  Adam) with ``consistency`` alone and with ``consistency + 0.1 tangent`` (one shared forward);
* ``sample_onestep``: ``ctcm.multistep_sample(model, noise, [t_max], schedule=model.schedule)`` on noise drawn
  once (the network's cost; the per-image seed rule of ``model.sample`` adds its CPU draws, about 0.1 ms per
  image).

Ratios are to ``forward`` (or to the consistency-only step); throughput is B / median time.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

import torch

import ctcm

from .settings import Settings
from .timing import measure, peak_memory_mb, precision_context

FD_STEP = 1e-3
JVP_KEYS = ("forward", "forward_grad", "forward_double_batch", "jvp_nograd", "total_derivative", "jvp_grad",
            "finite_difference")
STEP_KEYS = ("step_consistency", "step_consistency_tangent")


def n_parameters(model: torch.nn.Module) -> int:
    """Real parameters (a complex weight counts twice)."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())


def _try(fns: dict[str, Callable[[], object]], errors: dict[str, str]) -> dict[str, Callable[[], object]]:
    ok = {}
    for name, fn in fns.items():
        try:
            fn()
            ok[name] = fn
        except Exception as exc:  # recorded in the results
            errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return ok


def bench_recipe(recipe: str, precision: str, settings: Settings, device: torch.device) -> dict[str, Any]:
    """Every figure of sections 2 and 3 for one recipe."""
    torch.manual_seed(0)
    override = settings.backbone_overrides.get(recipe)
    try:
        model = ctcm.build(recipe, backbone=override, resolution=settings.model_resolution).to(device).train()
    except ImportError as exc:  # e.g. fno-cifar without neuraloperator: a row with the reason, not a crash
        return {"recipe": recipe, "precision": precision, "batch": settings.model_batch, "params": 0, "times": {},
                "errors": {"build": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}}
    sched, b = model.schedule, settings.model_batch
    x0 = torch.rand(b, model.channels, model.resolution, model.resolution, device=device) * 2 - 1
    t = ctcm.create_objective("consistency").time_distribution().sample(b, sched, device=device)
    t = t.clamp(sched.t_min + FD_STEP, sched.t_max - FD_STEP)  # the finite difference evaluates t +- FD_STEP
    x_t, dx_dt = sched.noisy(x0, torch.randn_like(x0), t)
    ctx = lambda: precision_context(device, precision)

    def nograd(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad(), ctx():
                return fn()
        return run

    def withgrad(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            with ctx():
                return fn()
        return run

    def finite_difference() -> torch.Tensor:
        h = FD_STEP
        return (model(x_t + h * dx_dt, t + h) - model(x_t - h * dx_dt, t - h)) / (2 * h)

    errors: dict[str, str] = {}
    jvp_fns = _try({
        "forward": nograd(lambda: model(x_t, t)),
        "forward_grad": withgrad(lambda: model(x_t, t)),
        "forward_double_batch": nograd(lambda: model(torch.cat([x_t, x_t]), torch.cat([t, t]))),
        "jvp_nograd": nograd(lambda: model.time_derivative(x_t, t, dx_dt)),
        "total_derivative": nograd(lambda: ctcm.total_derivative(model, x_t, t, dx_dt)),
        "jvp_grad": withgrad(lambda: model.time_derivative(x_t, t, dx_dt)),
        "finite_difference": nograd(finite_difference),
    }, errors)
    times = measure(jvp_fns, device=device, warmup=settings.warmup, repeats=settings.model_repeats,
                         clock=settings.clock)

    objectives = {
        "step_consistency": ctcm.create_objective("consistency"),
        "step_consistency_tangent": ctcm.create_objective("consistency") + 0.1 * ctcm.create_objective("tangent"),
    }
    opt = torch.optim.Adam(model.parameters(), lr=1e-6)
    gen = torch.Generator(device=device).manual_seed(0)

    def step(objective: ctcm.Objective) -> Callable[[], object]:
        def run() -> None:
            opt.zero_grad(set_to_none=True)
            with ctx():
                out = objective(model, x0, step=1000, generator=gen)
            out.loss.backward()
            opt.step()
        return run

    step_fns = _try({k: step(o) for k, o in objectives.items()}, errors)
    times.update(measure(step_fns, device=device, warmup=settings.warmup, repeats=settings.model_repeats,
                         clock=settings.clock))
    noise = torch.randn_like(x0)
    one_step = ctcm.default_times(sched, 1)
    sample_fns = _try({"sample_onestep": nograd(lambda: ctcm.multistep_sample(model, noise, one_step, schedule=sched))},
                      errors)
    times.update(measure(sample_fns, device=device, warmup=settings.warmup, repeats=settings.model_repeats,
                         clock=settings.clock))

    med = {k: v["median_s"] for k, v in times.items()}
    row: dict[str, Any] = {"recipe": recipe, "precision": precision, "batch": b, "params": n_parameters(model),
                           "times": times, "errors": errors}
    if "forward" in med:
        row["ratio_to_forward"] = {k: med[k] / med["forward"] for k in JVP_KEYS if k in med}
    if all(k in med for k in STEP_KEYS):
        row["tangent_step_ratio"] = med["step_consistency_tangent"] / med["step_consistency"]
        row["train_images_per_s"] = b / med["step_consistency_tangent"]
        row["train_consistency_images_per_s"] = b / med["step_consistency"]
    if "sample_onestep" in med:
        row["sample_images_per_s"] = b / med["sample_onestep"]
    if "step_consistency_tangent" in step_fns:
        row["peak_mb_step_tangent"] = peak_memory_mb(step_fns["step_consistency_tangent"], device)
    return row


def run_models(settings: Settings, device: torch.device, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Sections 2 and 3 over ``settings.recipes`` x ``settings.precisions``."""
    rows = []
    for precision in settings.precisions:
        for recipe in settings.recipes:
            log(f"[models] {precision} {recipe} batch={settings.model_batch}")
            rows.append(bench_recipe(recipe, precision, settings, device))
    return rows
