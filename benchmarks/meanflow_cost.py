"""Section 5: the cost of a MeanFlow training step on the WFNO (Eq. 39-40), beside a flow-matching step.

On the ``wfno-cifar-meanflow`` model (the models section's batch and sizes), one optimiser step (zero_grad,
loss, backward, Adam) each, on one batch and one draw of (t, r, eps):

* ``step_flow_matching``: u(z_t, t, t) regressed on v = eps - x_0 with the same adaptive weight: forward and
  backward, no JVP (the floor of any MeanFlow step);
* ``step_meanflow``: ctcm's ``meanflow`` objective (the WFNO's hand-written tangent, reusing the forward's
  activations, Eq. 20);
* ``step_meanflow_func_jvp``: the same loss as the public code computes it (:func:`public_code_loss`: one
  ``torch.func.jvp`` of the backbone whose primal carries the graph).

Ratios are to ``step_flow_matching``; the issue's target is ``step_meanflow`` <= 1.3x on CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

import ctcm
from ctcm.objective import ObjectiveContext

from .settings import Settings
from .timing import measure, precision_context

TARGET_MEANFLOW_STEP = 1.3  # meanflow step / flow-matching step, wfno, CPU
KEYS = ("step_flow_matching", "step_meanflow", "step_meanflow_func_jvp")


def public_code_loss(net: torch.nn.Module, x0: Tensor, eps: Tensor, t: Tensor, r: Tensor, p: float,
                     c: float) -> Tensor:
    """MeanFlow's loss as py-meanflow's ``forward_with_loss`` computes it, written from the paper with no ctcm code
    path: z = (1 - t) x_0 + t eps, v = eps - x_0, u = net(z, (t, t - r)), (u, du/dt) = ``torch.func.jvp`` along
    (v, 1, 0), err = || u - sg(v - (t - r) du/dt) ||^2 per image, loss mean(err / sg(err + c)^p).
    Shapes: x0, eps (B, C, H, W); t, r (B,). The tests use it as the independent reference."""
    z = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * eps
    v = eps - x0

    def u_fn(z_: Tensor, t_: Tensor, r_: Tensor) -> Tensor:
        return net(z_, torch.stack([t_, t_ - r_], dim=1))

    u, dudt = torch.func.jvp(u_fn, (z, t, r), (v, torch.ones_like(t), torch.zeros_like(r)))
    target = (v - (t - r).view(-1, 1, 1, 1) * dudt).detach()
    err = (u - target).pow(2).sum(dim=(1, 2, 3))
    return (err / (err.detach() + c) ** p).mean()


def bench_meanflow(precision: str, settings: Settings, device: torch.device) -> dict[str, Any]:
    """The three steps' times and their ratios to the flow-matching step."""
    torch.manual_seed(0)
    model = ctcm.build("wfno-cifar-meanflow", backbone=settings.backbone_overrides.get("wfno-cifar"),
                       resolution=settings.model_resolution).to(device).train()
    objective = ctcm.create_objective("meanflow")
    b, gen = settings.model_batch, torch.Generator(device=device).manual_seed(0)
    x0 = torch.rand(b, model.channels, model.resolution, model.resolution, device=device) * 2 - 1
    draw = ObjectiveContext(model, x0, generator=gen, time_distribution=objective.time_distribution())
    t, r, eps = draw.t, draw.r, draw.noise
    opt = torch.optim.Adam(model.parameters(), lr=1e-6)
    p, c = objective.norm_p, objective.norm_eps

    def flow_matching() -> Tensor:
        model.resample_noise_(gen)
        z, v = model.schedule.noisy(x0, eps, t)
        err = (model(z, t, t, return_raw=True)[1] - v).pow(2).flatten(1).sum(1)
        return (err / (err.detach() + c) ** p).mean()

    def func_jvp() -> Tensor:
        model.resample_noise_(gen)
        return public_code_loss(model.backbone, x0, eps, t, r, p, c)

    def step(loss: Callable[[], Tensor]) -> Callable[[], None]:
        def run() -> None:
            opt.zero_grad(set_to_none=True)
            with precision_context(device, precision):
                value = loss()
            value.backward()
            opt.step()
        return run

    fns = {"step_flow_matching": step(flow_matching),
           "step_meanflow": step(lambda: objective(model, x0, generator=gen).loss),
           "step_meanflow_func_jvp": step(func_jvp)}
    times = measure(fns, device=device, warmup=settings.warmup, repeats=settings.model_repeats, clock=settings.clock)
    base = times["step_flow_matching"]["median_s"]
    return {"precision": precision, "batch": b, "times": times,
            "ratio_to_flow_matching": {k: times[k]["median_s"] / base for k in KEYS}}


def run_meanflow(settings: Settings, device: torch.device, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Section 5 for each precision of the run."""
    rows = []
    for precision in settings.precisions:
        log(f"[meanflow] {precision} batch={settings.model_batch}")
        rows.append(bench_meanflow(precision, settings, device))
    return rows
