"""The quality evaluation saves its samples' Inception statistics; ``quality-refid`` rescores them against another
reference set without sampling again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from benchmarks.quality_eval import fid_of, sample_statistics_path
from benchmarks.quality_refid import main, refid
from ctcm.metrics import Statistics, statistics_from_features

STUDY = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "quality-cpu-backbone-x2.json"


class PooledPixels:
    """A stand-in feature network: uint8 (B, H, W, 3) -> the 4x4-pooled pixels (B, 48)."""

    sha1 = "pooled-pixels"

    def __call__(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(batch).float().permute(0, 3, 1, 2)
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    """FID of two feature sets, written out from the definition (independent of ctcm.metrics)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(ca @ cb).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * root))


def _features(seed: int, n: int = 80, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 48)).astype(np.float32) * scale


def test_fid_of_saves_the_statistics_of_the_samples_it_scored(tmp_path) -> None:
    x = torch.rand(80, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ref = statistics_from_features(_features(1, scale=40.0) + 120.0, keep_features=True)
    path = tmp_path / "step_00000010.inception1step.npz"
    fid = fid_of(x, PooledPixels(), ref, batch_size=32, save_to=path, meta={"sample_seed": 7})
    saved = Statistics.load(path)
    assert saved.count == 80 and saved.features.shape == (80, 48)
    assert saved.meta["sample_seed"] == 7 and saved.meta["network_sha1"] == "pooled-pixels"
    pixels = ((x + 1) * 127.5).round().clamp(0, 255)  # what the network saw, pooled independently
    assert np.allclose(saved.features, torch.nn.functional.avg_pool2d(pixels, 4).flatten(1).numpy(), atol=0.02)
    assert fid == pytest.approx(_frechet(saved.features, ref.features), rel=1e-6)


def _study_with_saved_statistics(tmp_path: Path) -> tuple[dict, dict[tuple[str, int, int], np.ndarray]]:
    """The stored 2x study with its final checkpoints moved under tmp_path, each given sample statistics."""
    study = json.loads(STUDY.read_text())
    features = {}
    for i, run in enumerate(study["runs"]):
        for point in run["points"]:
            point["path"] = str(tmp_path / run["recipe"] / f"seed{run['seed']}" / Path(point["path"]).name)
            for k in (1, 2):
                if f"fid_{k}step" in point:
                    f = features[run["recipe"], run["seed"], k] = _features(10 * i + k, scale=1 + 0.1 * k)
                    path = sample_statistics_path(point["path"], k)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    statistics_from_features(f).save(path)
    return study, features


def test_refid_rescores_every_fid_from_the_saved_statistics(tmp_path) -> None:
    study, features = _study_with_saved_statistics(tmp_path)
    ref_features = _features(99, n=120)
    new = refid(study, statistics_from_features(ref_features), ref_name="other.zip", split="test", n=120)
    rescored = 0
    for run, old_run in zip(new["runs"], study["runs"]):
        for point, old in zip(run["points"], old_run["points"]):
            assert point["fd8_1step"] == old["fd8_1step"] and point["fd8_2step"] == old["fd8_2step"]
            for k in (1, 2):
                assert (f"fid_{k}step" in point) == (f"fid_{k}step" in old)
                if f"fid_{k}step" in point:
                    expected = _frechet(features[run["recipe"], run["seed"], k], ref_features)
                    assert point[f"fid_{k}step"] == pytest.approx(expected, rel=1e-6)
                    rescored += 1
    assert rescored == 8  # 4 runs x 2 step counts, the final points
    assert new["eval"]["fid_split"] == "test" and new["eval"]["n_fid_ref"] == 120
    assert new["refid_of"]["fid_split"] == "train" and new["refid_of"]["tag"] == study["tag"]


def test_refid_command_writes_a_report_and_refuses_what_it_cannot_do(tmp_path, capsys) -> None:
    study, _ = _study_with_saved_statistics(tmp_path)
    src = tmp_path / "study.json"
    src.write_text(json.dumps(study))
    ref = tmp_path / "ref.npz"
    statistics_from_features(_features(5, n=100)).save(ref)
    common = [str(src), "--ref", str(ref), "--n", "100", "--out", str(tmp_path), "--no-plot"]
    argv = [*common, "--tag", "test-ref"]
    main(argv)
    md = (tmp_path / "quality-cpu-test-ref.md").read_text()
    assert f"against the first 100 test images of {ref}" in md
    with pytest.raises(SystemExit):  # never overwrites
        main(argv)
    assert "exists: choose another --tag" in capsys.readouterr().err
    sample_statistics_path(study["runs"][0]["points"][-1]["path"], 2).unlink()
    with pytest.raises(SystemExit):
        main([*common, "--tag", "again"])
    err = capsys.readouterr().err
    assert "w-fnolike seed 0: no sample statistics" in err and "rerun the study's command" in err


def test_refid_refuses_a_reference_of_another_network(tmp_path) -> None:
    study, _ = _study_with_saved_statistics(tmp_path)
    path = sample_statistics_path(study["runs"][0]["points"][-1]["path"], 1)
    statistics_from_features(_features(3), meta={"network_sha1": "inception"}).save(path)
    reference = statistics_from_features(_features(4), meta={"network_sha1": "another"})
    with pytest.raises(ValueError, match="features of network inception but the reference is of another"):
        refid(study, reference, ref_name="x", split="test", n=80)
