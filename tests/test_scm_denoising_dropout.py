"""sCM against an independent Algorithm 1 (float64), the denoising loss, and the shared dropout mask."""

from __future__ import annotations

import pytest
import torch

import ctcm
from ctcm.objective import ObjectiveContext
from conftest import tiny_model


def batch(n=4, seed=0):
    return torch.rand(n, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def grads(params, loss) -> torch.Tensor:
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, retain_graph=True)])


def algorithm_1(model, x0, z, t, step, warmup_steps, c=0.1, prior=False):
    """sCM Algorithm 1 written from the paper with torch.func.jvp (no ctcm objective code):
    x_t = cos t x0 + sin t z, dx_t/dt = cos t z - sin t x0, F = F_theta(x_t / sigma_d, t)."""
    sd = model.schedule.sigma_data
    cos, sin = torch.cos(t).view(-1, 1, 1, 1), torch.sin(t).view(-1, 1, 1, 1)
    x_t, v = cos * x0 + sin * z, cos * z - sin * x0
    net = lambda x, s: model.backbone(x / sd, s)  # (trigflow: c_in = 1/sigma_d, c_noise = t)
    with torch.no_grad():
        F_minus, dF = torch.func.jvp(net, (x_t, t), (v, torch.ones_like(t)))
    r = min(1.0, step / warmup_steps)
    g = -cos**2 * (sd * F_minus - v) - r * cos * sin * (x_t + sd * dF)
    g = g / (g.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + c)
    F = net(x_t, t)
    per_sample = (F - F.detach() - g).pow(2).flatten(1).mean(1)
    if prior:
        per_sample = per_sample / (sd * torch.tan(t))
    return per_sample.mean()


@pytest.mark.parametrize("prior", [False, True])
def test_scm_loss_and_gradient_equal_algorithm_1(prior):
    model = tiny_model("trigflow")
    x0 = batch()
    scm = ctcm.create_objective("scm", adaptive=False, warmup_steps=10, prior_weighting=prior)
    ctx = ObjectiveContext(model, x0, step=4, generator=torch.Generator().manual_seed(3),
                           time_distribution=scm.time_distribution())
    z = ctx.noise * model.schedule.sigma_data  # our eps ~ N(0, I); TrigFlow's z = sigma_d eps
    ours = scm.compute(ctx).loss
    ref = algorithm_1(model, x0, z, ctx.t, step=4, warmup_steps=10, prior=prior)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=0)
    params = list(model.parameters())
    g_ours, g_ref = grads(params, ours), grads(params, ref)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-8, atol=1e-12)
    assert g_ref.norm() > 0


def test_scm_adaptive_weighting_trains_w_phi_and_matches_its_formula():
    model = tiny_model("trigflow")
    scm = ctcm.create_objective("scm", warmup_steps=0)
    weight = scm.parameters_module()
    weight.double()
    torch.nn.init.normal_(weight.net[-1].weight, std=0.1)  # away from the zero init, so w_phi(t) varies
    ctx = ObjectiveContext(model, batch(), generator=torch.Generator().manual_seed(1),
                           time_distribution=scm.time_distribution())
    loss = scm.compute(ctx).loss
    plain = ctcm.create_objective("scm", warmup_steps=0, adaptive=False)
    ctx2 = ObjectiveContext(model, batch(), generator=torch.Generator().manual_seed(1),
                            time_distribution=plain.time_distribution())
    mse = (ctx2.raw - ctx2.raw.detach() - plain.tangent(ctx2)).pow(2).flatten(1).mean(1)
    w = weight(ctx2.t)
    torch.testing.assert_close(loss, (torch.exp(-w) * mse + w).mean())
    g_w = grads(list(weight.parameters()), loss)
    assert torch.isfinite(g_w).all() and g_w.norm() > 0


def test_scm_refuses_a_non_trigflow_model():
    with pytest.raises(ValueError, match="trigflow"):
        ctcm.create_objective("scm")(tiny_model("geometric"), batch())


