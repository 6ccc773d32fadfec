"""Class-conditional models: model.num_classes, the label embedding of every reference backbone (and the
WFNO's hand-written tangent at a constant label), the null class, checkpoints, the class-balanced seed rule
and classifier-free guidance."""

from __future__ import annotations

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from hypothesis import given, settings

import ctcm
from ctcm.config import ConfigError, ModelConfig
from ctcm.errors import UserValueError
from ctcm.sampling import class_cond, class_labels

from conftest import TINY_WFNO, needs_neuralop

K = 4


def conditional(backbone: str = "wfno", dtype: torch.dtype = torch.float64, **kwargs) -> ctcm.ConsistencyModel:
    """A 3x8x8 model with ``K`` classes whose label table is large enough to matter (the init is N(0, 0.02^2)),
    every weight moved off its initialisation (the U-Net's output convolution starts at zero)."""
    torch.manual_seed(0)
    base = {"wfno": TINY_WFNO, "unet": {"model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                                         "attn_levels": [1], "emb_dim": 16},
            "fno": {"width": 8, "n_layers": 1, "modes": 4, "time_channels": 4}}[backbone]
    cfg = ModelConfig(ctcm.ComponentConfig(backbone, {**base, **kwargs}), ctcm.ComponentConfig("geometric"),
                      resolution=8, num_classes=K)
    model = ctcm.build(cfg).to(dtype)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        model.backbone.embed.labels.weight.normal_(0, 1.0, generator=g)
    return model


def _inputs(dtype: torch.dtype = torch.float64, b: int = 3):
    g = torch.Generator().manual_seed(1)
    x, dx = (torch.randn(b, 3, 8, 8, generator=g, dtype=dtype) for _ in range(2))
    c, dc = torch.rand(b, generator=g, dtype=dtype) * 2 - 1, torch.randn(b, generator=g, dtype=dtype)
    return x, dx, c, dc


@pytest.mark.parametrize("options", [{}, {"film": False, "time_channels": 4}, {"positional_grid": True,
                                                                                "time_channels": 2}])
def test_wfno_hand_written_tangent_at_a_constant_label_equals_torch_func_jvp(options):
    net = conditional(**options).backbone.train()
    net.resample_noise_(torch.Generator().manual_seed(0))
    x, dx, c, dc = _inputs()
    y = torch.tensor([0, 3, K])  # K: the null class
    expected = torch.func.jvp(lambda a, b: net(a, b, y=y), (x, c), (dx, dc))
    torch.testing.assert_close(net.forward_and_tangent(x, dx, c, dc, y=y), expected)
    f, d = net.forward_and_detached_tangent(x, dx, c, dc, y=y)
    torch.testing.assert_close((f, d), expected)
    assert not torch.allclose(net(x, c, y=torch.tensor([1, 3, K])), expected[0])  # the label is not ignored


@pytest.mark.parametrize("backbone", ["wfno", "unet", pytest.param("fno", marks=needs_neuralop)])
def test_every_reference_backbone_takes_labels_and_a_null_class(backbone):
    dtype = torch.float32 if backbone == "fno" else torch.float64
    model = conditional(backbone, dtype).eval()
    x, _, _, _ = _inputs(dtype, 2)
    t = torch.full((2,), 0.5, dtype=dtype)
    a, b = model(x, t, y=torch.tensor([0, 1])), model(x, t, y=torch.tensor([0, 2]))
    torch.testing.assert_close(a[0], b[0])
    assert not torch.allclose(a[1], b[1])
    torch.testing.assert_close(model(x, t), model(x, t, y=torch.full((2,), model.null_class)))  # no label: null
    assert model.backbone.embed.labels.weight.shape[0] == K + 1


def test_unconditional_models_have_no_label_parameters_and_refuse_labels():
    model = ctcm.build("wfno-cifar", backbone=TINY_WFNO, resolution=8)
    assert model.num_classes == 0 and not [k for k in model.state_dict() if "labels" in k]
    with pytest.raises(UserValueError, match="unconditional backbone.*model.num_classes=K"):
        model(torch.zeros(1, 3, 8, 8), torch.tensor([0.5]), y=torch.tensor([0]))
    with pytest.raises(UserValueError, match="unconditional"):
        _ = model.null_class


def test_bad_labels_and_backbones_get_one_clear_line():
    model = conditional()
    x, t = torch.zeros(2, 3, 8, 8, dtype=torch.float64), torch.full((2,), 0.5, dtype=torch.float64)
    with pytest.raises(UserValueError, match=r"lie in \[0, 3\] \(or 4: the null class\), got 7"):
        model(x, t, y=torch.tensor([0, 7]))
    with pytest.raises(UserValueError, match=r"integer tensor of shape \(2,\)"):
        model(x, t, y=torch.tensor([0.0, 1.0]))
    with pytest.raises(UserValueError, match=r"integer tensor of shape \(2,\)"):
        model(x, t, y=torch.tensor([0]))
    cfg = ModelConfig(ctcm.ComponentConfig("stub"), ctcm.ComponentConfig("geometric"), num_classes=3)
    with pytest.raises(ConfigError, match="'stub' takes no num_classes.*model.num_classes=0"):
        ctcm.build(cfg)
    with pytest.raises(ConfigError, match="num_classes must be an integer >= 0"):
        ModelConfig(ctcm.ComponentConfig("wfno"), ctcm.ComponentConfig("geometric"), num_classes=-1)
    with pytest.raises(ConfigError, match="set model.num_classes instead"):
        ctcm.build("wfno-cifar", backbone={"num_classes": 3})


def test_a_conditional_checkpoint_round_trips_with_its_class_names(tmp_path):
    model = conditional()
    model.class_names = ["a", "b", "c", "d"]
    ctcm.save_checkpoint(tmp_path / "c.pt", model)
    again = ctcm.load_checkpoint(tmp_path / "c.pt")
    assert again.num_classes == K and again.class_names == ["a", "b", "c", "d"] and again.config == model.config
    y = torch.tensor([3, 0])
    torch.testing.assert_close(again.sample(2, seed=4, cond={"y": y}), model.eval().sample(2, seed=4, cond={"y": y}))


def test_the_conditional_recipe():
    recipe = ctcm.create_recipe("wfno-cifar-cond")
    assert recipe.model.num_classes == 10 and recipe.train["data"]["label_dropout"] == 0.1
    assert recipe.model.backbone == ctcm.create_recipe("wfno-cifar").model.backbone


# -- the class-balanced seed rule ----------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), k=st.integers(1, 12), start=st.integers(0, 60), n=st.integers(0, 60))
def test_class_labels_are_a_function_of_seed_and_index_and_balanced(seed, k, start, n):
    whole = class_labels(seed, 0, start + n, k)
    assert torch.equal(class_labels(seed, start, start + n, k), whole[start:])  # any slice, same labels
    blocks = whole[: (start + n) // k * k].view(-1, k)
    assert torch.equal(blocks.sort(1).values, torch.arange(k).expand_as(blocks))  # each block: every class once


def test_class_labels_change_with_the_seed_and_class_cond_checks():
    assert not torch.equal(class_labels(0, 0, 40, 10), class_labels(1, 0, 40, 10))
    assert torch.equal(class_cond(K, 5, 9)["y"], class_labels(5, 0, 9, K))
    assert torch.equal(class_cond(K, 5, 3, 2)["y"], torch.tensor([2, 2, 2]))
    assert class_cond(0, 5, 3) == {}
    with pytest.raises(UserValueError, match=r"classes 0..3"):
        class_cond(K, 5, 3, 4)
    with pytest.raises(UserValueError, match="unconditional model"):
        class_cond(0, 0, 3, 1)


# -- classifier-free guidance (Eq. 32) -------------------------------------------------------------------------------
@pytest.mark.parametrize("w", [0.0, 1.0, 2.5])
def test_one_step_guidance_is_the_combination_of_the_conditional_and_null_samples(w):
    model = conditional().eval()
    y = torch.tensor([1, 3, 0])
    null = torch.full_like(y, K)
    kw = dict(seed=2, steps=1, clip=False)
    guided = model.sample(3, cond={"y": y}, guidance=w, **kw)
    expected = (1 - w) * model.sample(3, cond={"y": null}, **kw) + w * model.sample(3, cond={"y": y}, **kw)
    torch.testing.assert_close(guided, expected)


def test_two_step_guidance_guides_each_step_and_needs_a_conditional_model():
    model = conditional().eval()
    y = torch.tensor([1, 2])
    a = model.sample(2, seed=0, steps=2, cond={"y": y}, guidance=2.0)
    b = model.sample(2, seed=0, steps=2, cond={"y": y})
    assert a.shape == b.shape and not torch.allclose(a, b)
    assert torch.equal(model.sample(2, seed=0, steps=2, cond={"y": y}, guidance=2.0), a)
    with pytest.raises(UserValueError, match="guidance=2.0 needs a class-conditional model"):
        ctcm.build("wfno-cifar", backbone=TINY_WFNO, resolution=8).sample(2, seed=0, guidance=2.0)
    assert np.isfinite(a.numpy()).all()


def test_the_objective_context_gives_the_null_conditioning_for_training_time_guidance():
    model = conditional()
    x0 = torch.zeros(3, 3, 8, 8, dtype=torch.float64)
    ctx = ctcm.ObjectiveContext(model, x0, cond={"y": torch.tensor([0, 2, 1])})
    assert torch.equal(ctx.null_cond()["y"], torch.full((3,), K))
    assert torch.equal(ctx.cond["y"], torch.tensor([0, 2, 1]))  # the step's own labels are untouched
    assert ctcm.ObjectiveContext(model, x0).null_cond() == {}


# -- ctcm sample ------------------------------------------------------------------------------------------------------
def test_ctcm_sample_writes_class_balanced_labelled_sets_one_class_and_a_named_grid(tmp_path, capsys):
    from PIL import Image

    from ctcm.sampling_cli import main_sample

    model = conditional(dtype=torch.float32)
    model.class_names = ["cat", "dog", "emu", "fox"]
    ctcm.save_checkpoint(tmp_path / "c.pt", model)
    common = ["--ckpt", str(tmp_path / "c.pt"), "--num-samples", "10", "--batch-size", "4", "--device", "cpu",
              "--no-progress", "--seed", "3"]
    assert main_sample([*common, "--npz", str(tmp_path / "all.npz"), "--grid", str(tmp_path / "g.png")]) == 0
    with np.load(tmp_path / "all.npz") as data:
        assert data["x"].shape == (10, 8, 8, 3) and data["classes"].tolist() == model.class_names
        assert data["y"].tolist() == class_labels(3, 0, 10, K).tolist()
        every = data["x"]
    assert "class-balanced" in capsys.readouterr().out
    grid = np.asarray(Image.open(tmp_path / "g.png"))
    assert grid.shape[0] == K * 10 + 2  # one row of 8x8 images (plus 2-pixel gaps) per class
    assert main_sample([*common, "--npz", str(tmp_path / "one.npz"), "--class", "2", "--guidance", "1.5"]) == 0
    with np.load(tmp_path / "one.npz") as data:
        assert set(data["y"].tolist()) == {2} and not np.array_equal(data["x"], every)
    plain = ctcm.build("wfno-cifar", backbone=TINY_WFNO, resolution=8)
    ctcm.save_checkpoint(tmp_path / "u.pt", plain)
    capsys.readouterr()
    assert main_sample(["--ckpt", str(tmp_path / "u.pt"), "--npz", str(tmp_path / "u.npz"), "--class", "1",
                        "--device", "cpu"]) == 2
    assert "unconditional model (model.num_classes=0)" in capsys.readouterr().err
