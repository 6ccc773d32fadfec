"""The meanflow objective (Eq. 37-40): equal to an independent float64 torch.func.jvp implementation (loss and
gradient), flow matching where r = t, the MeanFlow identity for the exact flow map of Gaussian data, and the
non-finite guard's explanation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

import ctcm
from ctcm.config import ModelConfig
from ctcm.objective import ObjectiveContext
from ctcm.schedules import LinearSchedule
from benchmarks.meanflow_cost import public_code_loss
from ctcm_objectives.meanflow import meanflow_target
from conftest import stub_model

F64 = torch.float64


def context(model, objective, seed: int, n: int = 6) -> ObjectiveContext:
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(n, 3, 8, 8, generator=g, dtype=F64) * 2 - 1
    return ObjectiveContext(model, x0, generator=g, time_distribution=objective.time_distribution(),
                            with_time_derivative=True)


def grads(loss: Tensor, model) -> list[Tensor]:
    return list(torch.autograd.grad(loss, [p for p in model.parameters()]))


def check_against_reference(model, objective, seed: int) -> None:
    ctx = context(model, objective, seed)
    loss = objective.compute(ctx).loss
    ref = public_code_loss(model.backbone, ctx.x0, ctx.noise, ctx.t, ctx.r, objective.norm_p, objective.norm_eps)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads(loss, model), grads(ref, model)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@given(st.integers(0, 10_000), st.sampled_from([0.0, 0.5, 0.75, 1.0]), st.sampled_from([1e-3, 0.1]))
@settings(deadline=None, max_examples=20)
def test_loss_and_gradient_equal_an_independent_jvp_implementation(seed, p, c):
    objective = ctcm.create_objective("meanflow", norm_p=p, norm_eps=c)
    check_against_reference(stub_model("linear", time_inputs=2), objective, seed)


def test_r_equal_t_is_flow_matching():
    objective = ctcm.create_objective("meanflow", time={"name": "meanflow", "ratio": 0.0})
    model = stub_model("linear", time_inputs=2)
    ctx = context(model, objective, 4)
    assert torch.equal(ctx.r, ctx.t)
    loss = objective.compute(ctx).loss
    u = model.backbone(ctx.x_t, torch.stack([ctx.t, torch.zeros_like(ctx.t)], dim=1))
    err = (u - (ctx.noise - ctx.x0)).pow(2).sum(dim=(1, 2, 3))  # || u(z_t, t, t) - (eps - x_0) ||^2
    fm = (err / (err.detach() + objective.norm_eps) ** objective.norm_p).mean()
    torch.testing.assert_close(loss, fm, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads(loss, model), grads(fm, model)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


class GaussianMeanFlow(ctcm.Backbone):
    """The exact average velocity of data x_0 ~ N(mu, s^2 I) on the linear path: z_t ~ N(m_t, q_t^2) with
    m_t = (1 - t) mu, q_t^2 = (1 - t)^2 s^2 + t^2, the flow map X(z, t, r) = m_r + (q_r / q_t)(z - m_t) (affine, it
    pushes the marginals forward), u = (z - X) / (t - r), and at r = t the velocity m_t' + (q_t' / q_t)(z - m_t).
    Two time inputs (t, t - r); the scale ``gain`` is a parameter (it multiplies u)."""

    resolution_agnostic = True
    time_inputs = 2

    def __init__(self, mu: float, s: float) -> None:
        super().__init__()
        self.in_channels = self.out_channels = 3
        self.mu, self.s = mu, s
        self.gain = torch.nn.Parameter(torch.ones((), dtype=F64))

    def moments(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return (1 - t) * self.mu, torch.sqrt((1 - t) ** 2 * self.s**2 + t**2)

    def velocity(self, z: Tensor, t: Tensor) -> Tensor:
        m, q = self.moments(t)
        dq = ((t - 1) * self.s**2 + t) / q
        return -self.mu + dq / q * (z - m)

    def forward(self, z: Tensor, c_noise: Tensor) -> Tensor:
        t, h = (c.view(-1, 1, 1, 1) for c in c_noise.unbind(1))
        (m_t, q_t), (m_r, q_r) = self.moments(t), self.moments(t - h)
        jump = (z - (m_r + q_r / q_t * (z - m_t))) / torch.where(h > 0, h, torch.ones_like(h))
        return self.gain * torch.where(h > 0, jump, self.velocity(z, t))


def test_the_meanflow_identity_holds_for_the_exact_flow_map_of_gaussian_data():
    net = GaussianMeanFlow(mu=0.3, s=0.5)
    model = ctcm.ConsistencyModel(net, LinearSchedule(), channels=3, resolution=4)
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0.9, 0.7, 0.5, 0.3, 0.6, 0.4], dtype=F64)
    r = torch.tensor([0.0, 0.2, 0.5, 0.1, 0.59, 0.0], dtype=F64)
    x0 = 0.3 + 0.5 * torch.randn(6, 3, 4, 4, generator=g, dtype=F64)
    z, _ = model.schedule.noisy(x0, torch.randn(6, 3, 4, 4, generator=g, dtype=F64), t)
    v = net.velocity(z, t.view(-1, 1, 1, 1))  # the marginal velocity E[eps - x_0 | z_t]
    d = model.time_derivative(z, t, v, r)  # du/dt along (v, 0, 1), through the model's coefficient rates
    torch.testing.assert_close(meanflow_target(v, t, r, d.d_raw), d.raw, rtol=1e-10, atol=1e-10)
    # the exact flow map samples the data in one step, and two steps compose to the same map
    one, two = model.sample(64, steps=1, seed=3, clip=False), model.sample(64, steps=2, seed=3, clip=False)
    noise = ctcm.sampling.ImageNoise(3, range(64), (3, 4, 4), device=torch.device("cpu"), dtype=F64)()
    torch.testing.assert_close(one, 0.3 + 0.5 * noise, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(two, one, rtol=1e-12, atol=1e-12)


def test_the_identity_fails_for_a_wrong_flow_map():
    """The check above can fail: scaling u by 1.1 breaks the identity (u_tgt != u)."""
    net = GaussianMeanFlow(mu=0.3, s=0.5)
    with torch.no_grad():
        net.gain.fill_(1.1)
    model = ctcm.ConsistencyModel(net, LinearSchedule(), channels=3, resolution=4)
    t, r = torch.tensor([0.8, 0.6], dtype=F64), torch.tensor([0.1, 0.3], dtype=F64)
    z = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    v = GaussianMeanFlow(0.3, 0.5).velocity(z, t.view(-1, 1, 1, 1))
    d = model.time_derivative(z, t, v, r)
    assert (meanflow_target(v, t, r, d.d_raw) - d.raw).abs().max() > 1e-3


def test_meanflow_refuses_models_it_cannot_train():
    objective = ctcm.create_objective("meanflow")
    with pytest.raises(ValueError, match="linear path.*model.schedule=\\{name: linear\\}"):
        objective.check_model(stub_model("geometric"))
    with pytest.raises(ValueError, match="time_inputs=2"):
        objective.check_model(stub_model("linear"))
    with pytest.raises(ValueError, match="TimePairDistribution"):
        ctcm.create_objective("meanflow", time={"name": "lognormal"})(stub_model("linear", time_inputs=2),
                                                                     torch.zeros(2, 3, 8, 8, dtype=F64))


class DivergentTangent(ctcm.Backbone):
    """A finite u whose JVP is NaN (a diverged tangent), to exercise the guard's explanation."""

    resolution_agnostic = True
    time_inputs = 2

    def __init__(self) -> None:
        super().__init__()
        self.in_channels = self.out_channels = 3
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        return self.w * x

    def forward_and_detached_tangent(self, x, dx, c_noise, dc_noise):
        return self(x, c_noise), torch.full_like(x, float("nan"))