def test_denoising_is_edm_and_flow_matching(schedule_name):
    model = tiny_model(schedule_name)
    den = ctcm.create_objective("denoising")
    ctx = ObjectiveContext(model, batch(), generator=torch.Generator().manual_seed(5),
                           time_distribution=den.time_distribution())
    loss = den.compute(ctx).loss
    s, t = model.schedule, ctx.t
    if schedule_name == "geometric":  # EDM: lambda(sigma) ||D - x0||^2 with lambda = 1 / c_out^2
        sigma = s.sigma(t)
        c_out = s.sigma_data * (sigma - s.sigma_min) / torch.sqrt(sigma**2 + s.sigma_data**2)
        ref = ((ctx.f - ctx.x0).flatten(1).pow(2).mean(1) / c_out**2).mean()
    elif schedule_name == "linear":  # f = x_t - t F: (f - x0) / c_out = F - (eps - x0), rectified flow matching
        ref = (ctx.raw - ctx.dx_dt).flatten(1).pow(2).mean(1).mean()
    else:  # TrigFlow flow matching: ||sigma_d F - dx_t/dt||^2 / sigma_d^2
        ref = ((s.sigma_data * ctx.raw - ctx.dx_dt).flatten(1).pow(2).mean(1)).mean() / s.sigma_data**2
    torch.testing.assert_close(loss, ref)


@pytest.mark.parametrize("backbone", ["wfno", "unet"])
def test_dropout_mask_is_shared_by_online_target_and_jvp(backbone):
    if backbone == "wfno":
        model = tiny_model(dropout=0.5)
    else:
        torch.manual_seed(0)
        model = ctcm.build("unet-cifar", backbone={"model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                                                   "attn_levels": [], "emb_dim": 16, "dropout": 0.5},
                           resolution=8).double()
        for p in model.parameters():  # the residual branches start at zero, which would hide the dropout
            if not p.detach().any():
                torch.nn.init.normal_(p, std=0.1)
    model.train()
    x, v = batch(), batch(seed=1)
    t = torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=torch.float64) * model.schedule.t_max
    model.resample_noise_(torch.Generator().manual_seed(0))
    f1, f2 = model(x, t), model(x, t)
    torch.testing.assert_close(f1, f2, rtol=0, atol=0)  # one mask within a step
    d = model.time_derivative(x, t, v)
    torch.testing.assert_close(d.f, f1)
    with torch.no_grad():  # the hand-written / func JVP differentiates the same masked function
        ref = ctcm.total_derivative(model, x, t, v)[1]
    torch.testing.assert_close(d.df_dt(), ref)
    model.resample_noise_(torch.Generator().manual_seed(1))
    assert not torch.allclose(model(x, t), f1)  # a new step, a new mask
    model.eval()
    torch.testing.assert_close(model(x, t), model(x, t))


@pytest.mark.parametrize("backbone", ["wfno", "unet"])
@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_apply_their_slice_of_the_global_dropout_mask(backbone, world_size):
    """Under DDP each rank holds a slice of the global batch and a generator in the same state: the
    dropout masks of W ranks together equal one process's masks for the whole batch (issue 16, item 1)."""
    if backbone == "wfno":
        model = tiny_model(dropout=0.5)
    else:
        torch.manual_seed(0)
        model = ctcm.build("unet-cifar", backbone={"model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                                                   "attn_levels": [], "emb_dim": 16, "dropout": 0.5},
                           resolution=8).double()
        for p in model.parameters():  # the residual branches start at zero, which would hide the dropout
            if not p.detach().any():
                torch.nn.init.normal_(p, std=0.1)
    model.train()
    x = batch(2 * world_size)
    t = torch.linspace(0.1, 0.9, 2 * world_size, dtype=torch.float64) * model.schedule.t_max
    model.resample_noise_(torch.Generator().manual_seed(3))
    whole = model(x, t)
    for rank in range(world_size):
        model.resample_noise_(torch.Generator().manual_seed(3), rank=rank, world_size=world_size)
        part = model(x[2 * rank:2 * rank + 2], t[2 * rank:2 * rank + 2])
        torch.testing.assert_close(part, whole[2 * rank:2 * rank + 2])
    model.resample_noise_(torch.Generator().manual_seed(3), rank=0, world_size=1)
    model.eval()  # the masks do matter: without them the outputs differ
    assert not torch.allclose(model(x, t), whole)


def test_a_backbone_whose_resample_hook_lacks_rank_is_refused():
    class OldHook(ctcm.Backbone):
        in_channels = out_channels = 3

        def forward(self, x, c_noise):
            return x

        def resample_noise_(self, generator=None):
            pass

    with pytest.raises(TypeError, match="rank and world_size.*resample_noise_\\(self, generator=None, \\*, rank=0"):
        ctcm.ConsistencyModel(OldHook(), ctcm.create_schedule("geometric"))
