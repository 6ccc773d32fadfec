"""The benchmark runner on tiny sizes (seconds), so that ``python -m benchmarks`` cannot rot."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import run
from benchmarks.report import markdown, targets

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
    assert set(layers) == {"neuralop", "ctcm", "ctcm-fft", "ctcm-einsum", "conv3x3", "conv1x1"}
    assert all(r["error"] is None and r["fwd_s"] > 0 and r["fwd_bwd_s"] > 0 for r in layers.values())
    assert layers["ctcm"]["max_abs_diff_vs_neuralop"] < 1e-5 and layers["ctcm-fft"]["max_abs_diff_vs_neuralop"] < 1e-5

    recipes = {r["recipe"]: r for r in results["models"]}
    assert set(recipes) == {"wfno-cifar", "fno-cifar", "unet-cifar"}
    for row in recipes.values():
        assert row["errors"] == {}
        assert row["ratio_to_forward"]["jvp_nograd"] > 0 and row["tangent_step_ratio"] > 0
        assert row["train_images_per_s"] > 0 and row["sample_images_per_s"] > 0
    names = [t["target"] for t in targets(results)]
    assert len(names) == 6 and any("MeanFlow" in n for n in names), names  # the five of issue 10 + MeanFlow's
    assert "### 2. JVP cost" in markdown(results)


def test_smoke_run_measures_trainer_throughput(tmp_path) -> None:
    results = run("smoke", device="cpu", out_dir=tmp_path, tag="smoke", sections=("train",), plot_png=False,
                  log=lambda s: None)
    (row,) = results["train"]
    assert row["error"] is None and row["images_per_s"] > 0 and row["batch"] == 4
    assert "### 4. Trainer throughput" in markdown(results)


def test_smoke_run_measures_the_meanflow_step(tmp_path) -> None:
    results = run("smoke", device="cpu", out_dir=tmp_path, tag="smoke", sections=("meanflow",), plot_png=False,
                  log=lambda s: None)
    (row,) = results["meanflow"]
    assert row["ratio_to_flow_matching"]["step_flow_matching"] == 1.0
    assert all(row["times"][k]["median_s"] > 0 for k in ("step_meanflow", "step_meanflow_func_jvp"))
    report = (tmp_path / "smoke.md").read_text()
    assert "### 5. MeanFlow step" in report and "MeanFlow step on the WFNO <= 1.3x" in report


def test_gpu_check_cpu_fallback_reports_every_target(tmp_path) -> None:
    """``--gpu-check --smoke --device cpu``: the GPU command's code path on tiny models (compile: aot_eager)."""
    from benchmarks.__main__ import main

    main(["--gpu-check", "--smoke", "--device", "cpu", "--out", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-check.json", "gpu-check.md"]
    saved = json.loads((tmp_path / "gpu-check.json").read_text())
    assert len(saved["targets"]) == 8 and saved["skipped"] == []
    assert all(r["error"] is None for r in saved["train"]), saved["train"]
    assert [r["compile"] for r in saved["train"]] == [False, "aot_eager"]
    assert all(r["errors"] == {} for r in saved["models"])
    text = (tmp_path / "gpu-check.md").read_text()
    assert "| met |" in text and "not measured" not in text


def test_a_model_that_cannot_be_built_is_a_row_with_its_error(monkeypatch) -> None:
    """On the GPU machine a wheel left behind (neuraloperator for fno-cifar) must not end the check."""
    import ctcm
    from benchmarks.models import bench_recipe
    from benchmarks.settings import settings_for

    def missing(*args, **kwargs):
        raise ImportError("the 'fno' backbone needs neuraloperator, an optional extra: pip install 'ctcm[neuralop]'")

    monkeypatch.setattr(ctcm, "build", missing)
    row = bench_recipe("fno-cifar", "bf16", settings_for("smoke", "cpu"), torch.device("cpu"))
    assert row["times"] == {} and "neuraloperator" in row["errors"]["build"]


def test_the_models_section_takes_recipes_not_presets(capsys):
    """``--presets`` (the 0.1 name) is gone: ``--recipes`` picks the models section's recipes."""
    from benchmarks.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--presets", "wfno-cifar", "--report", "none.json"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --presets" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["quality", "resolution", "quality-cost", "quality-merge", "quality-refid"])
def test_each_study_command_reaches_its_own_parser(command, capsys) -> None:
    from benchmarks.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0 and f"usage: python -m benchmarks {command} " in capsys.readouterr().out
