"""Training engine: config overrides, exact resume, non-finite guard, DDP on gloo, SIGTERM, data order."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import Dataset

import ctcm
from ctcm.recipes import WFNO_CIFAR
from ctcm.config import ConfigError
from ctcm.engine import NonFiniteError, Trainer, load_train_config, train
from ctcm.engine.config import dump_yaml
from ctcm.engine.data_order import StepBatchSampler
from ctcm.engine.lr import warmup_cosine
from ctcm.engine.resume import stored_train_config
from ctcm.engine.rundir import latest_checkpoint
from ctcm.objective import LossOutput, Objective

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "cifar10" / "configs" / "tiny.yaml"
DEFAULT = ROOT / "examples" / "cifar10" / "configs" / "default_cifar.yaml"
UNET = ROOT / "examples" / "cifar10" / "configs" / "unet_cifar.yaml"

# a model and run small enough for seconds on CPU; resolution 16 keeps every forward cheap
SMALL = ["model.backbone.width=8", "model.backbone.n_layers=1", "model.backbone.modes=4",
         "model.backbone.emb_dim=16", "model.resolution=16", "batch_size=8", "log_every=2",
         "sample_every=0", "checkpoint_every=0", "eval.learning_samples=0", "eval.grid=0", "optim.warmup_steps=2",
         "objective.1.warmup_steps=3"]


class ToyImages(Dataset):
    """n fixed random images (3, 16, 16) in [-1, 1]: smooth colour blobs, so learning has structure."""

    def __init__(self, n: int = 48, res: int = 16, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        low = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
        self.x = torch.nn.functional.interpolate(low, size=res, mode="bilinear", align_corners=False)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


def small_config(*extra: str):
    return load_train_config(TINY, SMALL + list(extra))


def weights(path: Path) -> dict[str, torch.Tensor]:
    payload = ctcm.read_checkpoint(path)
    out = {f"model.{k}": v for k, v in payload["model"].items()}
    out.update({f"ema.{k}": v for k, v in payload["ema"]["model"].items()})
    return out


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


# -- configs ------------------------------------------------------------------------------------------------------
def test_packaged_configs_load_and_round_trip(tmp_path):
    for path in (TINY, DEFAULT):
        cfg = load_train_config(path)
        assert cfg.recipe == "wfno-cifar" and cfg.model.backbone.name == "wfno"  # resolved against the recipe
        (tmp_path / "c.yaml").write_text(dump_yaml(cfg))
        again = load_train_config(tmp_path / "c.yaml", resolved=True)
        assert again == cfg
    cfg = load_train_config(DEFAULT)
    m = cfg.model
    assert m.backbone.name == "wfno" and m.backbone.kwargs["spectral_weight_drop"] > 0
    assert m.backbone.kwargs["width"] == WFNO_CIFAR["width"]  # merged from the recipe
    assert [(t.name, t.weight) for t in cfg.objective] == [("consistency", 1.0)]
    assert cfg.objective[0].kwargs["gap"] == {"name": "ect", "stage_steps": 50_000}  # the study's winner
    assert cfg.optim.lr == 3e-4 and cfg.optim.weight_decay > 0 and cfg.optim.warmup_steps > 0


def test_the_unet_full_run_is_the_default_run_on_the_unet(tmp_path):
    """unet_cifar.yaml is default_cifar.yaml with the recipe unet-cifar: its model is the recipe's U-Net and
    every other section (objective, data, optimiser, EMA, evaluation, steps, batch, ...) equals the WFNO run's."""
    unet, wfno = load_train_config(UNET), load_train_config(DEFAULT)
    assert unet.recipe == "unet-cifar" and unet.model == ctcm.create_recipe("unet-cifar").model
    assert dataclasses.replace(unet, recipe=wfno.recipe, model=wfno.model) == wfno
    (tmp_path / "c.yaml").write_text(dump_yaml(unet))
    assert load_train_config(tmp_path / "c.yaml", resolved=True) == unet


def test_overrides_apply_and_unknown_keys_error():
    cfg = small_config("optim.lr=0.5", "model.backbone.width=12", "data.heldout=7", "objective.0.gap.delta_max=0.1")
    m = cfg.model
    assert cfg.optim.lr == 0.5 and m.backbone.kwargs["width"] == 12 and cfg.data.heldout == 7
    assert cfg.objective[0].kwargs["gap"]["delta_max"] == 0.1 and m.backbone.kwargs["modes"] == 4
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lrr'\].*Valid keys"):
        small_config("optim.lrr=1")
    with pytest.raises(ConfigError, match="unknown key"):
        small_config("nonsense=1")
    with pytest.raises(ConfigError, match="precision"):
        small_config("precision=fp8")


