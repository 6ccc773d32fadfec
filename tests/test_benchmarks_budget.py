"""Equal-compute budgets of ``python -m benchmarks quality`` and the resolution benchmark (fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.quality import run_quality
from benchmarks.quality_plan import Settings, plan_run
from benchmarks.quality_budget import compute_units, equal_compute_images, step_costs


@given(images=st.integers(32, 10**6), batch=st.integers(1, 512),
       costs=st.lists(st.floats(0.01, 10.0), min_size=2, max_size=5))
def test_equal_compute_gives_every_recipe_the_references_time(images, batch, costs):
    step_s = {f"r{i}": c for i, c in enumerate(costs)}
    out = equal_compute_images(images, batch, step_s, "r0")
    ref_time = images / batch * step_s["r0"]
    for r, n in out.items():
        assert n % batch == 0 and n >= batch
        # within half a batch of the reference's time (rounding to whole steps), unless clipped at one batch
        assert abs(n / batch * step_s[r] - ref_time) <= 0.5 * step_s[r] + 1e-9 or n == batch
        units = compute_units(n, r, {"step_s": step_s}, "r0")
        assert units == pytest.approx(n * step_s[r] / step_s["r0"])


def test_unknown_reference_is_one_line():
    with pytest.raises(ValueError, match="--compute-of 'fno' is not among the recipes measured"):
        equal_compute_images(100, 10, {"ect": 1.0}, "fno")


def test_stored_costs_are_reused_and_budgets_reach_the_plans(tmp_path, monkeypatch):
    """A stored table with every recipe is reused as is (no timing), and its budgets reach each run's steps."""
    table = {"clock": "cpu", "load": 0.1, "measured": "then", "step_s": {"ect": 0.1, "fno": 0.2}}
    (tmp_path / "costs-cpu.json").write_text(json.dumps(table))
    import benchmarks.quality_cost as qc

    monkeypatch.setattr(qc, "quality_cost", lambda *a, **k: pytest.fail("measured again"))
    assert step_costs("cpu", ["fno", "ect"], tmp_path, log=lambda m: None) == table
    s = Settings(images=6400, batch=32, recipes=["ect", "fno"], seeds=[0], out=str(tmp_path), data="embedded",
                 compute_of="ect")
    plans = run_quality(s, dry_run=True, log=lambda m: None)["plans"]
    assert {p["recipe"]: p["images"] for p in plans} == {"ect": 6400, "fno": 3200}
    assert plan_run(Settings(images=6400, batch=32), "fno", 0)["images"] == 6400  # equal images by default


def test_resolution_samples_above_the_training_size(tmp_path):
    """The resolution benchmark: a 8x8-trained WFNO sampled at 16x16, downsampled, scored; grids written."""
    import ctcm
    from benchmarks import resolution
    from ctcm.metrics.stats import Statistics

    model = ctcm.build("wfno-cifar", backbone={"width": 8, "n_layers": 1, "modes": 2, "emb_dim": 8},
                       resolution=8)
    path = tmp_path / "m.pt"
    ctcm.save_checkpoint(path, model)

    def features(batch):  # a stand-in for Inception on uint8 (B, H, W, 3): four moments, (B, 4)
        x = torch.as_tensor(batch).float()
        return torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3)), x[..., 0].mean((1, 2)), x[..., 1].mean((1, 2))], 1)

    ref = Statistics(np.zeros(4), np.eye(4), count=6)
    row = resolution.evaluate(path, scale=2, n=6, fd8_ref=torch.rand(6, 3, 8, 8) * 2 - 1, fid_net=features,
                              fid_ref=ref, out=tmp_path, batch_size=4)
    assert row["native"] == 8 and model.resolution == 8
    for k in (1, 2):
        assert all(np.isfinite(row[f"{m}_{k}step_{t}"]) for m in ("fd8", "fid") for t in ("native", "x2"))
        assert (tmp_path / f"m-16px-{k}step.png").stat().st_size > 0
    assert "| 1 |" in resolution.markdown([row], 6)
    fd8_only = resolution.evaluate(path, scale=2, n=6, fd8_ref=torch.rand(6, 3, 8, 8) * 2 - 1, fid_net=None,
                                   fid_ref=None, out=tmp_path, batch_size=4, steps=(1,))
    assert fd8_only["fid_1step_x2"] is None and np.isfinite(fd8_only["fd8_1step_x2"])  # --no-fid: fd8 alone
    assert "| - | - |" in resolution.markdown([fd8_only], 6)


def test_bad_input_to_the_new_flags_is_one_line(tmp_path, capsys):
    """An unknown --compute-of recipe, a bad --fid-steps and a corrupted checkpoint for the resolution
    benchmark each end in one argparse line (exit 2) before anything runs."""
    from benchmarks import quality, resolution

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    for main, argv, says in [
        (quality.main, ["--recipes", "ect", "--compute-of", "ecct", "--dry-run"], "unknown recipe 'ecct'"),
        (quality.main, ["--recipes", "ect", "--fid-steps", "3", "--dry-run"], "--fid-steps takes 1, 2 or 1,2"),
        (resolution.main, [str(bad)], "is not a checkpoint"),
        (resolution.main, [str(tmp_path / "missing.pt")], "checkpoint not found"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and says in capsys.readouterr().err


def test_a_new_fid_step_count_is_evaluated_and_the_known_ones_kept(tmp_path):
    """A checkpoint scored with one-step FID only is pending when two-step FID is asked for; the new score is
    computed and the cached one kept (same samples), after which nothing is pending."""
    import ctcm
    from benchmarks import quality_eval as qe
    from ctcm.metrics.stats import Statistics

    model = ctcm.build("wfno-cifar", backbone={"width": 8, "n_layers": 1, "modes": 2, "emb_dim": 8},
                       resolution=8)
    path = tmp_path / "m.pt"
    ctcm.save_checkpoint(path, model, step=3)
    spec = {"device": "cpu", "batch_size": 4, "n": 6, "n_fid": 6, "fid_steps": [1], "fd8_source": "embedded",
            "fd8_heldout": 200, "fid_ref": "embedded"}
    entry = {"path": str(path), "fid": True, "grid": False}
    assert qe.pending(entry, spec)
    qe.result_path(path).write_text(json.dumps({"fid_1step": 123.0, "settings": qe.signature(spec)}))
    assert not qe.pending(entry, spec)
    spec["fid_steps"] = [1, 2]
    assert qe.pending(entry, spec)

    def features(batch):  # a stand-in for Inception on uint8 (B, H, W, 3): four moments, (B, 4)
        x = torch.as_tensor(batch).float()
        return torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3)), x[..., 0].mean((1, 2)), x[..., 1].mean((1, 2))], 1)

    row = qe.evaluate_checkpoint(path, entry, spec, torch.rand(6, 3, 8, 8) * 2 - 1, features,
                                 Statistics(np.zeros(4), np.eye(4), count=6))
    assert row["fid_1step"] == 123.0 and np.isfinite(row["fid_2step"]) and row["fid_2step"] != 123.0
    qe.result_path(path).write_text(json.dumps({**row, "settings": qe.signature(spec)}))
    assert not qe.pending(entry, spec)