def test_a_non_finite_loss_names_its_cause():
    model = ctcm.ConsistencyModel(DivergentTangent(), LinearSchedule(), channels=3, resolution=4)
    out = ctcm.create_objective("meanflow")(model, torch.zeros(4, 3, 4, 4), generator=torch.Generator().manual_seed(0))
    assert not torch.isfinite(out.loss)
    assert out.explain is not None
    assert out.explain().startswith("term 'meanflow': the JVP du/dt is non-finite for 4 of 4 samples while u is finite")


def guided_reference(net, x0: Tensor, eps: Tensor, t: Tensor, r: Tensor, y: Tensor, null: int, omega: float,
                     kappa: float, interval: tuple[float, float], p: float, c: float) -> Tensor:
    """MeanFlow's loss with training-time guidance (the paper's Eq. 16 and its appendix's kappa mixing), written
    from the paper with torch.func.jvp and no ctcm code path: v~ = omega v + kappa u(z, t, t | y) +
    (1 - omega - kappa) u(z, t, t | null) where y is a label and t in the interval (v elsewhere), the JVP along
    (v~, 1, 0) and u_tgt = v~ - (t - r) du/dt."""
    z = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * eps
    v = eps - x0
    zero = torch.zeros_like(t)
    with torch.no_grad():
        u_null = net(z, torch.stack([t, zero], 1), y=torch.full_like(y, null))
        u_cond = net(z, torch.stack([t, zero], 1), y=y)
    guided = omega * v + kappa * u_cond + (1 - omega - kappa) * u_null
    apply = ((y != null) & (t >= interval[0]) & (t <= interval[1])).view(-1, 1, 1, 1)
    v_tilde = torch.where(apply, guided, v)

    def u_fn(z_: Tensor, t_: Tensor, r_: Tensor) -> Tensor:
        return net(z_, torch.stack([t_, t_ - r_], dim=1), y=y)

    u, dudt = torch.func.jvp(u_fn, (z, t, r), (v_tilde, torch.ones_like(t), torch.zeros_like(r)))
    target = (v_tilde - (t - r).view(-1, 1, 1, 1) * dudt).detach()
    err = (u - target).pow(2).sum(dim=(1, 2, 3))
    return (err / (err.detach() + c) ** p).mean()


