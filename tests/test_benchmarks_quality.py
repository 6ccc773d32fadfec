"""``python -m benchmarks quality``: run plans and commands (fast), and the whole loop on a tiny size (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.quality import run_quality
from benchmarks.quality_jobs import train_run
from benchmarks.quality_plan import Settings, budget, plan_run, resolve_recipe
from benchmarks.quality_recipes import RECIPES
from benchmarks.quality_eval import sample_statistics_path

TWO_PHASE = {"label": "two phases", "config": None, "overrides": [],
             "phases": [{"fraction": 0.5, "overrides": ["optim.lr=1e-3"], "init_from_previous": False},
                        {"fraction": 0.5, "overrides": [], "init_from_previous": True}]}
TINY = ["model.backbone.width=8", "model.backbone.modes=4", "model.backbone.emb_dim=16", "eval.grid=16",
        "optim.warmup_steps=2"]


def _settings(tmp_path: Path, **kw) -> Settings:
    base = dict(size="cpu", images=64, batch=8, points=2, jobs=2, n=16, n_fid=0, data="embedded", fd8_heldout=200,
                recipes=["default", "two"], seeds=[0], overrides=TINY, out=str(tmp_path), tag="test")
    return Settings(**{**base, **kw})


def test_plans_commands_and_two_phase_layout(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(RECIPES, "two", TWO_PHASE)
    s = _settings(tmp_path, images=96, points=4)
    one, two = plan_run(s, "default", 1), plan_run(s, "two", 1)
    assert one["dir"] == str(tmp_path / "runs" / "cpu" / "default" / "seed1") and len(one["phases"]) == 1
    cmd = one["phases"][0]["command"]
    for arg in ("--no-progress", "threads=1", "seed=1", "eval.learning_samples=0", "eval.fid_every=0", "steps=12",
                "batch_size=8", "checkpoint_every=3", "keep_checkpoints=0", "data.heldout=test"):
        assert arg in cmd
    assert cmd[cmd.index("--data") + 1] == "embedded" and cmd[-len(TINY):] == TINY
    p1, p2 = two["phases"]
    assert p1["dir"] == str(Path(two["dir"]) / "phase1") and p2["dir"] == two["dir"]
    assert (p1["steps"], p2["steps"], p2["images_offset"], two["images"]) == (6, 6, 48, 96)
    assert "--init-from" not in p1["command"] and "optim.lr=1e-3" in p1["command"]
    assert p2["command"][p2["command"].index("--init-from") + 1] == str(Path(p1["dir"]) / "checkpoints" / "latest.pt")
    # the peer backbones expand per size
    assert any(o.startswith("model.backbone={name: unet") for o in resolve_recipe("unet", "cpu")["overrides"])
    assert "recipe=fno-cifar" in resolve_recipe("fno", "gpu")["overrides"]
    # budget-relative settings follow each phase's steps
    assert budget("gap: {name: ect, stage_steps: $STEPS/4}", 2000) == "gap: {name: ect, stage_steps: 500}"
    ect = plan_run(s, "denoise-ect", 0)["phases"][1]["command"]
    assert any("stage_steps: 1}" in a for a in ect)  # 6 steps // 4
    # a run whose final checkpoints exist is not trained (runs started by hand with this layout are picked up)
    for ph in two["phases"]:
        Path(ph["final"]).parent.mkdir(parents=True, exist_ok=True)
        Path(ph["final"]).write_bytes(b"")
    rows = train_run(two, log=lambda m: None)
    assert [r["skipped"] for r in rows] == [True, True]
    with pytest.raises(ValueError, match="unknown recipe"):
        resolve_recipe("nope", "cpu")


def _supports_init_from() -> bool:
    from ctcm.engine.cli import parser

    return any("--init-from" in a.option_strings for a in parser()._actions)


def _have_fid_weights() -> bool:
    from ctcm.metrics import FeatureNetworkError, find_weights

    try:
        find_weights(verify=False)
        return True
    except FeatureNetworkError:
        return False


@pytest.mark.slow
def test_quality_end_to_end_on_embedded_data_then_cached(tmp_path, monkeypatch) -> None:
    # train.py gains --init-from separately; until then phase 2 starts afresh (the same code path otherwise)
    monkeypatch.setitem(RECIPES, "two", {**TWO_PHASE, "phases": [
        TWO_PHASE["phases"][0], {**TWO_PHASE["phases"][1], "init_from_previous": _supports_init_from()}]})
    monkeypatch.setenv("CTCM_CACHE_DIR", str(tmp_path / "cache"))
    n_fid = 6 if _have_fid_weights() else 0
    s = _settings(tmp_path, n_fid=n_fid)
    logs: list[str] = []
    results = run_quality(s, log=logs.append)
    assert all(r["error"] is None for r in results["runs"]), [r["error"] for r in results["runs"]]
    stem = tmp_path / "quality-cpu-test"
    for ext in (".json", ".md", ".png", "-samples-default.png", "-samples-two.png"):
        assert Path(f"{stem}{ext}").stat().st_size > 0, ext
    saved = json.loads(Path(f"{stem}.json").read_text())
    runs = {r["recipe"]: r for r in saved["runs"]}
    assert [p["images"] for p in runs["default"]["points"]] == [32, 64]
    # points every 4 steps on the whole budget: phase 1's end, then phase 2's end offset by phase 1's 32 images
    assert [(p["phase"], p["step"], p["images"]) for p in runs["two"]["points"]] == [(1, 4, 32), (2, 4, 64)]
    for run in runs.values():
        assert all(p["fd8_1step"] > 0 and p["fd8_2step"] > 0 for p in run["points"])
        final = run["points"][-1]
        assert final["final"] and (("fid_1step" in final and "fid_2step" in final) == (n_fid > 0))
        assert all(sample_statistics_path(final["path"], k).is_file() == (n_fid > 0) for k in (1, 2))
        assert not any("fid_1step" in p for p in run["points"][:-1])  # FID at the final point only (cpu size)
    md = Path(f"{stem}.md").read_text()
    assert "| default ((a) the design's objective: consistency (uniform gap) + 0.1 tangent) | 64 |" in md
    assert "| two (two phases) | 64 |" in md and md.count("| two | ") == 2
    # a second invocation trains and evaluates nothing
    logs.clear()
    again = run_quality(s, log=logs.append)
    assert not any("training phase" in m or "evaluating" in m for m in logs), logs
    assert all(p["skipped"] for r in again["runs"] for p in r["phases"])
    first = [p["fd8_1step"] for p in results["runs"][0]["points"]]
    assert [p["fd8_1step"] for p in again["runs"][0]["points"]] == first


def test_quality_cost_times_each_recipes_step() -> None:
    """The compute axis of the study: each recipe's own model and objective, one step timed per recipe."""
    from benchmarks.quality_cost import quality_cost

    rows = quality_cost("cpu", ["ect", "unet"], repeats=1)
    assert [r["recipe"] for r in rows] == ["ect", "unet"] and rows[0]["ratio"] == 1.0
    assert rows[0]["params"] == 110_347 and rows[1]["params"] == 122_145  # tiny.yaml's WFNO (0.4), the U-Net
    assert all(r["step_s"] > 0 and r["images_per_s"] == r["batch"] / r["step_s"] for r in rows)


