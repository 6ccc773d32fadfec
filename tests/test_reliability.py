"""Issue 9: nothing lost, nothing silent. Run folders, resume overrides, the non-finite guard, checkpoint
integrity, preemption with DataLoader workers."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

import ctcm
from ctcm.config import ConfigError
from ctcm.devices import DeviceError
from ctcm.engine import NonFiniteError, Trainer, train
from ctcm.engine.cli import report
from ctcm.engine.rundir import RunFolderError, latest_checkpoint
from test_engine import ROOT, SMALL, TINY, NaNAfter, ToyImages, assert_identical, small_config, weights

TRAIN_PY = ROOT / "examples" / "cifar10" / "train.py"


def finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if torch.is_tensor(v) and v.is_floating_point())


# -- 2. run folders ------------------------------------------------------------------------------------------------
def test_fresh_run_refuses_a_folder_holding_a_run(tmp_path):
    data = ToyImages()
    train(small_config("steps=2", "checkpoint_every=1"), tmp_path, dataset=data, progress=False)
    csv_before = (tmp_path / "train.csv").read_text()
    with pytest.raises(RunFolderError, match="already holds a run.*--resume.*--overwrite.*another --out"):
        Trainer(small_config("steps=3"), tmp_path, dataset=data, progress=False)
    assert (tmp_path / "train.csv").read_text() == csv_before  # nothing of the old run was touched
    res = train(small_config("steps=3"), tmp_path, dataset=data, overwrite=True, progress=False)
    assert res.checkpoint.is_file() and res.step == 3
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*.pt")) == ["step_00000003.pt"]


def test_pruning_deletes_only_this_runs_checkpoints(tmp_path):
    data = ToyImages()
    train(small_config("steps=2", "optim.decay_steps=4", "checkpoint_every=1", "keep_checkpoints=1"), tmp_path,
          dataset=data, progress=False)
    foreign = tmp_path / "checkpoints" / "step_00000001.pt"  # e.g. copied in by hand: not this run's file
    foreign.write_bytes(b"someone else's")
    res = train(small_config("steps=4", "optim.decay_steps=4", "checkpoint_every=1", "keep_checkpoints=1"), tmp_path,
                dataset=data, resume=True, progress=False)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*.pt"))
    assert names == ["step_00000001.pt", "step_00000004.pt"] and foreign.read_bytes() == b"someone else's"
    assert res.checkpoint.is_file()


def test_unwritable_out_fails_before_building_anything(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunFolderError, match="cannot write to the run folder"):
        Trainer(small_config(), blocker / "run", dataset=ToyImages(), progress=False)


# -- 3. resume overrides ----------------------------------------------------------------------------------------
def test_resume_applies_optim_and_ema_overrides_and_keeps_the_schedule(tmp_path):
    data = ToyImages()
    train(small_config("steps=3", "optim.decay_steps=10"), tmp_path, dataset=data, progress=False)
    cfg = small_config("steps=5", "optim.decay_steps=10", "optim.lr=1e-5", "optim.weight_decay=0.5",
                       "ema.half_life_images=80")
    trainer = Trainer(cfg, tmp_path, dataset=data, resume=True, progress=False)
    factor = trainer.scheduler.lr_lambdas[0](3)  # the schedule's position is the checkpoint's
    group = trainer.optimizer.param_groups[0]
    assert trainer.scheduler.last_epoch == 3
    assert group["lr"] == pytest.approx(1e-5 * factor) and group["weight_decay"] == 0.5
    assert trainer.ema.decay == pytest.approx(0.5 ** (8 / 80))
    res = trainer.run()
    stored = ctcm.read_checkpoint(res.checkpoint)
    assert stored["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-5 * trainer.scheduler.lr_lambdas[0](5))
    assert stored["extra"]["config"]["optim"]["lr"] == 1e-5


def test_resume_refuses_a_change_of_model_shape_or_seed(tmp_path):
    data = ToyImages()
    train(small_config("steps=2"), tmp_path, dataset=data, progress=False)
    with pytest.raises(ConfigError, match=r"cannot change model\.backbone\.width: 8 -> 12.*another --out"):
        Trainer(small_config("steps=4", "model.backbone.width=12"), tmp_path, dataset=data, resume=True,
                progress=False)
    with pytest.raises(ConfigError, match=r"cannot change seed"):
        Trainer(small_config("steps=4", "seed=3"), tmp_path, dataset=data, resume=True, progress=False)


# -- 4. the non-finite guard ---------------------------------------------------------------------------------------
def test_infinite_lr_is_a_config_error():
    for bad in ("optim.lr=.inf", "optim.lr=.nan", "optim.lr=0", "optim.warmup_steps=-3"):
        with pytest.raises(ConfigError, match="optim"):
            small_config(bad)


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_update_that_makes_weights_nonfinite_stops_before_ema_and_checkpoint(tmp_path):
    cfg = small_config("steps=8", "checkpoint_every=2")
    trainer = Trainer(cfg, tmp_path, dataset=ToyImages(), progress=False)
    step = trainer.optimizer.step

    def poisoned_step(*args, **kwargs):  # what lr=inf (or an overflow) does to the weights
        out = step(*args, **kwargs)
        if trainer.step >= 4:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("inf"))
        return out

    trainer.optimizer.step = poisoned_step
    with pytest.raises(NonFiniteError, match=r"update of step 5 made the weights non-finite.*step_00000004\.pt"):
        trainer.run()
    assert finite(dict(trainer.ema.model.state_dict()))  # the EMA never saw the bad weights
    good = ctcm.read_checkpoint(latest_checkpoint(tmp_path))
    assert good["step"] == 4 and finite(good["model"]) and finite(good["ema"]["model"])


def test_run_ending_inside_a_short_streak_says_so(tmp_path, capsys):
    cfg = small_config("steps=6", "max_nonfinite=5")
    trainer = Trainer(cfg, tmp_path, dataset=ToyImages(), progress=False)
    trainer.objective = NaNAfter(trainer.objective, start=4)
    res = trainer.run()
    assert res.step == 6 and res.trailing_nonfinite == 2 and res.metrics["trailing_nonfinite_steps"] == 2
    assert finite(ctcm.read_checkpoint(res.checkpoint)["model"])
    assert report(res, tmp_path) == 0
    assert "the last 2 step(s) had a non-finite loss" in capsys.readouterr().out


def test_nonfinite_weights_are_never_saved(tmp_path):
    trainer = Trainer(small_config("steps=2"), tmp_path, dataset=ToyImages(), progress=False)
    with torch.no_grad():
        next(trainer.model.parameters())[0] = float("nan")
    with pytest.raises(NonFiniteError, match="weights are not finite"):
        trainer.save()
    assert latest_checkpoint(tmp_path) is None


# -- 5./6. checkpoint integrity, devices, eval mode ------------------------------------------------------------------
def _ckpt(tmp_path):
    model = ctcm.build("wfno-cifar", backbone={"width": 8, "n_layers": 1, "modes": 4, "emb_dim": 16}, resolution=8)
    ema = ctcm.EMA(model, 0.9)
    return ctcm.save_checkpoint(tmp_path / "c.pt", model, ema=ema, step=1)


def test_overwritten_bytes_are_detected(tmp_path):
    path = _ckpt(tmp_path)
    with zipfile.ZipFile(path) as z:  # the largest tensor record, stored uncompressed
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(fh.read(4), dtype="<u2")
        fh.seek(info.header_offset + 30 + int(name_len) + int(extra_len) + info.file_size // 2)
        fh.write(b"\x7f" * 16)
    with pytest.raises(ctcm.CheckpointError, match="corrupted.*checksum"):
        ctcm.load_checkpoint(path)


def test_device_is_checked_before_the_file(tmp_path):
    path = _ckpt(tmp_path)
    assert isinstance(ctcm.load_checkpoint(path, map_location="cpu:0"), ctcm.ConsistencyModel)
    with pytest.raises(DeviceError, match="unknown device 'gpu'"):
        ctcm.load_checkpoint(path, map_location="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no usable CUDA"):
            ctcm.load_checkpoint(tmp_path / "missing.pt", map_location="cuda")


def test_text_file_is_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n" * 20)
    with pytest.raises(ctcm.CheckpointError, match="is not a checkpoint"):
        ctcm.read_checkpoint(tmp_path / "notes.txt")


def test_load_checkpoint_returns_an_eval_mode_model(tmp_path):
    model = ctcm.load_checkpoint(_ckpt(tmp_path))
    assert not model.training and not any(m.training for m in model.modules())


def test_checkpoint_of_an_uninstalled_plugin_names_the_package(tmp_path):
    path = _ckpt(tmp_path)
    payload = ctcm.read_checkpoint(path)
    payload["config"]["backbone"]["name"] = "fancy-net"
    payload = {k: v for k, v in payload.items() if k != "tensor_sha256"}
    torch.save(payload, tmp_path / "plugin.pt")
    with pytest.raises(ctcm.CheckpointError, match="Install the package that provides 'fancy-net'"):
        ctcm.load_checkpoint(tmp_path / "plugin.pt")


# -- 1. preemption with DataLoader workers -----------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_to_the_process_group_with_workers_then_exact_resume(tmp_path):
    images = ToyImages(48).x.permute(0, 2, 3, 1).add(1).mul(127.5).round().to(torch.uint8).numpy()
    np.savez(tmp_path / "data.npz", x=images)
    out = tmp_path / "run"
    common = [*SMALL, "data.heldout=0", "optim.decay_steps=1000", "threads=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(TRAIN_PY), "--config", str(TINY), "--out", str(out), "--data",
                             str(tmp_path / "data.npz"), "--steps", "1000", "--no-progress", *common,
                             "data.num_workers=2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    csv = out / "train.csv"
    deadline = time.time() + 90
    while time.time() < deadline and not (csv.is_file() and len(csv.read_text().splitlines()) > 2):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)  # what `timeout` and SLURM do: the whole group, workers included
    stdout, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "SIGTERM at step" in stdout and "killed by signal" not in stderr
    step = ctcm.read_checkpoint(latest_checkpoint(out))["step"]
    assert 0 < step < 1000
    target = step + 3
    done = subprocess.run([sys.executable, str(TRAIN_PY), "--out", str(out), "--resume", "--steps", str(target),
                           "--no-progress"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    straight = train(small_config(f"steps={target}", "optim.decay_steps=1000", "data.heldout=0",
                                  f"data.source={tmp_path / 'data.npz'}"), tmp_path / "straight", progress=False)
    assert_identical(weights(latest_checkpoint(out)), weights(straight.checkpoint))


# -- 7. model(x, t) validates its inputs -------------------------------------------------------------------------
def test_model_validates_inputs():
    from conftest import tiny_model

    model = tiny_model("geometric", dtype=torch.float32)
    x = torch.randn(2, 3, 8, 8)
    for t, match in ((5.0, r"t must be finite and in the schedule's range"), (100.0, "range"),
                     (float("nan"), "finite"), (float("inf"), "finite"), (-0.5, "range")):
        with pytest.raises(ValueError, match=match):
            model(x, t)
    with pytest.raises(TypeError, match=r"floating-point images.*uint8.*x\.float\(\) / 127\.5 - 1"):
        model(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), 0.5)
    with pytest.raises(ValueError, match="empty batch"):
        model(torch.zeros(0, 3, 8, 8), 0.5)
    with pytest.raises(ValueError, match=r"tangent_along \(dx_t/dt\) must have x's shape \(2, 3, 8, 8\)"):
        model(x, 0.5, tangent_along=torch.randn(2, 3, 4, 4))
    assert torch.isfinite(model(x, model.schedule.t_max)).all()  # the endpoints are fine
    model.validate_time = False  # the opt-out: extrapolate on purpose
    assert model(x, 1.5).shape == x.shape


def test_disk_full_keeps_the_old_file_and_is_one_line(tmp_path, capsys):
    import errno

    from ctcm.atomic import DiskFullError, atomic_write, atomic_write_text
    from ctcm.errors import run_cli

    target = atomic_write_text(tmp_path / "metrics.json", "old")

    def full(fh):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError, match="no space left.*previous version.*kept"):
        atomic_write(target, full)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]

    def entry(argv):
        atomic_write(target, full)

    assert run_cli("train", entry, []) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train: error: ") and "no space left" in err and len(err.splitlines()) == 1


def test_session_restores_process_settings_even_on_error():
    from ctcm.engine.session import RunSession

    threads, handler = torch.get_num_threads(), signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError, match="boom"):
        with RunSession("cpu", threads + 1, deterministic=True) as session:
            assert torch.get_num_threads() == threads + 1 and torch.are_deterministic_algorithms_enabled()
            os.kill(os.getpid(), signal.SIGTERM)  # recorded, not fatal
            time.sleep(0.01)
            assert session.stop_signal == signal.SIGTERM
            raise RuntimeError("boom")
    assert torch.get_num_threads() == threads and signal.getsignal(signal.SIGTERM) == handler
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("where, value", [(None, 0.0), ("parameter", math.inf), ("parameter", -math.inf),
                                          ("parameter", math.nan), ("buffer", math.nan)])
def test_weights_finite_finds_any_non_finite_entry(where, value):
    """The fused check (x * 0 is NaN exactly for non-finite x): one bad entry anywhere, in a parameter or a
    floating buffer, and only then; huge finite weights (whose norm overflows) are finite."""
    from ctcm.engine.guard import weights_finite

    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    with torch.no_grad():
        net[0].weight[1, 2] = 3e38  # finite, and its norm would overflow float32
        if where == "parameter":
            net[0].bias[3] = value
        elif where == "buffer":
            net[1].running_mean[0] = value
    assert weights_finite(net) is (where is None)