@pytest.mark.parametrize("omega,kappa,interval", [(1.0, 0.0, (0.0, 1.0)), (2.0, 0.0, (0.0, 1.0)),
                                                  (3.0, 0.5, (0.2, 0.8))])
def test_guided_loss_and_gradient_equal_an_independent_implementation(omega, kappa, interval):
    """Training-time guidance (Eq. 41) on a class-conditional WFNO flow map, with some labels dropped (null),
    equals the paper's formulation written with torch.func.jvp, loss and gradient, in float64."""
    from conftest import TINY_WFNO

    torch.manual_seed(0)
    cfg = ModelConfig(ctcm.ComponentConfig("wfno", {**TINY_WFNO, "time_inputs": 2}), ctcm.ComponentConfig("linear"),
                      resolution=8, num_classes=3)
    model = ctcm.build(cfg).to(F64)
    objective = ctcm.create_objective("meanflow", guidance=omega, guidance_mix=kappa,
                                      guidance_interval=list(interval))
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(8, 3, 8, 8, generator=g, dtype=F64) * 2 - 1
    y = torch.tensor([0, 1, 2, 3, 0, 1, 3, 2])  # 3 = the null class (label dropout)
    ctx = ObjectiveContext(model, x0, generator=g, time_distribution=objective.time_distribution(),
                           with_time_derivative=True, cond={"y": y})
    loss = objective.compute(ctx).loss
    ref = guided_reference(model.backbone, x0, ctx.noise, ctx.t, ctx.r, y, model.null_class, omega, kappa,
                           interval, objective.norm_p, objective.norm_eps)
    torch.testing.assert_close(loss, ref, rtol=1e-11, atol=1e-12)
    for a, b in zip(grads(loss, model), grads(ref, model)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    if omega != 1.0:  # guidance changes the loss (the comparison above is not vacuous)
        plain = ctcm.create_objective("meanflow")
        ctx2 = ObjectiveContext(model, x0, generator=torch.Generator().manual_seed(3),
                                time_distribution=plain.time_distribution(), with_time_derivative=True,
                                cond={"y": y})
        assert not torch.allclose(plain.compute(ctx2).loss, loss)


def test_guidance_on_an_unconditional_model_is_one_line():
    objective = ctcm.create_objective("meanflow", guidance=2.0)
    with pytest.raises(ctcm.errors.UserValueError, match="meanflow guidance needs a class-conditional model"):
        objective.check_model(stub_model("linear", time_inputs=2))
    with pytest.raises(ctcm.errors.UserValueError, match="guidance_interval"):
        ctcm.create_objective("meanflow", guidance_interval=[0.8, 0.2])