def test_quality_cost_unknown_recipe_is_one_line(capsys) -> None:
    from benchmarks.quality_cost import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--recipes", "ectt"])
    assert exit_info.value.code == 2 and "unknown recipe 'ectt'" in capsys.readouterr().err


def test_the_design_recipes_mean_the_same_runs_whatever_the_defaults() -> None:
    """The study's `w-*` / `w3-*` recipes pin their design and size (``@backbone:wfno-study``), so a change of
    the defaults or of tiny.yaml does not change their runs: `w-fnolike` is the 0.3 model of the study's tables
    (112,051 parameters, 8 modes; at the GPU size width 130 and 16 modes), `w3-modes6` differs from it in the
    modes alone, and `w-no-lift` (0.3 without its lifting MLP) is the same function as `ect`, which follows the
    defaults (the 0.4 design)."""
    import torch

    import ctcm
    from benchmarks.models import n_parameters
    from benchmarks.quality_cost import recipe_config

    study = recipe_config("w-fnolike", "cpu").model
    assert study.backbone.kwargs["modes"] == 8 and n_parameters(ctcm.build(study)) == 112_051
    gpu = recipe_config("w-fnolike", "gpu").model.backbone.kwargs
    assert (gpu["width"], gpu["modes"]) == (130, 16)
    assert recipe_config("w3-modes6", "cpu").model.backbone.kwargs == {**study.backbone.kwargs, "modes": 6}
    old, new = (ctcm.build(recipe_config(r, "cpu").model).double().eval() for r in ("w-no-lift", "ect"))
    new.load_state_dict(old.state_dict())  # the same architecture (lift_hidden 0: one 1x1 lifting) ...
    x, t = torch.randn(2, 3, 32, 32, dtype=torch.float64), torch.tensor([0.2, 0.9], dtype=torch.float64)
    assert torch.equal(old(x, t), new(x, t))  # ... computing the same function
