"""Objectives: composition and logs, gradients, and the consistency -> tangent limit (Eq. 15)."""

from __future__ import annotations

import pytest
import torch

import ctcm
from ctcm.objective import ObjectiveContext, WeightedSum
from conftest import stub_model, tiny_model


def batch(n=4, seed=0, dtype=torch.float64):
    return torch.rand(n, 3, 8, 8, dtype=dtype, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def grads(model, loss) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, retain_graph=True)])


def test_composition_weights_and_logs():
    model = stub_model()
    cons, tan = ctcm.create_objective("consistency"), ctcm.create_objective("tangent")
    combined = cons + 0.1 * tan
    assert isinstance(combined, WeightedSum) and [w for w, _ in combined.terms()] == [1.0, 0.1]
    out = combined(model, batch(), generator=torch.Generator().manual_seed(1))
    assert {"loss", "consistency", "tangent"} <= set(out.logs)
    logs = {k: float(v) for k, v in out.logs.items()}
    assert logs["loss"] == pytest.approx(logs["consistency"] + 0.1 * logs["tangent"], rel=1e-9)
    # detached 0-dim tensors: converted by the engine once per log_every, not one device sync per log and step
    assert all(torch.is_tensor(v) and v.ndim == 0 and not v.requires_grad for v in out.logs.values())
    twice = 2 * (cons + cons)
    assert twice.labels() == ["consistency", "consistency_2"] and [w for w, _ in twice.terms()] == [2.0, 2.0]


def test_terms_share_one_draw_and_one_forward():
    model = tiny_model()  # wfno: its own forward mode, so the tangent makes no extra forward call
    calls: dict[str, int] = {"forward": 0, "forward_and_tangent": 0, "forward_and_detached_tangent": 0}
    model.backbone.register_forward_hook(lambda *a: calls.__setitem__("forward", calls["forward"] + 1))
    for name in ("forward_and_tangent", "forward_and_detached_tangent"):
        rule = getattr(model.backbone, name)
        setattr(model.backbone, name, lambda *a, _rule=rule, _name=name: (
            calls.__setitem__(_name, calls[_name] + 1), _rule(*a))[1])
    (ctcm.create_objective("consistency") + ctcm.create_objective("tangent"))(model, batch())
    # one pass for the differentiable forward (shared by both terms) and the tangent, one target forward
    assert calls == {"forward": 1, "forward_and_tangent": 0, "forward_and_detached_tangent": 1}
    ctcm.create_objective("consistency")(model, batch())  # no tangent term: a plain differentiable forward
    assert calls == {"forward": 3, "forward_and_tangent": 0, "forward_and_detached_tangent": 1}


def test_same_generator_gives_same_loss():
    model = stub_model()
    obj = ctcm.build_objective("wfno-cifar")
    a = obj(model, batch(), generator=torch.Generator().manual_seed(5)).loss
    b = obj(model, batch(), generator=torch.Generator().manual_seed(5)).loss
    assert torch.equal(a, b)


def test_every_parameter_gets_a_gradient():
    model = stub_model()
    out = ctcm.build_objective("wfno-cifar")(model, batch())
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_tangent_gradient_is_f_dot_stopgrad_g():
    """grad of 0.5 ||f - sg(f - g)||^2 / D equals grad of <f, sg(g)> / D (Eq. 14)."""
    model = stub_model()
    tangent = ctcm.create_objective("tangent", normalize=False)
    ctx = ObjectiveContext(model, batch(), generator=torch.Generator().manual_seed(2))
    loss = tangent.compute(ctx).loss
    with torch.no_grad():
        g = model.time_derivative(ctx.x_t, ctx.t, ctx.dx_dt).df_dt()
    reference = (ctx.f * g).flatten(1).mean(1).mean()
    torch.testing.assert_close(grads(model, loss), grads(model, reference))


def test_consistency_gradient_tends_to_tangent_gradient(schedule_name):
    """grad L_dt / 2 -> grad L_tangent as dt -> 0 (inv_dt weighting, no normalisation, float64)."""
    model = stub_model(schedule_name)
    x0 = batch(6, seed=3)
    t_fixed = torch.linspace(0.3, 0.8, 6, dtype=torch.float64) * model.schedule.t_max
    tangent = ctcm.create_objective("tangent", normalize=False)
    errors = []
    for delta in (1e-2, 1e-3, 1e-4):
        cons = ctcm.create_objective("consistency", gap={"name": "uniform", "delta_max": delta}, weighting="inv_dt")
        ctx = ObjectiveContext(model, x0, generator=torch.Generator().manual_seed(4))
        ctx.t = t_fixed  # the cached property takes the assigned value
        g_cons = grads(model, cons.compute(ctx).loss) / 2
        g_tan = grads(model, tangent.compute(ctx).loss)
        errors.append(((g_cons - g_tan).norm() / g_tan.norm()).item())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-3


def test_original_design_tangent_is_not_the_consistency_limit():
    """The design's || df/dt - (x_t' - x_t)/(t' - t) ||^2 has a different gradient (docs/deviations.md)."""
    from examples.custom_objective import VelocityMatchingObjective

    model = stub_model()
    ctx = ObjectiveContext(model, batch(), generator=torch.Generator().manual_seed(0))
    g_design = grads(model, VelocityMatchingObjective().compute(ctx).loss)
    g_tan = grads(model, ctcm.create_objective("tangent", normalize=False).compute(ctx).loss)
    cosine = torch.dot(g_design, g_tan) / (g_design.norm() * g_tan.norm())
    assert cosine < 0.9