def test_bad_backbone_argument_errors_at_build():
    cfg = small_config("model.backbone.depth=3")
    with pytest.raises(Exception, match="depth"):
        ctcm.build(cfg.model)


def test_warmup_cosine_shape():
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100) == pytest.approx(0.5)
    assert warmup_cosine(100, 10, 100, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(500, 10, 100, 0.1) == pytest.approx(0.1)


# -- data order -------------------------------------------------------------------------------------------------
def take(sampler, k):
    it = iter(sampler)
    return [next(it) for _ in range(k)]


def test_data_order_resumes_and_shards():
    full = take(StepBatchSampler(20, 6, seed=3), 7)  # 3 steps per epoch: crosses two epoch boundaries
    assert take(StepBatchSampler(20, 6, seed=3, start_step=4), 3) == full[4:]
    ranks = [take(StepBatchSampler(20, 6, seed=3, rank=r, world_size=2), 7) for r in range(2)]
    assert [a + b for a, b in zip(*ranks)] == full
    epoch0 = [i for batch in full[:3] for i, *_ in batch]
    assert len(set(epoch0)) == 18  # no repeats within an epoch
    with pytest.raises(ValueError, match="divisible"):
        StepBatchSampler(20, 5, seed=0, world_size=2)


# -- training: exact resume, outputs, non-finite guard --------------------------------------------------------------
def test_exact_resume_is_bit_identical(tmp_path):
    data = ToyImages()
    # the schedule length is fixed (decay_steps) so that stopping at 3 is the same run as going to 6
    cfg6 = small_config("steps=6", "optim.decay_steps=6", "checkpoint_every=3")
    one = train(cfg6, tmp_path / "one", dataset=data, progress=False)
    cfg3 = small_config("steps=3", "optim.decay_steps=6")
    first = train(cfg3, tmp_path / "two", dataset=data, progress=False)
    assert first.step == 3
    second = train(cfg6, tmp_path / "two", dataset=data, resume=True, progress=False)
    assert second.step == 6
    a, b = ctcm.read_checkpoint(one.checkpoint), ctcm.read_checkpoint(second.checkpoint)
    assert_identical(weights(one.checkpoint), weights(second.checkpoint))
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    assert a["lr_scheduler"] == b["lr_scheduler"]
    assert torch.equal(a["extra"]["rng"]["objective"], b["extra"]["rng"]["objective"])
    # the live network is the trained one, not the EMA copy
    assert not all(torch.equal(a["model"][k], a["ema"]["model"][k]) for k in a["model"])
    # and the 3-step checkpoint of the one-shot run equals the first half of the split run
    assert_identical(weights(tmp_path / "one" / "checkpoints" / "step_00000003.pt"), weights(first.checkpoint))
    logged = [int(r.split(",")[0]) for r in (tmp_path / "two" / "train.csv").read_text().splitlines()[1:]]
    assert logged == [2, 3, 4, 6]  # every log_every steps and at the end of each invocation, no repeats


def test_run_writes_outputs_and_learning_measure(tmp_path):
    data, held = ToyImages(48), ToyImages(32, seed=1)
    cfg = small_config("steps=4", "eval.learning_samples=32", "eval.grid=4", "sample_every=2", "keep_checkpoints=1",
                       "checkpoint_every=2")
    res = train(cfg, tmp_path, dataset=data, heldout=held, progress=False)
    for key in ("config", "grid", "grid_initial", "loss_curve", "metrics", "train_csv", "checkpoint"):
        assert res.files[key].is_file(), key
    assert (tmp_path / "samples" / "step_00000002.png").is_file()
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt")) == ["latest.pt", "step_00000004.pt"]
    first, last = res.metrics["learning_initial"], res.metrics["learning_final"]
    assert {"fd8_1step", "fd8_2step", "channel_1step", "fd8_floor"} <= first.keys()
    assert "improved" in res.metrics["learning"] and last["step"] == 4
    header = (tmp_path / "train.csv").read_text().splitlines()[0].split(",")
    assert {"loss", "consistency", "tangent", "lr", "grad_norm", "img_per_s", "nonfinite"} <= set(header)
    payload = ctcm.read_checkpoint(res.checkpoint)
    assert "model" not in payload["extra"]["config"]  # the resolved config is stored once per checkpoint
    stored = stored_train_config(payload)
    assert stored["recipe"] == "wfno-cifar" and stored["model"]["backbone"]["width"] == 8
    assert isinstance(ctcm.load_checkpoint(res.checkpoint), ctcm.ConsistencyModel)


class FakeFID:
    """Stands in for ctcm.metrics.FIDEvaluator (whose Inception network is too slow for a unit test)."""

    def __init__(self, ref, num_samples, batch_size=250, device=None, cache_dir=None, **kwargs) -> None:
        self.calls = 0

    def scores(self, model, steps=1, seed=0) -> dict[str, float]:
        self.calls += 1
        return {"fid": 100.0 / self.calls + steps}


def test_periodic_fid_is_logged_and_plotted(tmp_path, monkeypatch):
    import ctcm.metrics

    monkeypatch.setattr(ctcm.metrics, "FIDEvaluator", FakeFID)
    res = train(small_config("steps=4", "eval.fid_every=2", "eval.fid_steps=[1, 2]"), tmp_path,
                dataset=ToyImages(), progress=False)
    assert [r["step"] for r in res.metrics["fid"]] == [2, 4]
    assert set(res.metrics["fid"][0]) == {"step", "fid_1step", "fid_2step"}
    assert res.files["fid_curve"].is_file()


class NaNAfter(Objective):
    """The wrapped objective until ``step >= start``, then a NaN loss (still through the model)."""

    name = "nan_after"

    def __init__(self, inner: Objective, start: int) -> None:
        self.inner, self.start = inner, start

    def compute(self, ctx) -> LossOutput:
        loss = self.inner.compute(ctx).loss
        return LossOutput(loss * float("nan") if ctx.step >= self.start else loss)


def test_nonfinite_steps_are_skipped_then_stop_the_run(tmp_path):
    data = ToyImages()
    cfg = small_config("steps=20", "checkpoint_every=2", "max_nonfinite=3")
    trainer = Trainer(cfg, tmp_path, dataset=data, progress=False)
    trainer.objective = NaNAfter(trainer.objective, start=4)
    with pytest.raises(NonFiniteError, match=r"3 consecutive steps .* last good checkpoint is .*step_00000004\.pt"):
        trainer.run()
    good = ctcm.read_checkpoint(latest_checkpoint(tmp_path))
    assert good["step"] == 4
    assert all(torch.isfinite(v).all() for v in good["model"].values() if v.is_floating_point())
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())  # skipped steps changed nothing


