"""The engine and objective-owned parameters (sCM's w_phi): optimised, checkpointed, resumed exactly, in sync
across DDP ranks; and ``--init-from`` warm starts (weights only)."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

import ctcm
from ctcm.engine.trainer import Trainer, train
from test_engine import ToyImages, assert_identical, free_port, small_config, weights

SCM = ["model.schedule={name: trigflow}", "objective=[{name: scm, weight: 1.0, warmup_steps: 2}]"]


def objective_state(path) -> dict[str, torch.Tensor]:
    return ctcm.read_checkpoint(path)["extra"]["objective"]


def test_objective_parameters_train_and_resume_exactly(tmp_path):
    data = ToyImages()
    cfg6 = small_config(*SCM, "steps=6", "optim.decay_steps=6")
    one = train(cfg6, tmp_path / "one", dataset=data, progress=False)
    state = objective_state(one.checkpoint)
    assert state and any(k.startswith("scm.") for k in state)
    last = [v for k, v in state.items() if k.endswith("net.2.weight")][0]
    assert last.abs().max() > 0  # w_phi's last layer starts at zero: it was trained
    train(small_config(*SCM, "steps=3", "optim.decay_steps=6"), tmp_path / "two", dataset=data, progress=False)
    second = train(cfg6, tmp_path / "two", dataset=data, resume=True, progress=False)
    assert_identical(weights(one.checkpoint), weights(second.checkpoint))
    assert_identical(state, objective_state(second.checkpoint))


def test_init_from_loads_weights_only(tmp_path):
    data = ToyImages()
    pre = train(small_config("steps=3", "objective=[{name: denoising}]"), tmp_path / "pre", dataset=data,
                progress=False)
    trainer = Trainer(small_config("steps=2", f"init_from={pre.checkpoint}"), tmp_path / "ft", dataset=data,
                      progress=False)
    ema_weights = ctcm.read_checkpoint(pre.checkpoint)["ema"]["model"]
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, ema_weights[k]), k  # the warm start takes the pretrained EMA weights
        assert torch.equal(trainer.ema.model.state_dict()[k], v)  # and the EMA restarts from them
    assert trainer.step == 0 and not trainer.optimizer.state  # fresh optimiser and step
    wrong = small_config("steps=2", f"init_from={pre.checkpoint}", "model.backbone.width=12")
    with pytest.raises(ValueError, match="do not fit this run's model"):
        Trainer(wrong, tmp_path / "bad", dataset=data, progress=False)


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import os
    from pathlib import Path

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    trainer = Trainer(small_config(*SCM, "steps=3"), out, dataset=ToyImages(), progress=False)
    trainer.run()
    torch.save({k: v.clone() for k, v in trainer.objective_params.state_dict().items()}, Path(out) / f"obj{rank}.pt")


@pytest.mark.slow
def test_ddp_keeps_objective_parameters_in_sync_with_one_process(tmp_path):
    mp.spawn(_ddp_worker, args=(2, free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "ddp" / "obj0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "ddp" / "obj1.pt", weights_only=True)
    assert_identical(r0, r1)
    single = Trainer(small_config(*SCM, "steps=3"), tmp_path / "single", dataset=ToyImages(), progress=False)
    single.run()
    for k, v in single.objective_params.state_dict().items():
        torch.testing.assert_close(r0[k], v, rtol=1e-4, atol=1e-6, msg=f"{k}: DDP and single process differ")
