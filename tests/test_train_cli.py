"""``ctcm train`` (the recipe script's command) and the loss plot of any objective's terms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ctcm.cli import main
from ctcm.engine.cli import parser as train_parser
from ctcm.engine.logging import loss_panels, plot_losses

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "cifar10" / "configs" / "tiny.yaml"
SMALL = ["model.backbone.width=8", "model.backbone.n_layers=1", "model.backbone.modes=4", "model.backbone.emb_dim=16",
         "model.resolution=16", "batch_size=4", "log_every=1", "sample_every=0", "checkpoint_every=0",
         "eval.learning_samples=0", "eval.grid=0", "data.heldout=0"]


def test_ctcm_train_runs_the_recipe(tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "data.npz", x=images)
    out = tmp_path / "run"
    assert main(["train", "--config", str(TINY), "--out", str(out), "--data", str(tmp_path / "data.npz"),
                 "--steps", "2", "--device", "cpu", "--no-progress", *SMALL]) == 0
    assert "done at step 2" in capsys.readouterr().out
    assert (out / "checkpoints" / "latest.pt").is_file() and (out / "loss.png").is_file()
    assert main(["train", "--out", str(tmp_path / "other")]) == 2  # a usage error (issue 9)
    assert "give --config PATH" in capsys.readouterr().err


def test_train_help_names_the_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0 and "usage: ctcm train" in capsys.readouterr().out
    assert {"--config", "--out", "--steps", "--data", "--device", "--resume"} <= set(
        train_parser()._option_string_actions)


def test_loss_plot_shows_any_objectives_terms(tmp_path):
    columns = ["step", "loss", "mine", "mine/gap", "consistency", "grad_norm", "lr"]
    assert loss_panels(columns, ["mine"]) == [["loss", "mine"], ["mine/gap"]]
    assert loss_panels(columns, ["mine", "consistency"]) == [["loss", "mine", "consistency"], ["mine/gap"]]
    assert loss_panels(["step", "loss"], ["mine"]) == [["loss"]]
    csv = tmp_path / "train.csv"
    csv.write_text("step,loss,mine,mine/gap\n1,2.0,1.5,0.1\n2,1.0,0.5,0.2\n")
    assert plot_losses(csv, tmp_path / "loss.png", ["mine"]) == tmp_path / "loss.png"
    assert (tmp_path / "loss.png").stat().st_size > 0