def test_missing_data_is_a_clear_error(tmp_path):
    from ctcm.data import DataError

    cfg = small_config("data.source=" + str(tmp_path / "nowhere.npz"))
    with pytest.raises(DataError, match="nowhere.npz.*--data"):
        Trainer(cfg, tmp_path / "run", progress=False)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(small_config(), tmp_path, dataset=ToyImages(), resume=True, progress=False)


# -- DDP on gloo ------------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str, overrides: list[str]) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    trainer = Trainer(small_config(*overrides), out, dataset=ToyImages(), progress=False)
    trainer.run()
    torch.save({k: v.clone() for k, v in trainer.model.state_dict().items()}, Path(out) / f"rank{rank}.pt")


@pytest.mark.slow
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_ddp_gloo_two_ranks_match_one_process(tmp_path, dropout):
    """2 gloo ranks equal one process on the same global batch, with dropout too (per-sample masks: each
    rank applies its slice of the global batch's masks; issue 16, item 1)."""
    assert_ddp_matches_one_process(tmp_path, ["steps=4", "data.num_workers=0", f"model.backbone.dropout={dropout}"])


def assert_ddp_matches_one_process(tmp_path: Path, overrides: list[str]) -> None:
    """Two gloo ranks train the weights of one process (the same global batches and draws), and they moved."""
    mp.spawn(_ddp_worker, args=(2, free_port(), str(tmp_path / "ddp"), overrides), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "ddp" / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "ddp" / "rank1.pt", weights_only=True)
    assert_identical(r0, r1)
    single = Trainer(small_config(*overrides), tmp_path / "single", dataset=ToyImages(), progress=False)
    single.run()
    torch.manual_seed(0)  # the config's seed: the initial weights every run starts from
    start = ctcm.build(small_config(*overrides).model)
    moved = 0.0
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(r0[k], v, rtol=1e-4, atol=1e-5, msg=f"{k}: DDP and single process differ")
        moved = max(moved, float((v - start.state_dict()[k]).abs().max()))
    assert moved > 1e-4  # the weights did change, so the comparison means something


