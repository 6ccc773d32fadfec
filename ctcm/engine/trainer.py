"""The training loop: AdamW + warm-up/cosine, clipping, EMA, non-finite guard, checkpoints, exact resume, DDP.

Exact resume: everything random is a function of state stored in the checkpoint. The data order and flips
are a function of (seed, step) (:mod:`ctcm.engine.data_order`); the objective's draws (t, eps, gaps,
weight-drop masks) come from one generator whose state is saved together with the global CPU/CUDA/NumPy/
Python RNG states. On CPU, N steps + resume + N steps therefore gives bit-identical weights to 2N steps.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..build import build, build_objective
from ..checkpoint import read_checkpoint, save_checkpoint
from ..config import to_dict
from ..ema import EMA
from ..objective import Objective
from . import state as run_state
from .config import TrainConfig, dump_yaml, model_config, resolve
from .data_order import FlippedDataset, StepBatchSampler
from .distributed import (DistInfo, all_ranks_true, any_rank_true, barrier, cleanup, init_distributed, mean_logs,
                          pick_device)
from .evaluate import data_distance
from .generate import sample_all
from .logging import MetricsLogger, plot_fid, plot_losses, save_grid
from .lr import build_scheduler

OBJECTIVE_SEED_OFFSET = 1
GRID_SEED_OFFSET = 2
EVAL_SEED_OFFSET = 3


class NonFiniteError(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient norm."""


@dataclass
class TrainResult:
    """What a run leaves behind. ``interrupted``: the signal number that stopped it early (else None)."""

    out: Path
    step: int
    checkpoint: Path | None
    files: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    nonfinite: int = 0
    interrupted: int | None = None


def resolve_resume(out: Path, resume: str | os.PathLike | bool | None) -> Path | None:
    """``True`` -> the latest checkpoint in ``out`` (an error when there is none); a path -> that file."""
    if resume is None or resume is False:
        return None
    if resume is True:
        path = run_state.latest_checkpoint(out)
        if path is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {run_state.checkpoint_dir(out)}; "
                                    f"pass the checkpoint's path or drop --resume to start a new run")
        return path
    return Path(resume)


def load_data(cfg: TrainConfig, resolution: int, split: str) -> Dataset:
    """``build_dataset(cfg.data.source, ...)`` without its own flips (the engine draws them), clear errors."""
    from ..data import DataError, build_dataset

    try:
        return build_dataset(cfg.data.source, resolution, flip=False, split=split)
    except (DataError, FileNotFoundError) as exc:
        raise DataError(f"cannot load the {split} data of data.source={cfg.data.source!r}: {exc}. "
                        f"Fix the path, or pass --data PATH (or data.source=PATH).") from exc


def split_data(cfg: TrainConfig, resolution: int, need_heldout: bool) -> tuple[Dataset, Dataset | None]:
    """(training set, held-out set) per ``cfg.data.heldout`` (a split name, or the last N training images)."""
    train = load_data(cfg, resolution, "train")
    h = cfg.data.heldout
    if isinstance(h, int):
        n = len(train)  # type: ignore[arg-type]
        if h >= n:
            raise ValueError(f"data.heldout={h} leaves no training images out of {n}; lower it")
        return Subset(train, range(n - h)), (Subset(train, range(n - h, n)) if h else None)
    wanted = need_heldout and cfg.eval.learning_samples > 0
    return train, (load_data(cfg, resolution, h) if wanted else None)


def reference_images(ds: Dataset, n: int, seed: int) -> torch.Tensor:
    """n images of ``ds`` (a fixed random subset, without flips), stacked (n, C, H, W)."""
    n = min(n, len(ds))  # type: ignore[arg-type]
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]  # type: ignore[arg-type]
    items = [ds[int(i)] for i in idx]
    return torch.stack([torch.as_tensor(x[0] if isinstance(x, (tuple, list)) else x) for x in items]).float()