def test_objective_argument_errors():
    with pytest.raises(ValueError, match="unknown distance"):
        ctcm.create_objective("consistency", distance="l1")
    with pytest.raises(ValueError, match="fraction of the time range"):
        ctcm.create_objective("consistency", gap={"name": "uniform", "delta_max": 2.0})
    with pytest.raises(ctcm.ConfigError, match="no terms"):
        ctcm.build_objective([])


def test_pseudo_huber_is_finite_and_positive():
    model = stub_model()
    out = ctcm.create_objective("consistency", distance="pseudo_huber")(model, batch())
    assert torch.isfinite(out.loss) and out.loss > 0


def test_ranks_draw_their_slice_of_the_global_batch():
    """W contexts (rank r of W, each with a local batch) see exactly the draws of one global context."""
    model = stub_model()
    whole = ObjectiveContext(model, batch(4), generator=torch.Generator().manual_seed(7))
    for rank in range(2):
        part = ObjectiveContext(model, batch(4)[2 * rank:2 * rank + 2], generator=torch.Generator().manual_seed(7),
                                rank=rank, world_size=2)
        assert torch.equal(part.t, whole.t[2 * rank:2 * rank + 2])
        assert torch.equal(part.noise, whole.noise[2 * rank:2 * rank + 2])


@pytest.mark.parametrize("objective, schedule", [("consistency+tangent", "geometric"), ("scm", "trigflow")])
def test_one_pass_tangent_gives_the_same_loss_and_gradients(objective, schedule):
    """Terms using the time derivative (tangent, scm) get it from the differentiable forward's pass; the
    loss and the gradients equal those of a separate no-grad JVP (float64, dropout on)."""
    model = tiny_model(schedule, dropout=0.2).train()

    def make() -> ctcm.Objective:
        if objective == "scm":
            return ctcm.create_objective("scm")
        return ctcm.create_objective("consistency") + 0.1 * ctcm.create_objective("tangent", warmup_steps=0)

    results = []
    for one_pass in (True, False):
        obj = make()
        for _, term in obj.terms():
            if term.uses_time_derivative:
                term.uses_time_derivative = one_pass
        assert obj.uses_time_derivative == one_pass
        out = obj(model, batch(), step=100, generator=torch.Generator().manual_seed(3))
        results.append((out.loss.detach(), grads(model, out.loss)))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_the_order_of_terms_does_not_change_the_draws(dropout):
    """cons + 0.1 tan and 0.1 tan + cons draw t, eps, the gap's u and the dropout masks in one fixed order,
    so the same generator gives the same loss and gradients (issue 16, item 4)."""
    model = tiny_model(dropout=dropout).train()
    cons = ctcm.create_objective("consistency", gap={"name": "uniform", "delta_max": 0.5})
    tan = ctcm.create_objective("tangent")
    results = []
    for objective in (cons + 0.1 * tan, 0.1 * tan + cons):
        out = objective(model, batch(), generator=torch.Generator().manual_seed(5))
        results.append((out.loss, grads(model, out.loss), float(out.logs["consistency"])))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-12, atol=0)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-10, atol=1e-14)
    assert results[0][2] == pytest.approx(results[1][2], rel=1e-12)


def test_training_times_are_checked_once_where_they_are_drawn():
    """t enters training through the time distribution (checked on its first draw) and the gap (on its first
    call); the model's per-call check (a device sync) is skipped for them."""

    class Broken(ctcm.TimeDistribution):
        def sample(self, n, schedule, *, generator=None, device=None, dtype=torch.float32):
            return torch.full((n,), schedule.t_max * 2, dtype=dtype, device=device)

    model = stub_model()
    with pytest.raises(ValueError, match="time distribution Broken gave t = .* outside the schedule's range"):
        ctcm.create_objective("consistency", time=Broken())(model, batch())
    checks = []
    model.schedule.first_time_outside = lambda t: checks.append(t) or None  # type: ignore[method-assign]
    objective = ctcm.create_objective("consistency") + 0.1 * ctcm.create_objective("tangent")
    for step in range(3):
        objective(model, batch(), step)
    assert len(checks) == 2  # the first draw of t and the first t', not one per model call and step
    with pytest.raises(ValueError, match="schedule's range"):  # a user's call is still checked
        del model.schedule.first_time_outside
        model(batch(), torch.full((4,), model.schedule.t_max * 2, dtype=torch.float64))


REFERENCE_TIMES = {"consistency": (-1.1, 2.0), "tangent": (-1.1, 2.0), "denoising": (-1.2, 1.2),
                   "scm": (-1.0, 1.4)}


@pytest.mark.parametrize("name", sorted(REFERENCE_TIMES))
def test_the_time_field_has_one_home(name):
    """Every reference objective takes ``time`` from ctcm.TimedObjective (no copy of the field, the
    __post_init__ or time_distribution), keeps its paper's default, and rejects a bad ``time`` when made."""
    from ctcm.errors import UserValueError
    from ctcm.registry import OBJECTIVES
    from ctcm.time_distributions import LogNormal, Uniform

    cls = OBJECTIVES.get(name)
    assert issubclass(cls, ctcm.TimedObjective) and "time_distribution" not in vars(cls)
    assert "time" not in cls.__dict__.get("__annotations__", {})
    assert ctcm.create_objective(name).time_distribution() == LogNormal(*REFERENCE_TIMES[name])
    assert ctcm.create_objective(name, time={"name": "uniform"}).time_distribution() == Uniform()
    with pytest.raises(UserValueError, match="p_std must be > 0"):
        ctcm.create_objective(name, time={"name": "lognormal", "p_std": -1.0})
