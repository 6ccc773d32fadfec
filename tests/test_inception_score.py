"""The Inception Score (Eq. 33) against an independent float64 formula, its logits from the FID features,
the clear error without its weights, in-training scores of a conditional model, and ``ctcm fid``."""

from __future__ import annotations

import json

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis.extra.numpy import arrays

import ctcm
from ctcm.metrics import FeatureNetworkError, FIDEvaluator, InceptionLogits, find_logit_weights, inception_score
from ctcm.metrics.per_class import per_class_fid
from ctcm.sampling import class_labels

from conftest import TINY_WFNO


def is_by_hand(logits: np.ndarray, splits: int, seed: int = 2020) -> tuple[float, float]:
    """exp(mean_x sum_c p(c|x) (log p(c|x) - log p(c))) per split, written from the definition."""
    x = logits[np.random.RandomState(seed).permutation(len(logits))].astype(np.float64)
    scores = []
    for i in range(splits):
        part = x[i * len(x) // splits:(i + 1) * len(x) // splits]
        z = part - part.max(1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        marginal = p.mean(0)
        kl = (p * (np.log(np.clip(p, 1e-300, None)) - np.log(marginal))).sum(1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


@settings(max_examples=20, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(20, 60), st.integers(2, 12)), elements=st.floats(-8, 8)),
       st.sampled_from([1, 2, 5, 10]))
def test_inception_score_equals_the_definition_and_lies_in_1_to_classes(logits, splits):
    mean, std = inception_score(torch.from_numpy(logits), splits=splits)
    ref_mean, ref_std = is_by_hand(logits, splits)
    assert mean == pytest.approx(ref_mean, rel=1e-9) and std == pytest.approx(ref_std, rel=1e-6, abs=1e-9)
    assert 1 - 1e-9 <= mean <= logits.shape[1] + 1e-9


def test_inception_score_of_confident_balanced_predictions_is_the_class_count():
    k = 7
    confident = torch.eye(k).repeat(20, 1) * 50.0  # each image sure of one class, classes balanced
    assert inception_score(confident, splits=1)[0] == pytest.approx(k, rel=1e-6)
    assert 1 < inception_score(confident, splits=5)[0] < k  # a shuffled split of 28 is not exactly balanced
    assert inception_score(torch.zeros(50, k), splits=5)[0] == pytest.approx(1.0)  # no information
    with pytest.raises(ValueError, match="N >= 10 splits"):
        inception_score(torch.zeros(5, k))


def test_logits_are_the_features_times_the_softmax_weight(tmp_path, monkeypatch):
    w = torch.randn(1008, 2048, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.save({"fc.weight": w.float(), "fc.bias": torch.zeros(1008)}, tmp_path / "w.pth")
    feats = np.random.default_rng(0).random((3, 2048)).astype(np.float32)
    logits = InceptionLogits(tmp_path / "w.pth")(feats)
    expected = np.einsum("nd,cd->nc", feats.astype(np.float64), w.float().double().numpy())
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-10, atol=1e-9)
    monkeypatch.setenv("CTCM_IS_WEIGHTS", str(tmp_path / "w.pth"))
    assert find_logit_weights() == tmp_path / "w.pth"
    torch.save({"fc.weight": torch.zeros(10, 2048)}, tmp_path / "bad.pth")
    with pytest.raises(FeatureNetworkError, match=r"fc.weight is \(10, 2048\), expected \(1008, 2048\)"):
        InceptionLogits(tmp_path / "bad.pth")


def test_missing_score_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.delenv("CTCM_IS_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FeatureNetworkError, match="weights-inception-2015-12-05-6726825d.pth.*--is-weights"):
        InceptionLogits()


class MeanColour:
    """A stand-in feature network: per-channel means and spreads (B, 6)."""

    sha1 = "stub"

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(images.astype(np.float64) / 255)
        return torch.cat([x.mean((1, 2)), x.std((1, 2))], 1).float()


def test_fid_evaluator_scores_class_balanced_samples_with_their_inception_score(tmp_path):
    torch.manual_seed(0)
    cfg = ctcm.ModelConfig(ctcm.ComponentConfig("wfno", TINY_WFNO), ctcm.ComponentConfig("geometric"),
                           resolution=8, num_classes=5)
    model = ctcm.build(cfg)
    images = np.random.default_rng(0).integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "ref.npz", x=images)
    seen = []
    ev = FIDEvaluator(tmp_path / "ref.npz", 20, batch_size=8, cache_dir=tmp_path, network=MeanColour(),
                      progress=False, inception_score=True, logits=lambda f: torch.from_numpy(f).double())
    original = ctcm.metrics.evaluate.sample_batches

    def spy(*args, cond=None, **kwargs):
        seen.append(cond["y"])
        return original(*args, cond=cond, **kwargs)

    ctcm.metrics.evaluate.sample_batches = spy
    try:
        scores = ev.scores(model, steps=1, seed=3)
    finally:
        ctcm.metrics.evaluate.sample_batches = original
    assert set(scores) == {"fid", "is_mean", "is_std"} and scores["fid"] > 0 and scores["is_mean"] >= 1
    assert torch.equal(seen[0], class_labels(3, 0, 20, 5))  # the conditional protocol: class-balanced
    assert ev.evaluate(model, steps=1, seed=3) == scores["fid"]


def test_per_class_fid_compares_each_class_with_its_own_images():
    rng = np.random.default_rng(0)
    ref = np.concatenate([rng.normal(k, 1, (200, 3)) for k in range(3)])
    ref_y = np.repeat(np.arange(3), 200)
    gen, gen_y = ref[::-1].copy(), ref_y[::-1].copy()  # the same images in another order: each class matches
    out = per_class_fid(gen, gen_y, ref, ref_y, ["a", "b", "c"])
    assert list(out) == ["a", "b", "c"] and max(out.values()) < 1e-6
    swapped = per_class_fid(gen, (gen_y + 1) % 3, ref, ref_y, ["a", "b", "c"])
    assert min(swapped.values()) > 2.0  # a class's images against another class: means 1 or 2 apart


def test_ctcm_fid_refuses_per_class_fid_of_unlabelled_sets_before_any_feature(tmp_path, capsys):
    from ctcm.metrics.cli import main_fid

    images = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "plain.npz", x=images)
    np.savez(tmp_path / "gen.npz", x=images, y=np.arange(4) % 2)
    assert main_fid(["--gen", str(tmp_path / "gen.npz"), "--ref", str(tmp_path / "plain.npz"), "--quiet",
                     "--per-class", "--weights", str(tmp_path / "none.pt")]) == 2
    assert "plain.npz has no class labels, which per-class FID needs" in capsys.readouterr().err
    assert main_fid(["--gen", str(tmp_path / "gen.npz"), "--ref", str(tmp_path / "gen.npz"), "--quiet",
                     "--inception-score", "--is-weights", str(tmp_path / "none.pth")]) == 2
    assert "none.pth: no such file" in capsys.readouterr().err


@pytest.mark.slow  # the real Inception network on 10 images: a minute on a loaded CPU
@pytest.mark.skipif(not __import__("ctcm.metrics.network", fromlist=["x"])._installed_weights(),
                    reason="FID weights absent")
def test_ctcm_fid_reports_the_inception_score_and_per_class_fid(tmp_path, capsys):
    from ctcm.metrics.cli import main_fid

    images = np.random.default_rng(1).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "gen.npz", x=images, y=np.arange(10) % 2, classes=np.array(["a", "b"]))
    torch.save({"fc.weight": torch.randn(1008, 2048) * 0.01}, tmp_path / "w.pth")
    args = ["--gen", str(tmp_path / "gen.npz"), "--ref", str(tmp_path / "gen.npz"), "--quiet", "--batch-size", "10",
            "--cache-dir", str(tmp_path), "--json", str(tmp_path / "r.json")]
    assert main_fid([*args, "--inception-score", "--is-weights", str(tmp_path / "w.pth"), "--per-class"]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert abs(result["fid"]) < 1e-3 and result["is_mean"] >= 1 and set(result["fid_per_class"]) == {"a", "b"}
    assert "IS " in capsys.readouterr().out
