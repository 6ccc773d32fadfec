"""ctcm.sampling: free functions of a callable, a schedule and a shape (the model is not imported); image i
depends only on (seed, i); in-training FID samples are the `ctcm sample` images."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import ctcm
from ctcm.cli import main
from ctcm.metrics import FIDEvaluator
from ctcm.sampling import ImageNoise, image_seed, multistep_sample, sample_all, sample_batches, to_uint8

from conftest import stub_model


@pytest.mark.parametrize("steps", [1, 2])
def test_image_i_is_the_same_for_any_batch_size_and_rank_count(steps):
    model = stub_model().eval()
    reference = model.sample(7, seed=4, steps=steps, batch_size=7)
    for batch_size in (1, 3):
        torch.testing.assert_close(model.sample(7, seed=4, steps=steps, batch_size=batch_size), reference,
                                   rtol=0, atol=0)
    parts = {}
    for rank in (0, 1):
        parts.update(dict(model.sample_batches(7, seed=4, steps=steps, batch_size=3, rank=rank, world_size=2)))
    assert sorted(parts) == [0, 3, 6]
    assert torch.equal(torch.cat([parts[k] for k in sorted(parts)]), reference)
    assert torch.equal(model.sample(3, seed=4, steps=steps, batch_size=2), reference[:3])  # a prefix of n
    assert not torch.equal(model.sample(7, seed=5, steps=steps, batch_size=7), reference)


def test_renoising_draw_belongs_to_the_image():
    """Draw k of image i is the same whatever the other images of its batch are."""
    alone = ImageNoise(3, range(5, 6), (2, 2), device=torch.device("cpu"), dtype=torch.float64)
    among = ImageNoise(3, range(2, 7), (2, 2), device=torch.device("cpu"), dtype=torch.float64)
    first, second = alone(), alone()
    both = among(), among()
    assert torch.equal(both[0][3], first[0]) and torch.equal(both[1][3], second[0])
    assert not torch.equal(first, second)
    assert image_seed(0, 1) != image_seed(1, 0)
    with pytest.raises(ValueError, match="non-negative"):
        image_seed(-1, 0)


def test_first_draw_is_the_starting_noise():
    """Image i starts from the first draw of its generator (the re-noising draws follow it)."""
    model = stub_model().eval()
    noise = ImageNoise(2, range(4), (3, 8, 8), device=torch.device("cpu"), dtype=torch.float64)()
    one = ctcm.multistep_sample(model, noise, ctcm.default_times(model.schedule, 1),
                                schedule=model.schedule).clamp(-1, 1)
    assert torch.equal(model.sample(4, seed=2, steps=1), one)


def test_model_sample_is_the_batched_sampler():
    model = stub_model().eval()
    assert torch.equal(model.sample(5, steps=2, seed=9), model.sample(5, steps=2, seed=9, batch_size=2))
    free = sample_all(model, 5, schedule=model.schedule, shape=(3, 8, 8), dtype=torch.float64, steps=2, seed=9,
                      batch_size=2)  # the free function, given what the model fills in
    assert torch.equal(model.sample(5, steps=2, seed=9), free)


def test_sampling_does_not_import_the_model():
    """model.py imports sampling, never the reverse (not even for type hints): the samplers are free functions."""
    tree = ast.parse((Path(ctcm.__file__).parent / "sampling.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "model" not in imported and "ctcm.model" not in imported, imported
    assert all(not (m or "").endswith("model") for m in imported), imported


def test_multistep_sample_of_a_plain_function_is_eq_12():
    """Eq. 12 for f(x, t) = (1/2 + t) x, a plain function (no model, no weights), written out by hand in float64:
    x0 = f(prior_std z, t0), x1 = alpha(t1) x0 + sigma(t1) eps, result f(x1, t1); the trigflow schedule's
    alpha = cos t, sigma = sin t (Eq. 4) and prior_std = sigma_data are used directly, not through the schedule."""
    schedule = ctcm.create_schedule("trigflow")
    calls = []

    def f(x, t):
        calls.append(t.shape)
        return (0.5 + t)[:, None, None, None] * x

    z = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    eps = torch.randn_like(z)
    t0, t1 = schedule.t_max, 0.3
    out = multistep_sample(f, z, [t0, t1], schedule=schedule, noise_sampler=lambda: eps)
    x0 = (0.5 + t0) * (schedule.sigma_data * z)
    expected = (0.5 + t1) * (np.cos(t1) * x0 + schedule.sigma_data * np.sin(t1) * eps)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert calls == [(3,), (3,)]
    batches = list(sample_batches(f, 5, schedule=schedule, shape=(2, 4, 4), dtype=torch.float64, batch_size=2,
                                  steps=2, seed=1))
    assert [start for start, _ in batches] == [0, 2, 4] and batches[-1][1].shape == (1, 2, 4, 4)


def test_to_uint8_layout_and_rounding():
    x = torch.stack([torch.full((4, 5), v) for v in (-1.0, 0.0, 1.0)])[None]  # (1, 3, 4, 5)
    u8 = to_uint8(x)
    assert u8.shape == (1, 4, 5, 3) and u8.dtype == np.uint8
    assert u8[0, 0, 0].tolist() == [0, 128, 255]
    with pytest.raises(ValueError, match=r"expected images \(B, C, H, W\)"):
        to_uint8(torch.zeros(3, 4, 5))


class RecordingNetwork:
    """A feature network that keeps every uint8 batch it embeds."""

    sha1 = "recording"

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        self.batches.append(images.copy())
        return torch.from_numpy(images.reshape(len(images), -1)[:, :8].astype(np.float32))


def test_in_training_fid_samples_equal_ctcm_sample(tmp_path):
    """The images an FIDEvaluator embeds for seed s are those `ctcm sample --seed s` writes, image for image."""
    model = stub_model(dtype=torch.float32)
    ref = tmp_path / "ref.npz"
    np.savez(ref, x=np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8))
    net = RecordingNetwork()
    ev = FIDEvaluator(str(ref), num_samples=7, batch_size=4, cache_dir=tmp_path / "cache", network=net, progress=False)
    net.batches.clear()
    ev.evaluate(model, steps=2, seed=5)
    in_training = np.concatenate(net.batches)

    ckpt = tmp_path / "model.pt"
    ctcm.save_checkpoint(ckpt, model, ema=ctcm.EMA(model, decay=0.9), step=0)
    out = tmp_path / "samples.npz"
    assert main(["sample", "--ckpt", str(ckpt), "--num-samples", "7", "--batch-size", "3", "--steps", "2",
                 "--seed", "5", "--npz", str(out), "--device", "cpu", "--no-progress"]) == 0
    offline = np.load(out)["x"]
    assert in_training.shape == offline.shape == (7, 8, 8, 3)
    np.testing.assert_array_equal(in_training, offline)
