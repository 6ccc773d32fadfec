"""A run's checkpoints as the trainer writes and reads them: what ``extra`` holds besides the weights, the
restore of a run (``--resume``: this config's optimiser settings take effect), the checkpoint ``--resume``
means, and the warm start ``--init-from``.

The loop itself (:mod:`.trainer`) only calls :func:`checkpoint_extra` when it saves and :func:`restore_run`
when it resumes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import network_weights, read_checkpoint
from ..config import ConfigError, to_dict
from ..ema import EMA
from ..errors import UserValueError
from . import state as run_state
from .config import OptimConfig, TrainConfig
from .resume import check_resume_config, checkpoint_config, stored_train_config
from .rundir import RunFolder, latest_checkpoint


def resolve_resume(out: Path, resume: str | os.PathLike | bool | None) -> Path | None:
    """``True`` -> the latest checkpoint in ``out`` (an error when there is none); a path -> that file."""
    if resume is None or resume is False:
        return None
    if resume is True:
        path = latest_checkpoint(out)
        if path is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {Path(out) / 'checkpoints'}; "
                                    f"pass the checkpoint's path or drop --resume to start a new run")
        return path
    return Path(resume)


def init_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load the network weights of checkpoint ``path`` into ``model`` (its EMA weights when it has them):
    a warm start, e.g. from a diffusion pretraining run. Optimiser, EMA, step and RNG start fresh."""
    payload = read_checkpoint(path)
    state = network_weights(payload, "ema")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserValueError(f"--init-from {path}: its weights do not fit this run's model ({first}); "
                             f"initialise from a checkpoint of the same backbone and width") from exc


def checkpoint_extra(cfg: TrainConfig, *, generator: torch.Generator, step: int, world_size: int,
                     nonfinite_total: int, metrics: dict[str, Any], folder: RunFolder,
                     objective_params: nn.Module) -> dict[str, Any]:
    """Everything a checkpoint stores besides the weights, optimiser and schedule: the config (the model
    section once), every RNG state, the data order's position, the counters, the run folder's state and the
    objective's own parameters. Plain data only (``weights_only`` loading)."""
    return {
        "config": checkpoint_config(to_dict(cfg)),
        "rng": run_state.capture_rng(generator),
        "data_order": {"seed": cfg.seed, "step": step, "world_size": world_size},
        "nonfinite_total": nonfinite_total,
        "metrics": metrics,
        "run": folder.state_dict(),
        "objective": objective_params.state_dict(),
    }


@dataclass
class RestoredRun:
    """The counters of a restored run; the weights, optimiser, schedule and generator are restored in place."""

    step: int
    nonfinite_total: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    checkpoints: list[str] = field(default_factory=list)


def restore_run(path: Path, cfg: TrainConfig, *, model: nn.Module, ema: EMA, objective_params: nn.Module,
                optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR,
                generator: torch.Generator, device: torch.device) -> RestoredRun:
    """Restore the run of checkpoint ``path`` into these parts (built from ``cfg``); optimiser, EMA and
    schedule settings of ``cfg`` take effect, and what ``cfg`` may not change is refused (:mod:`.resume`)."""
    payload = read_checkpoint(path, map_location=device)
    extra = payload["extra"]
    if "config" in extra:
        check_resume_config(stored_train_config(payload), to_dict(cfg), path)
    if int(extra["data_order"]["seed"]) != cfg.seed:
        raise ConfigError(f"{path} was trained with seed {extra['data_order']['seed']}, this config has "
                          f"seed {cfg.seed}: resume with the run's seed (seed=...) for the same data order")
    model.load_state_dict(payload["model"])  # the live weights; EMA weights stay in the EMA copy
    decay = ema.decay
    ema.load_state_dict(payload["ema"])
    ema.decay = decay  # ema.* of this config
    objective_params.load_state_dict(extra.get("objective", {}))
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["lr_scheduler"])
    apply_optim_settings(optimizer, scheduler, cfg.optim)
    run_state.restore_rng(extra["rng"], generator)
    run = extra.get("run", {})
    return RestoredRun(int(payload["step"]), int(extra.get("nonfinite_total", 0)), dict(extra.get("metrics", {})),
                       run.get("run_id"), list(run.get("checkpoints", [])))


def apply_optim_settings(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR,
                         o: OptimConfig) -> None:
    """Put ``optim.*`` into a restored optimiser and scheduler; the schedule's position (its step count) is
    the checkpoint's, so lr = optim.lr x the schedule's factor at the resumed step."""
    scheduler.base_lrs = [o.lr for _ in optimizer.param_groups]
    factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
    for group in optimizer.param_groups:
        group.update(initial_lr=o.lr, lr=o.lr * factor, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