# -- signals -----------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_mid_run_leaves_a_loadable_checkpoint(tmp_path):
    images = (ToyImages(48).x.permute(0, 2, 3, 1).add(1).mul(127.5).round().to(torch.uint8).numpy())
    np.savez(tmp_path / "data.npz", x=images)
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "examples" / "cifar10" / "train.py"), "--config", str(TINY), "--out", str(out),
           "--data", str(tmp_path / "data.npz"), "--steps", "100000", "--no-progress", *SMALL, "data.heldout=0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    csv = out / "train.csv"
    deadline = time.time() + 60
    while time.time() < deadline and not (csv.is_file() and len(csv.read_text().splitlines()) > 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "SIGTERM at step" in stdout and "--resume" in stdout
    payload = ctcm.read_checkpoint(latest_checkpoint(out))
    assert 0 < payload["step"] < 100000
    assert isinstance(ctcm.load_checkpoint(latest_checkpoint(out)), ctcm.ConsistencyModel)
    # resume from the command line with the run's stored config (no --config), two more steps
    target = payload["step"] + 2
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "cifar10" / "train.py"), "--out", str(out),
                           "--resume", "--steps", str(target), "--no-progress"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert ctcm.read_checkpoint(latest_checkpoint(out))["step"] == target
    assert "loss_curve" in done.stdout and "metrics" in done.stdout


@pytest.mark.parametrize("flip", [False, True])
def test_a_given_dataset_is_flipped_by_the_data_order_only(tmp_path, monkeypatch, flip):
    """``Trainer(dataset=build_dataset(...))`` sees exactly the images of the seeded data order, mirrored
    only where it says so: none with ``data.flip: false`` (issue 16, item 5)."""
    from ctcm.data import build_dataset

    seen: list[torch.Tensor] = []
    monkeypatch.setattr(Trainer, "_train_step",
                        lambda self, x0, cond, stopping=False: (seen.append(x0), ({}, True, stopping))[1])
    dataset = build_dataset("embedded", 16)
    cfg = small_config("steps=3", f"data.flip={str(flip).lower()}", "log_every=0")
    Trainer(cfg, tmp_path, dataset=dataset, progress=False).run()
    order = iter(StepBatchSampler(len(dataset), cfg.batch_size, seed=cfg.seed, flip=flip))
    flips = 0
    for x0 in seen:
        for x, (index, flipped, *_) in zip(x0, next(order)):
            torch.testing.assert_close(x, dataset[index].flip(-1) if flipped else dataset[index], rtol=0, atol=0)
            flips += flipped
    assert len(seen) == 3 and (flips > 0) == flip


# -- host syncs -------------------------------------------------------------------------------------------------------
HOST_READS = ("__bool__", "__float__", "__int__", "item", "tolist")  # each waits for the device on a GPU


def count_host_reads(monkeypatch, fn) -> int:
    """How many times ``fn()`` reads a tensor's value on the host (counted on CPU, as on a GPU they would sync)."""
    count = [0]
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            count[0] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    try:
        fn()
    finally:
        monkeypatch.undo()
    return count[0]


def test_a_training_step_reads_the_device_at_most_once_between_log_points(tmp_path, monkeypatch):
    """4 vs 12 steps of the tiny recipe (consistency + tangent, weight-drop, dropout), logging, grids and
    checkpoints only at the end: the 8 steps in between read tensors on the host at most once each, the
    non-finite guard (issue 16, item 6: 108 per step before)."""
    def run(steps: int) -> int:
        cfg = small_config(f"steps={steps}", "log_every=0", "model.backbone.dropout=0.1")
        trainer = Trainer(cfg, tmp_path / str(steps), dataset=ToyImages(8 * 13), progress=False)  # one epoch
        return count_host_reads(monkeypatch, trainer.run)

    short, long = run(4), run(12)
    assert (long - short) / 8 <= 1.0, f"{(long - short) / 8} host reads per step"
    rows = (tmp_path / "12" / "train.csv").read_text().splitlines()
    assert len(rows) == 2 and "consistency" in rows[0]  # the logs were kept and written once


@pytest.mark.skipif(importlib.util.find_spec("neuralop") is None, reason="the fno peer needs neuraloperator")
def test_a_backbone_with_complex_weights_trains(tmp_path):
    """The fno peer keeps complex spectral weights, which torch's fused AdamW refuses: the optimiser falls back
    to the multi-tensor one instead of failing at the first step (found by the backbone study)."""
    cfg = small_config("model.backbone={name: fno, width: 8, n_layers: 1, modes: 4, time_channels: 4}", "steps=2")
    trainer = Trainer(cfg, tmp_path, dataset=ToyImages(), progress=False)
    assert any(p.is_complex() for p in trainer.model.parameters())
    trainer.run()
    assert trainer.step == 2
