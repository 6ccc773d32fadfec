"""The benchmark runner on tiny sizes (seconds), so that ``python -m benchmarks`` cannot rot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks/` lives at the repo root

import pytest  # noqa: E402
import torch  # noqa: E402

from benchmarks import run  # noqa: E402
from benchmarks.report import markdown, targets  # noqa: E402

from conftest import needs_neuralop


pytestmark = pytest.mark.usefixtures("one_thread")


@needs_neuralop
def test_smoke_run_writes_results(tmp_path) -> None:
    results = run("smoke", device="cpu", out_dir=tmp_path, tag="smoke", log=lambda s: None)
    for ext in ("json", "md", "png"):
        assert (tmp_path / f"smoke.{ext}").stat().st_size > 0
    saved = json.loads((tmp_path / "smoke.json").read_text())
    assert saved["mode"] == "smoke" and saved["machine"]["torch_threads"] >= 1

    layers = {r["layer"]: r for r in results["fft_layers"]}
    assert set(layers) == {"neuralop", "ctcm", "ctcm-einsum", "conv3x3", "conv1x1"}
    assert all(r["error"] is None and r["fwd_s"] > 0 and r["fwd_bwd_s"] > 0 for r in layers.values())
    assert layers["ctcm"]["max_abs_diff_vs_neuralop"] < 1e-5

    presets = {r["preset"]: r for r in results["models"]}
    assert set(presets) == {"wfno-cifar", "fno-cifar", "unet-cifar"}
    for row in presets.values():
        assert row["errors"] == {}
        assert row["ratio_to_forward"]["jvp_nograd"] > 0 and row["tangent_step_ratio"] > 0
        assert row["train_images_per_s"] > 0 and row["sample_images_per_s"] > 0
    assert len(targets(results)) == 5
    assert "### 2. JVP cost" in markdown(results)
