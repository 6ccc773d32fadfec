"""Multi-resolution training (``data.resolutions``): the per-step size is part of the reproducible data order,
the resize keeps images in range and content, a run trains at the drawn sizes and resumes exactly."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ctcm
from ctcm.config import ConfigError
from ctcm.engine import Trainer, train
from ctcm.engine.data_order import (OrderedDataset, StepBatchSampler, check_training_resolutions, epoch_resolutions,
                                    resize)
from test_engine import ToyImages, assert_identical, small_config, take, weights


def test_resolutions_leave_the_order_alone_are_one_per_step_and_a_function_of_seed_and_step():
    plain = take(StepBatchSampler(40, 6, seed=3, label_dropout=0.0), 14)
    multi = take(StepBatchSampler(40, 6, seed=3, resolutions=(16, 8, 24)), 14)
    assert [[i[:3] for i in b] for b in multi] == [[i[:3] for i in b] for b in plain]  # images, flips, drops
    assert all(i.size == 0 for b in plain for i in b)
    sizes = [{i.size for i in b} for b in multi]
    assert all(len(s) == 1 for s in sizes) and set().union(*sizes) == {16, 8, 24}  # one size a step, each drawn
    assert take(StepBatchSampler(40, 6, seed=3, start_step=9, resolutions=(16, 8, 24)), 5) == multi[9:]
    ranks = [take(StepBatchSampler(40, 6, seed=3, rank=r, world_size=3, resolutions=(16, 8, 24)), 14) for r in range(3)]
    assert [a + b + c for a, b, c in zip(*ranks)] == multi  # every rank resizes its slice to the step's size
    assert epoch_resolutions(6, 3, 1, (16, 8)) != epoch_resolutions(6, 4, 1, (16, 8)) or \
        epoch_resolutions(50, 3, 1, (16, 8)) != epoch_resolutions(50, 4, 1, (16, 8))  # the seed matters
    assert epoch_resolutions(5, 0, 0, (12,)) == [12] * 5


@settings(max_examples=25, deadline=None)
@given(h=st.integers(4, 24), size=st.integers(4, 40), seed=st.integers(0, 2**16))
def test_resize_keeps_range_shape_and_constants(h, size, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, h, h, generator=g) * 2 - 1
    y = resize(x, size)
    assert y.shape == (3, size, size) and y.abs().max() <= 1.0
    assert torch.equal(resize(x, h), x) and torch.equal(resize(x, 0), x)
    c = torch.full((3, h, h), float(x[0, 0, 0]))
    torch.testing.assert_close(resize(c, size), torch.full((3, size, size), float(x[0, 0, 0])), atol=1e-5, rtol=0)


def test_resize_up_and_back_down_keeps_a_smooth_image():
    """A smooth image survives 16 -> 32 -> 16 (antialiased bicubic) to within 2% of its range; the mean over
    the image (the DC mode) is kept by either resize to within 1e-3."""
    low = torch.rand(2, 3, 3, 3, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    x = torch.nn.functional.interpolate(low, size=16, mode="bicubic", align_corners=False).clamp(-1, 1)
    up = resize(x, 32)
    assert (resize(up, 16) - x).abs().max() < 0.04
    torch.testing.assert_close(up.mean((-2, -1)), x.mean((-2, -1)), atol=1e-3, rtol=0)


def test_the_dataset_resizes_each_item_after_its_flip():
    data = OrderedDataset(ToyImages(n=4))
    x = ToyImages(n=4)[2]
    torch.testing.assert_close(data[(2, True, False, 8)], resize(x.flip(-1), 8), rtol=0, atol=0)
    assert torch.equal(data[(2, False, False)], x)


MULTI = ["data.resolutions=[16, 8]", "optim.decay_steps=6"]


def test_a_multiresolution_run_trains_at_the_drawn_sizes(tmp_path, monkeypatch):
    seen: list[tuple[int, ...]] = []
    monkeypatch.setattr(Trainer, "_train_step",
                        lambda self, x0, cond, stopping=False: (seen.append(tuple(x0.shape)), ({}, True, stopping))[1])
    cfg = small_config("steps=8", "log_every=0", *MULTI)
    Trainer(cfg, tmp_path, dataset=ToyImages(), progress=False).run()
    drawn = take(StepBatchSampler(48, cfg.batch_size, seed=cfg.seed, resolutions=(16, 8)), 8)
    assert seen == [(cfg.batch_size, 3, b[0].size, b[0].size) for b in drawn]
    assert {s[2] for s in seen} == {16, 8}


def test_a_multiresolution_run_resumes_bit_identically(tmp_path):
    data = ToyImages()
    one = train(small_config("steps=6", *MULTI), tmp_path / "one", dataset=data, progress=False)
    train(small_config("steps=3", *MULTI), tmp_path / "two", dataset=data, progress=False)
    second = train(small_config("steps=6", *MULTI), tmp_path / "two", dataset=data, resume=True, progress=False)
    assert_identical(weights(one.checkpoint), weights(second.checkpoint))
    plain = train(small_config("steps=6", "optim.decay_steps=6"), tmp_path / "plain", dataset=data, progress=False)
    assert not all(torch.equal(a, b) for a, b in zip(weights(one.checkpoint).values(),
                                                     weights(plain.checkpoint).values()))  # the sizes did act
    with pytest.raises(ConfigError, match=r"--resume cannot change data\.resolutions"):
        train(small_config("steps=8", "optim.decay_steps=6"), tmp_path / "two", dataset=data, resume=True,
              progress=False)


@pytest.mark.parametrize("bad, says", [("[]", "distinct image sizes >= 4"), ("[2]", "distinct image sizes >= 4"),
                                       ("[16, 16]", "distinct image sizes"), ("[16.5]", "expected int"),
                                       ("[true]", "distinct image sizes >= 4"), ("32", "expected")])
def test_bad_resolutions_are_one_clear_error(bad, says):
    with pytest.raises(ConfigError, match=says) as error:
        small_config(f"data.resolutions={bad}")
    assert str(error.value).startswith("data.resolutions") and "\n" not in str(error.value)


def test_a_fixed_size_backbone_cannot_train_at_other_sizes():
    model = ctcm.build(small_config().model)
    model.backbone.resolution_agnostic = False
    check_training_resolutions(model, [16])  # its own size is fine
    with pytest.raises(ConfigError, match=r"trains at \[8\].*works at 16x16 only.*data\.resolutions=null"):
        check_training_resolutions(model, [16, 8])


def test_a_size_the_model_cannot_run_at_is_one_line_before_the_run_writes_anything(tmp_path):
    """A U-Net asked for 12x12 (its levels need multiples of 8): the backbone's own message as a ConfigError when
    the Trainer is built, not at the first step after the run folder holds a config."""
    cfg = small_config("steps=2", "model.backbone={name: unet}", "data.resolutions=[16, 12]")
    with pytest.raises(ConfigError, match=r"cannot train at 12x12 .*divisible by 8.*drop 12"):
        Trainer(cfg, tmp_path / "run", dataset=ToyImages(), progress=False)
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing written: the corrected command just runs