class Trainer:
    """One run of :class:`TrainConfig` writing to ``out``; call :meth:`run`.

    Args:
        dataset / heldout: datasets to use instead of ``build_dataset(cfg.data.source)`` (tests, notebooks);
            items (C, R, R) in [-1, 1]. ``heldout`` feeds the learning measure.
        resume: ``True`` (latest in ``out``), a checkpoint path, or None.
        progress: show a tqdm bar on rank 0.
    """

    def __init__(self, cfg: TrainConfig, out: str | os.PathLike, *, resume: str | os.PathLike | bool | None = None,
                 dataset: Dataset | None = None, heldout: Dataset | None = None, progress: bool = True) -> None:
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.info: DistInfo = init_distributed(cfg.device)
        self.device = pick_device(cfg.device, self.info)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)

        self.model_cfg = model_config(cfg.model)
        self.resolved = resolve(cfg)
        self.model = build(self.model_cfg).to(self.device)
        self.objective: Objective = build_objective(self.model_cfg)
        self.ema = EMA(self.model, cfg.ema.decay, half_life_images=cfg.ema.half_life_images, batch_size=cfg.batch_size)
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                           weight_decay=o.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, o.warmup_steps, o.decay_steps or cfg.steps, o.min_lr_ratio)
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed + OBJECTIVE_SEED_OFFSET)
        self.step, self.nonfinite_total, self.metrics = 0, 0, {}

        self.resumed_from = resolve_resume(self.out, resume)
        if self.resumed_from is not None:
            self._load(self.resumed_from)

        self.dataset, self.heldout = dataset, heldout
        if dataset is None:
            self.dataset, self.heldout = split_data(cfg, self.model_cfg.resolution, self.info.is_main)

        self.wrapped: nn.Module = self.model
        if self.info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if cfg.compile:  # the backbone's forward, backward and tangent (the objectives call the unwrapped model)
            from ..model import compile_backbone
            compile_backbone(self.model)
        self._stop_signal: int | None = None
        self._fid_evaluator: Any = None

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def _load(self, path: Path) -> None:
        payload = read_checkpoint(path, map_location=self.device)
        self.model.load_state_dict(payload["model"])  # the live weights; EMA weights stay in the EMA copy
        self.ema.load_state_dict(payload["ema"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["lr_scheduler"])
        self.step = int(payload["step"])
        extra = payload["extra"]
        run_state.restore_rng(extra["rng"], self.generator)
        self.nonfinite_total = int(extra.get("nonfinite_total", 0))
        self.metrics = dict(extra.get("metrics", {}))
        if int(extra["data_order"]["seed"]) != self.cfg.seed:
            raise ValueError(f"{path} was trained with seed {extra['data_order']['seed']}, this config has "
                             f"seed {self.cfg.seed}: resume with the run's seed (seed=...) for the same data order")

    def save(self) -> Path | None:
        """Write ``checkpoints/step_N.pt`` and point ``latest.pt`` at it (rank 0; every rank waits)."""
        path = None
        if self.info.is_main:
            extra = {
                "config": to_dict(self.resolved),
                "rng": run_state.capture_rng(self.generator),
                "data_order": {"seed": self.cfg.seed, "step": self.step, "world_size": self.info.world_size},
                "nonfinite_total": self.nonfinite_total,
                "metrics": self.metrics,
            }
            path = save_checkpoint(run_state.periodic_path(self.out, self.step), self.model, ema=self.ema,
                                   optimizer=self.optimizer, lr_scheduler=self.scheduler, step=self.step, extra=extra)
            latest = run_state.checkpoint_dir(self.out) / run_state.LATEST
            tmp = latest.with_name(f".{latest.name}.link")
            tmp.unlink(missing_ok=True)
            try:
                os.link(path, tmp)  # a hard link: no second write, and it survives pruning of the periodic file
            except OSError:  # file systems without hard links
                shutil.copyfile(path, tmp)
            os.replace(tmp, latest)
            run_state.prune_periodic(self.out, self.cfg.keep_checkpoints)
        barrier(self.info)
        return path

    # -- evaluation -------------------------------------------------------------------------------------------------
    def _grid(self, tag: str) -> Path:
        n = self.cfg.eval.grid
        x = sample_all(self.ema.model, n, steps=1, seed=self.cfg.seed + GRID_SEED_OFFSET, batch_size=n,
                       device=self.device)
        return save_grid(x, self.out / "samples" / f"{tag}.png")

    def _learning(self, when: str) -> dict[str, float]:
        """:func:`data_distance` of 1- and 2-step EMA samples to held-out data, plus the noise floor."""
        if self.heldout is None:
            raise ValueError("eval.learning_samples > 0 needs held-out images: set data.heldout (a split name or "
                             "a number of training images to hold out), or eval.learning_samples=0")
        n = self.cfg.eval.learning_samples
        ref = reference_images(self.heldout, n, self.cfg.seed)
        out: dict[str, float] = {"step": self.step}
        for steps in (1, 2):
            x = sample_all(self.ema.model, len(ref), steps=steps, seed=self.cfg.seed + EVAL_SEED_OFFSET,
                           batch_size=250, device=self.device).cpu()
            out.update({f"{k}_{steps}step": v for k, v in data_distance(x, ref).items()})
        if when == "initial":
            floor = data_distance(reference_images(self.dataset, len(ref), self.cfg.seed + 1), ref)
            out.update({f"{k}_floor": v for k, v in floor.items()})
        return out

    def _fid(self) -> dict[str, float]:
        """FID of the EMA model for each of ``eval.fid_steps``; every rank takes part (it shards the samples)."""
        from ..metrics import FIDEvaluator

        e = self.cfg.eval
        if self._fid_evaluator is None:
            for turn in (True, False):  # rank 0 first: it computes and caches the reference statistics
                if self.info.is_main == turn:
                    self._fid_evaluator = FIDEvaluator(e.fid_ref, e.fid_samples, batch_size=e.fid_batch_size,
                                                       device=self.device, progress=self.progress and turn)
                barrier(self.info)
        row: dict[str, float] = {"step": self.step}
        for steps in e.fid_steps:
            row[f"fid_{steps}step"] = float(self._fid_evaluator.evaluate(self.ema.model, steps=steps, seed=self.cfg.seed))
        return row

    def _write_metrics(self) -> Path:
        path = self.out / "metrics.json"
        path.write_text(json.dumps(self.metrics, indent=2))
        return path

    # -- the loop ---------------------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop_signal = signum

    def _train_step(self, x0: torch.Tensor) -> tuple[dict[str, float], bool]:
        """One optimiser step on the local batch; returns (logs, applied). Non-finite steps change nothing."""
        cfg = self.cfg
        self.wrapped.train()
        use_bf16 = cfg.precision == "bf16" and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = self.objective(self.wrapped, x0, self.step, generator=self.generator, rank=self.info.rank,
                                     world_size=self.info.world_size)
        self.optimizer.zero_grad(set_to_none=True)
        logs = dict(out.logs)
        applied = all_ranks_true(bool(torch.isfinite(out.loss.detach())), self.info, self.device)
        if applied:
            out.loss.backward()
            clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            logs["grad_norm"] = float(grad_norm)
            applied = bool(torch.isfinite(grad_norm))  # gradients are synchronised: the same on every rank
            if applied:
                self.optimizer.step()
                self.ema.update(self.model)
            else:
                self.optimizer.zero_grad(set_to_none=True)
        logs["lr"] = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        return logs, applied

    def run(self) -> TrainResult:
        """Train to ``cfg.steps`` (or until SIGINT/SIGTERM). ``cfg.threads`` and ``cfg.deterministic`` apply
        for the duration of the run only (both are process-wide torch settings)."""
        old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
        old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        if self.cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            return self._run()
        finally:
            torch.set_num_threads(old_threads)
            torch.use_deterministic_algorithms(old_det, warn_only=old_warn)

    def _run(self) -> TrainResult:
        cfg, main = self.cfg, self.info.is_main
        files: dict[str, Path] = {}
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            files["config"] = self.out / "config.yaml"
            files["config"].write_text(dump_yaml(self.resolved))
            if self.resumed_from is None:
                self.metrics = {}
                if cfg.eval.learning_samples > 0:
                    self.metrics["learning_initial"] = self._learning("initial")
                if cfg.eval.grid > 0:
                    files["grid_initial"] = self._grid(f"step_{self.step:08d}")
        resume_step = self.step if self.resumed_from is not None else None
        logger = MetricsLogger(self.out, resume_step=resume_step) if main else None
        sampler = StepBatchSampler(len(self.dataset), cfg.batch_size, seed=cfg.seed, start_step=self.step,  # type: ignore[arg-type]
                                   flip=cfg.data.flip, rank=self.info.rank, world_size=self.info.world_size)
        loader = iter(DataLoader(FlippedDataset(self.dataset), batch_sampler=sampler, num_workers=cfg.data.num_workers,
                                 pin_memory=self.device.type == "cuda"))
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        bar = None
        if main and self.progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=cfg.steps, initial=self.step, desc="train", dynamic_ncols=True)
        consecutive, window, t0, checkpoint = 0, [], time.perf_counter(), None
        try:
            while self.step < cfg.steps:
                x0 = next(loader).to(self.device, non_blocking=True)
                logs, applied = self._train_step(x0)
                self.step += 1
                if applied:
                    consecutive = 0
                    window.append(logs)
                else:
                    consecutive += 1
                    self.nonfinite_total += 1
                    if consecutive >= cfg.max_nonfinite:
                        last = checkpoint or run_state.latest_checkpoint(self.out)
                        raise NonFiniteError(
                            f"{consecutive} consecutive steps (up to step {self.step}) had a non-finite loss or "
                            f"gradient, so the run stops. The last good checkpoint is "
                            f"{last if last is not None else '(none written yet)'}, left untouched. Lower optim.lr, "
                            f"raise optim.warmup_steps or lower the tangent weight, then resume from it."
                        )
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    elapsed = time.perf_counter() - t0
                    row = self._summarise(window, elapsed)
                    if logger is not None:
                        logger.log(row)
                    if bar is not None:
                        bar.set_postfix(loss=f"{row.get('loss', math.nan):.4g}", img_s=f"{row['img_per_s']:.1f}")
                    window, t0 = [], time.perf_counter()
                if bar is not None:
                    bar.update(1)
                if main and cfg.sample_every and self.step % cfg.sample_every == 0 and cfg.eval.grid > 0:
                    self._grid(f"step_{self.step:08d}")
                if cfg.eval.fid_every and self.step % cfg.eval.fid_every == 0:
                    row = self._fid()
                    if main:
                        self.metrics.setdefault("fid", []).append(row)
                        self._write_metrics()
                        if logger is not None and logger.tb is not None:
                            for k, v in row.items():
                                if k != "step":
                                    logger.tb.add_scalar(k, v, self.step)
                stop = any_rank_true(self._stop_signal is not None, self.info, self.device)
                periodic = cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and consecutive == 0
                if stop or periodic or self.step == cfg.steps:
                    checkpoint = self.save()
                if stop:
                    return self._finish(files, logger, bar, checkpoint, interrupted=self._stop_signal or signal.SIGTERM)
            if checkpoint is None and main:  # nothing left to train: report the checkpoint we resumed from
                checkpoint = run_state.latest_checkpoint(self.out)
            return self._finish(files, logger, bar, checkpoint, interrupted=None)
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            if bar is not None:
                bar.close()
            if logger is not None:
                logger.close()
            cleanup(self.info)

    def _summarise(self, window: list[dict[str, float]], elapsed: float) -> dict[str, Any]:
        """Mean of each log over the steps since the last row (averaged over ranks), throughput, counters."""
        keys = sorted({k for logs in window for k in logs})
        means = {k: float(np.mean([logs[k] for logs in window if k in logs])) for k in keys}
        means = mean_logs(means, self.info, self.device) if all_ranks_true(bool(window), self.info, self.device) else means
        steps = max(len(window), 1)
        row: dict[str, Any] = {"step": self.step}
        row.update(means)
        row["img_per_s"] = steps * self.cfg.batch_size / max(elapsed, 1e-9)
        row["nonfinite"] = self.nonfinite_total
        return row

    def _finish(self, files: dict[str, Path], logger: MetricsLogger | None, bar: Any, checkpoint: Path | None,
                interrupted: int | None) -> TrainResult:
        if self.info.is_main:
            if interrupted is None:
                if self.cfg.eval.grid > 0:
                    files["grid"] = self._grid(f"step_{self.step:08d}")
                if self.cfg.eval.learning_samples > 0:
                    self.metrics["learning_final"] = self._learning("final")
                    self.metrics["learning"] = summarise_learning(self.metrics)
            loss_png = plot_losses(self.out / "train.csv", self.out / "loss.png")
            if loss_png is not None:
                files["loss_curve"] = loss_png
            if self.metrics.get("fid"):
                fid_png = plot_fid(self.metrics["fid"], self.out / "fid.png")
                if fid_png is not None:
                    files["fid_curve"] = fid_png
            self.metrics["nonfinite_steps"] = self.nonfinite_total
            self.metrics["step"] = self.step
            files["metrics"] = self._write_metrics()
            files["train_csv"] = self.out / "train.csv"
            if checkpoint is not None:
                files["checkpoint"] = checkpoint
        return TrainResult(self.out, self.step, checkpoint, files, self.metrics, self.nonfinite_total, interrupted)


def summarise_learning(metrics: dict[str, Any]) -> dict[str, Any]:
    """Initial vs final distances and whether every one of them went down."""
    first, last = metrics.get("learning_initial"), metrics.get("learning_final")
    if not first or not last:
        return {}
    keys = [k for k in last if k != "step" and k in first]
    return {"improved": all(last[k] < first[k] for k in keys),
            **{k: {"initial": first[k], "final": last[k]} for k in keys}}


def train(cfg: TrainConfig, out: str | os.PathLike, **kwargs: Any) -> TrainResult:
    """Run :class:`Trainer` (see its arguments)."""
    return Trainer(cfg, out, **kwargs).run()
