"""Issue 9: everyday mistakes give one line naming the problem and the fix, exit 2; --debug shows the traceback."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import ctcm
from ctcm.cli import main as ctcm_main
from ctcm.engine.cli import main_train, parse_args
from ctcm.sampling_cli import main_sample
from test_engine import SMALL, TINY, ToyImages

FAST = [*SMALL, "steps=1", "data.heldout=0"]


def fails(argv, capsys, match, entry=main_train) -> str:
    """Run a CLI; assert exit 2 and one stderr line matching ``match``."""
    assert entry(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    import re
    assert re.search(match, err), err
    return err


@pytest.fixture
def npz(tmp_path):
    images = ToyImages(24).x.permute(0, 2, 3, 1).add(1).mul(127.5).round().to(torch.uint8).numpy()
    np.savez(tmp_path / "data.npz", x=images)
    return str(tmp_path / "data.npz")


def cfg_args(tmp_path, npz, *extra):
    return ["--config", str(TINY), "--out", str(tmp_path / "run"), "--data", npz, "--no-progress", *FAST, *extra]


@pytest.mark.parametrize("extra, match", [
    (["model.backbone.name=wfnoo"], r"unknown backbone 'wfnoo'.*Did you mean 'wfno'"),
    (["model.backbone.name=unet", "model.backbone.width=8"], r"unknown argument.*Valid arguments"),
    (["optim.betas=0.9"], r"optim\.betas: expected a list of 2"),
    (["optim.warmup_steps=-3"], r"optim\.warmup_steps=-3 is out of range"),
    (["optim.lr=.inf"], r"optim\.lr must be a finite number"),
    (["objective.0.weight=heavy"], r"weight must be a number, got 'heavy'"),
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "tpu"], r"device"),
    (["nonsense=1"], r"unknown key\(s\) \['nonsense'\]"),
])
def test_config_mistakes_are_one_line(tmp_path, npz, capsys, extra, match):
    fails(cfg_args(tmp_path, npz, *extra), capsys, match)


def test_malformed_and_binary_yaml(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1, 2\nseed: 0\n")
    fails(["--config", str(bad), "--out", str(tmp_path / "r")], capsys, r"not valid YAML at line \d+")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    fails(["--config", str(binary), "--out", str(tmp_path / "r")], capsys, r"binary data|not valid YAML")


def test_unwritable_out_and_existing_run(tmp_path, npz, capsys):
    (tmp_path / "file").write_text("x")
    argv = cfg_args(tmp_path, npz)
    argv[argv.index("--out") + 1] = str(tmp_path / "file" / "run")
    fails(argv, capsys, r"cannot write to the run folder .*another --out")
    assert main_train(cfg_args(tmp_path, npz)) == 0
    capsys.readouterr()
    fails(cfg_args(tmp_path, npz), capsys, r"already holds a run.*--resume.*--overwrite")


def test_log_every_zero_means_off(tmp_path, npz, capsys):
    assert main_train(cfg_args(tmp_path, npz, "log_every=0", "steps=2")) == 0
    assert "done at step 2" in capsys.readouterr().out


def test_resume_with_another_width_and_text_checkpoint(tmp_path, npz, capsys):
    assert main_train(cfg_args(tmp_path, npz)) == 0
    capsys.readouterr()
    out = str(tmp_path / "run")
    fails(["--out", out, "--resume", "model.backbone.width=16", "--no-progress"], capsys,
          r"cannot change model\.backbone\.width: 8 -> 16")
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    fails(["--out", out, "--resume", str(tmp_path / "notes.txt")], capsys, r"is not a checkpoint")


def test_argparse_traps():
    args = parse_args(["--out", "o", "--resume", "steps=8"])
    assert args.resume is True and args.overrides == ["steps=8"]
    args = parse_args(["a.b=1", "--out", "o", "c.d=2", "--steps", "3", "e=4"])
    assert args.overrides == ["a.b=1", "c.d=2", "e=4"] and args.steps == 3


def test_debug_shows_the_traceback(tmp_path, npz):
    from ctcm.config import ConfigError

    with pytest.raises(ConfigError):
        main_train(cfg_args(tmp_path, npz, "optim.lr=.inf", "--debug"))


def test_import_trains_a_user_registered_objective(tmp_path, npz, capsys, monkeypatch):
    (tmp_path / "my_objective.py").write_text(
        "import ctcm\n"
        "from ctcm_objectives.consistency import ConsistencyObjective\n"
        "@ctcm.register_objective('my-consistency')\n"
        "class MyConsistency(ConsistencyObjective):\n"
        "    pass\n")
    monkeypatch.chdir(tmp_path)
    argv = cfg_args(tmp_path, npz, "--import", "my_objective", "objective=[{name: my-consistency}]")
    assert main_train(argv) == 0, capsys.readouterr().err
    fails(cfg_args(tmp_path, npz, "--import", "no_such_module", "--overwrite"), capsys,
          r"--import no_such_module: cannot import it")


def test_ctcm_version_and_help_on_every_option(capsys):
    assert ctcm_main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ctcm {ctcm.__version__}"
    from ctcm.engine.cli import parser as train_parser
    from ctcm.sampling_cli import parser as sample_parser
    for p in (train_parser(), sample_parser()):
        for action in p._actions:
            assert action.help, f"{p.prog} {action.option_strings or action.dest} has no help text"


def test_sample_device_and_stale_pngs(tmp_path, capsys):
    model = ctcm.build("wfno-cifar", backbone={"width": 8, "n_layers": 1, "modes": 4, "emb_dim": 16}, resolution=8)
    ckpt = ctcm.save_checkpoint(tmp_path / "c.pt", model, ema=ctcm.EMA(model, 0.9), step=1)
    base = ["--ckpt", str(ckpt), "--num-samples", "3", "--batch-size", "3", "--no-progress"]
    out = tmp_path / "png"
    assert main_sample([*base, "--out", str(out), "--device", "cpu:0"]) == 0  # a valid device, a good file
    (out / "000099.png").write_bytes(b"")  # left over from an earlier, larger run
    fails([*base, "--out", str(out), "--device", "cpu"], capsys, r"already holds 4 PNG.*--overwrite", main_sample)
    assert main_sample([*base, "--out", str(out), "--device", "cpu", "--overwrite"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["000000.png", "000001.png", "000002.png"]
    fails([*base, "--npz", str(tmp_path / "x.npz"), "--device", "gpu"], capsys, r"unknown device 'gpu'", main_sample)


def test_fid_warnings_and_16_bit_png(tmp_path):
    from ctcm.data.sources import _decode
    from ctcm.metrics.cli import comparability_warnings
    from ctcm.metrics.stats import Statistics

    a = Statistics(np.zeros(2), np.eye(2), 5, {"size": [64, 64]})
    b = Statistics(np.zeros(2), np.eye(2), 50_000, {"size": [32, 32]})
    warnings = comparability_warnings(a, b)
    assert any("64x64" in w and "32x32" in w for w in warnings) and any("only 5 generated" in w for w in warnings)
    grey = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257)  # 16-bit, full range
    Image.fromarray(grey).save(tmp_path / "g16.png")
    decoded = _decode(tmp_path / "g16.png", "g16.png")
    assert decoded.shape == (16, 16, 3) and np.array_equal(decoded[..., 0], np.arange(256).reshape(16, 16))


def test_fid_with_one_image_is_one_line(tmp_path, capsys):
    from ctcm.metrics.cli import main_fid

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "one.png")
    code = main_fid(["--gen", str(tmp_path), "--ref", str(tmp_path), "--quiet", "--device", "cpu", "--cache-dir",
                     str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "at least 2 images" in err, err


def test_cli_subprocess_exit_code_and_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "ctcm.cli", "sample", "--ckpt", str(tmp_path / "none.pt"),
                           "--npz", str(tmp_path / "x.npz"), "--device", "cpu"], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "checkpoint not found" in done.stderr


def test_objective_that_cannot_train_the_model_fails_before_the_data(tmp_path, capsys):
    """sCM on the geometric schedule: one line naming the trigflow fix, before the (missing) data is read."""
    missing = str(tmp_path / "no-such-data.npz")
    fails(["--config", str(TINY), "--out", str(tmp_path / "run"), "--data", missing, "--no-progress", *FAST,
           "objective=[{name: scm}]"], capsys, r"scm objective is defined on TrigFlow.*schedule='trigflow'")
