"""The training loop: AdamW + warm-up/cosine, clipping, EMA, non-finite guard, checkpoints, exact resume, DDP.

Exact resume: everything random is a function of state stored in the checkpoint. The data order and flips
are a function of (seed, step) (:mod:`ctcm.engine.data_order`); the objective's draws (t, eps, gaps,
weight-drop masks) come from one generator whose state is saved together with the global CPU/CUDA/NumPy/
Python RNG states. On CPU, N steps + resume + N steps therefore gives bit-identical weights to 2N steps.

This module is the loop; the parts around it live in their own modules: what checkpoints hold and how a
run is restored (:mod:`.checkpointing`), the non-finite guard (:mod:`.guard`), what a run returns
(:mod:`.results`), the run folder (:mod:`.rundir`), the periodic tasks (:mod:`.periodic`), set-up/tear-down
(:mod:`.session`), the preemption-safe loader (:mod:`.loader`), what resume may change (:mod:`.resume`) and
the evaluations (:mod:`.evaluations`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..build import build, build_objective
from ..checkpoint import save_checkpoint
from ..ema import EMA
from ..model import ConsistencyModel, compile_backbone
from ..objective import Objective
from .checkpointing import checkpoint_extra, init_weights, resolve_resume, restore_run
from .config import TrainConfig, dump_yaml
from .data_order import OrderedDataset, StepBatchSampler, check_training_resolutions
from .distributed import (DistInfo, all_ranks_all, all_ranks_true, any_rank_true, average_gradients, barrier, dist_info,
                          mean_logs, pick_device)
from .evaluations import Evaluations, class_names_of, split_data
from .guard import NonFiniteError, nonfinite_message, weights_finite, weights_finite_flag
from .loader import close_loader, make_loader, next_batch
from .logging import MetricsLogger, plot_fid, plot_losses
from .lr import build_scheduler
from .periodic import Periodic
from .results import TrainResult, summarise_learning
from .rundir import RunFolder, latest_checkpoint
from .session import RunSession

OBJECTIVE_SEED_OFFSET = 1


def window_mean(values: list[torch.Tensor | float]) -> torch.Tensor | float:
    """The mean of one log over a window of steps: Python numbers on the host, 0-dim tensors on their device
    (no host sync: :func:`.distributed.mean_logs` converts every log of the row at once)."""
    if not any(torch.is_tensor(v) for v in values):
        return sum(float(v) for v in values) / len(values)
    device = next(v.device for v in values if torch.is_tensor(v))
    return torch.stack([torch.as_tensor(v, device=device).to(torch.float64).reshape(()) for v in values]).mean()


class Trainer:
    """One run of :class:`TrainConfig` writing to ``out``; call :meth:`run`.

    Args:
        dataset / heldout: datasets to use instead of ``build_dataset(cfg.data.source)`` (tests, notebooks);
            items (C, R, R) in [-1, 1]. ``heldout`` feeds the learning measure.
        resume: ``True`` (latest in ``out``), a checkpoint path, or None.
        overwrite: a fresh run may replace the run already in ``out`` (else that is an error).
        progress: show a tqdm bar on rank 0.
    """

    def __init__(self, cfg: TrainConfig, out: str | os.PathLike, *, resume: str | os.PathLike | bool | None = None,
                 dataset: Dataset | None = None, heldout: Dataset | None = None, overwrite: bool = False,
                 progress: bool = True) -> None:
        self.cfg, self.progress = cfg, progress
        self.info = dist_info()
        self.device = pick_device(cfg.device, self.info)
        self.resumed_from = resolve_resume(Path(out), resume)
        self.folder = RunFolder(Path(out))
        if self.info.is_main:  # before anything expensive: a wrong --out fails in a second
            self.folder.claim(resume=self.resumed_from is not None, overwrite=overwrite)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)

        self.model = build(cfg.model).to(self.device)
        assert self.model.config is not None  # built from a config
        self.cfg = cfg = dataclasses.replace(cfg, model=self.model.config)  # every argument spelled out
        self.objective: Objective = build_objective(cfg.objective)
        self.objective.check_model(self.model)  # before any data is read: a mismatch fails in a second
        check_training_resolutions(self.model, cfg.data.resolutions)
        # an objective's own trainable parameters (e.g. sCM's adaptive weighting): optimised with the model
        self.objective_params = (self.objective.parameters_module() or nn.Module()).to(self.device)
        if cfg.init_from is not None and self.resumed_from is None:
            init_weights(self.model, cfg.init_from)
        self.ema = EMA(self.model, cfg.ema.decay, half_life_images=cfg.ema.half_life_images, batch_size=cfg.batch_size)
        o = cfg.optim
        # fused: one kernel, and the step counts stay on the device (the for-loop version reads each on the host);
        # torch's fused AdamW takes real floating-point parameters only (the fno peer's spectral weights are complex)
        params = list(self.trainable_parameters())
        self.optimizer = torch.optim.AdamW(params, lr=o.lr, betas=(o.betas[0], o.betas[1]),
                                           eps=o.eps, weight_decay=o.weight_decay,
                                           fused=self.device.type in ("cuda", "cpu")
                                           and all(p.is_floating_point() for p in params))
        self.scheduler = build_scheduler(self.optimizer, o.warmup_steps, o.decay_steps or cfg.steps, o.min_lr_ratio)
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed + OBJECTIVE_SEED_OFFSET)
        self.step, self.nonfinite_total = 0, 0
        self.metrics: dict[str, Any] = {}
        self.nonfinite_cause = ""  # what the objective said made the last non-finite loss so (LossOutput.explain)
        self.last_saved: Path | None = None
        # the last update, not yet known to leave the weights finite: (flag tensor, its step, its lr)
        self._unsettled: tuple[torch.Tensor, int, float] | None = None
        if self.resumed_from is not None:
            self._load(self.resumed_from)

        if dataset is None:
            dataset, heldout = split_data(cfg, cfg.model.resolution, self.info.is_main)
        self.dataset: Dataset = dataset
        self.heldout: Dataset | None = heldout
        names = class_names_of(self.dataset, cfg.model.num_classes, cfg.data.source)
        ema_model = self.ema.model
        assert isinstance(ema_model, ConsistencyModel)
        self.model.class_names = ema_model.class_names = names  # what the labels mean: kept by checkpoints
        self.evals = Evaluations(cfg, self.device, self.progress)
        self.wrapped: nn.Module = self.model

    @property
    def ema_model(self) -> ConsistencyModel:
        """The averaged copy of :attr:`model` (``ema.model``) that grids, the learning measure and FID sample."""
        return cast(ConsistencyModel, self.ema.model)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The model's parameters, then the objective's own."""
        return list(self.model.parameters()) + list(self.objective_params.parameters())

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def _load(self, path: Path) -> None:
        """Restore the run from ``path`` (:func:`.checkpointing.restore_run`)."""
        run = restore_run(path, self.cfg, model=self.model, ema=self.ema, objective_params=self.objective_params,
                          optimizer=self.optimizer, scheduler=self.scheduler, generator=self.generator,
                          device=self.device)
        self.step, self.nonfinite_total, self.metrics = run.step, run.nonfinite_total, run.metrics
        self.folder = RunFolder(self.folder.out, run.run_id, run.checkpoints)

    def save(self) -> Path | None:
        """Write ``checkpoints/step_N.pt`` and point ``latest.pt`` at it (rank 0; every rank waits).

        Raises:
            NonFiniteError: the live or EMA weights are not finite (nothing is written).
        """
        self.settle()
        if not (weights_finite(self.model) and weights_finite(self.ema.model)):
            raise NonFiniteError(self._nonfinite_message(f"the weights are not finite at step {self.step}"))
        path = None
        if self.info.is_main:
            path = self.folder.save_checkpoint(
                self.step, lambda p: save_checkpoint(p, self.model, ema=self.ema, optimizer=self.optimizer,
                                                     lr_scheduler=self.scheduler, step=self.step,
                                                     extra=self._checkpoint_extra()),
                self.cfg.keep_checkpoints)
            self.last_saved = path
        barrier(self.info)
        return path

    def _checkpoint_extra(self) -> dict[str, Any]:
        return checkpoint_extra(self.cfg, generator=self.generator, step=self.step, world_size=self.info.world_size,
                                nonfinite_total=self.nonfinite_total, metrics=self.metrics, folder=self.folder,
                                objective_params=self.objective_params)

    def _nonfinite_message(self, what: str) -> str:
        return nonfinite_message(what, self.last_saved or latest_checkpoint(self.folder.out))

    # -- one step ---------------------------------------------------------------------------------------------------
    def _train_step(self, x0: torch.Tensor, cond: dict[str, torch.Tensor],
                    stopping: bool = False) -> tuple[dict[str, torch.Tensor | float], bool, bool]:
        """One optimiser step on the local batch (``cond``: its labels ``{"y": (B,)}`` for a conditional
        model, else empty); returns (logs, applied, stop), the logs as detached tensors,
        ``stop``: whether any rank was ``stopping`` (a signal).

        One host sync per step, the non-finite guard: whether this step's loss and gradient norm are finite
        (on every rank) and whether the previous update left the weights finite, read together (with the
        ranks' stop flags: one all-reduce under DDP). A step with
        a non-finite loss or gradient changes nothing. The EMA takes an update once it is known to be finite
        (:meth:`settle`, here at the next step's sync or before anything reads the EMA), so an update that
        makes the weights non-finite stops the run before the EMA or a checkpoint sees it."""
        cfg = self.cfg
        self.wrapped.train()
        use_bf16 = cfg.precision == "bf16" and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = self.objective(self.wrapped, x0, self.step, generator=self.generator, rank=self.info.rank,
                                 world_size=self.info.world_size, cond=cond)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()  # a non-finite loss gives a non-finite gradient norm: the step is then skipped
        average_gradients(self.objective_params.parameters(), self.info)  # DDP syncs only the model's
        clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), clip)
        finite = torch.isfinite(out.loss.detach()) & torch.isfinite(grad_norm)
        last_update = self._unsettled[0] if self._unsettled is not None else torch.ones_like(finite)
        going = torch.zeros_like(finite) if stopping else torch.ones_like(finite)  # a fill: no host-to-device copy
        applied, weights_ok, going_on = all_ranks_all(torch.stack([finite, last_update.to(finite.device), going]),
                                                      self.info)
        self.settle(weights_ok)
        lr = self.optimizer.param_groups[0]["lr"]
        logs: dict[str, torch.Tensor | float] = {**out.logs, "grad_norm": grad_norm.detach(), "lr": lr}
        if applied:
            self.optimizer.step()
            self._unsettled = (weights_finite_flag(self.model), self.step + 1, lr)
        else:
            self.optimizer.zero_grad(set_to_none=True)
            if out.explain is not None and not bool(torch.isfinite(out.loss.detach())):
                self.nonfinite_cause = out.explain()  # the objective says what diverged (skipped steps only)
        self.scheduler.step()
        return logs, applied, not going_on

    def settle(self, weights_ok: bool | None = None) -> None:
        """Finish the last update: the EMA takes it when it left the weights finite (``weights_ok``; None:
        read its flag now, one host sync), else the run stops (nothing of it reaches the EMA or a checkpoint).

        Raises:
            NonFiniteError: the last update made the weights non-finite.
        """
        if self._unsettled is None:
            return
        flag, step, lr = self._unsettled
        self._unsettled = None
        if not (bool(flag) if weights_ok is None else weights_ok):
            raise NonFiniteError(self._nonfinite_message(
                f"the update of step {step} made the weights non-finite (lr {lr:.3g})"))
        self.ema.update(self.model)

    # -- the loop ---------------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train to ``cfg.steps`` (or until SIGINT/SIGTERM) inside a :class:`RunSession` (process group,
        threads, determinism and signal handlers, all restored afterwards)."""
        with RunSession(self.cfg.device, self.cfg.threads, self.cfg.deterministic) as session:
            self.info = session.info
            if self.info.enabled:
                ids = [self.device.index] if self.device.type == "cuda" else None
                self.wrapped = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
            if self.cfg.compile:  # the backbone's forward, backward and tangent (objectives call the unwrapped model)
                compile_backbone(self.model)
            return self._run(session)

    def _start(self, files: dict[str, Path]) -> None:
        """Rank 0, before the first step: the config, and for a new run the initial measurements."""
        cfg = self.cfg
        files["config"] = self.folder.write_text("config.yaml", dump_yaml(self.cfg))
        if self.resumed_from is None:
            self.metrics = {}
            if cfg.eval.learning_samples > 0:
                self.metrics["learning_initial"] = self.evals.learning(self.ema_model, self.dataset, self.heldout,
                                                                       self.step, initial=True)
            if cfg.eval.grid > 0:
                files["grid_initial"] = self.evals.grid(self.ema_model, self.folder.grid(self.step))

    def _run(self, session: RunSession) -> TrainResult:
        cfg, main = self.cfg, self.info.is_main
        files: dict[str, Path] = {}
        if main:
            self._start(files)
        logger = MetricsLogger(self.folder.out, resume_step=self.step if self.resumed_from else None) if main else None
        sampler = StepBatchSampler(len(self.dataset), cfg.batch_size, seed=cfg.seed, start_step=self.step,  # type: ignore[arg-type]
                                   flip=cfg.data.flip, rank=self.info.rank, world_size=self.info.world_size,
                                   label_dropout=cfg.data.label_dropout, resolutions=cfg.data.resolutions or ())
        null = self.model.null_class if cfg.model.num_classes else None
        loader = make_loader(OrderedDataset(self.dataset, null), sampler, cfg.data.num_workers,
                             self.device.type == "cuda")
        tasks = Periodic(cfg.log_every, cfg.sample_every, cfg.eval.fid_every, cfg.checkpoint_every, cfg.eval.grid > 0)
        bar = None
        if main and self.progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=cfg.steps, initial=self.step, desc="train", dynamic_ncols=True)
        consecutive, window, t0, checkpoint = 0, [], time.perf_counter(), None
        try:
            while self.step < cfg.steps:
                batch = next_batch(loader, session.stop_signal is not None)
                if batch is not None:
                    x0, cond = (batch[0], {"y": batch[1].to(self.device)}) if null is not None else (batch, {})
                    logs, applied, stop = self._train_step(x0.to(self.device, non_blocking=True), cond,
                                                           session.stop_signal is not None)
                    self.step += 1
                    consecutive = 0 if applied else consecutive + 1
                    self.nonfinite_total += 0 if applied else 1
                    if applied:
                        window.append(logs)
                    if consecutive >= cfg.max_nonfinite:
                        cause = f" (last: {self.nonfinite_cause})" if self.nonfinite_cause else ""
                        raise NonFiniteError(self._nonfinite_message(
                            f"{consecutive} consecutive steps (up to step {self.step}) had a non-finite loss or "
                            f"gradient{cause}"))
                    todo = tasks.after(self.step, self.step == cfg.steps, consecutive > 0)
                    if todo.log:
                        row = self._summarise(window, time.perf_counter() - t0)
                        if logger is not None:
                            logger.log(row)
                        if bar is not None:
                            bar.set_postfix(loss=f"{row.get('loss', math.nan):.4g}", img_s=f"{row['img_per_s']:.1f}")
                        window, t0 = [], time.perf_counter()
                    if bar is not None:
                        bar.update(1)
                    if todo.grid or todo.fid:  # they read the EMA: give it the last update first
                        self.settle()
                    if main and todo.grid:
                        self.evals.grid(self.ema_model, self.folder.grid(self.step))
                    if todo.fid:
                        self._fid(logger)
                else:
                    todo = None
                    stop = any_rank_true(session.stop_signal is not None, self.info, self.device)
                if stop:  # the loader is not needed any more: stop its workers before the emergency save
                    close_loader(loader)
                if stop or (todo is not None and todo.checkpoint):
                    checkpoint = self.save()
                if stop:
                    return self._finish(files, checkpoint, session.stop_signal or signal.SIGTERM, consecutive)
            if checkpoint is None and main:  # nothing left to train: report the checkpoint we resumed from
                checkpoint = latest_checkpoint(self.folder.out)
            self.settle()
            return self._finish(files, checkpoint, None, consecutive)
        finally:
            close_loader(loader)
            if bar is not None:
                bar.close()
            if logger is not None:
                logger.close()

    def _fid(self, logger: MetricsLogger | None) -> None:
        row = self.evals.fid(self.ema.model, self.step, self.info)
        if self.info.is_main:
            self.metrics.setdefault("fid", []).append(row)
            self.folder.write_json("metrics.json", self.metrics)
            if logger is not None and logger.tb is not None:
                for k, v in row.items():
                    if k != "step":
                        logger.tb.add_scalar(k, v, self.step)

    def _summarise(self, window: list[dict[str, torch.Tensor | float]], elapsed: float) -> dict[str, Any]:
        """Mean of each log over the steps since the last row (averaged over ranks), throughput, counters: the
        logs stay tensors until here, and all of them become floats with one host sync."""
        keys = sorted({k for logs in window for k in logs})
        window_means = {k: window_mean([logs[k] for logs in window if k in logs]) for k in keys}
        every_rank = all_ranks_true(bool(window), self.info, self.device)  # else this rank's own means only
        means = mean_logs(window_means, self.info if every_rank else DistInfo(), self.device)
        steps = max(len(window), 1)
        row: dict[str, Any] = {"step": self.step}
        row.update(means)
        row["img_per_s"] = steps * self.cfg.batch_size / max(elapsed, 1e-9)
        row["nonfinite"] = self.nonfinite_total
        return row

    def _finish(self, files: dict[str, Path], checkpoint: Path | None, interrupted: int | None,
                trailing: int) -> TrainResult:
        if self.info.is_main:
            out = self.folder.out
            if interrupted is None:
                if self.cfg.eval.grid > 0:
                    files["grid"] = self.evals.grid(self.ema_model, self.folder.grid(self.step))
                if self.cfg.eval.learning_samples > 0:
                    self.metrics["learning_final"] = self.evals.learning(self.ema_model, self.dataset, self.heldout,
                                                                         self.step, initial=False)
                    self.metrics["learning"] = summarise_learning(self.metrics)
            loss_png = plot_losses(out / "train.csv", out / "loss.png", self.objective.labels())
            if loss_png is not None:
                files["loss_curve"] = loss_png
            if self.metrics.get("fid"):
                fid_png = plot_fid(self.metrics["fid"], out / "fid.png")
                if fid_png is not None:
                    files["fid_curve"] = fid_png
            self.metrics["nonfinite_steps"] = self.nonfinite_total
            self.metrics["trailing_nonfinite_steps"] = trailing
            self.metrics["step"] = self.step
            self.metrics["threads"] = torch.get_num_threads()  # what threads (e.g. auto) resolved to
            files["metrics"] = self.folder.write_json("metrics.json", self.metrics)
            files["train_csv"] = out / "train.csv"
            if checkpoint is not None:
                files["checkpoint"] = checkpoint
        return TrainResult(self.folder.out, self.step, checkpoint, files, self.metrics, self.nonfinite_total,
                           interrupted, trailing)


def train(cfg: TrainConfig, out: str | os.PathLike, **kwargs: Any) -> TrainResult:
    """Run :class:`Trainer` (see its arguments)."""
    return Trainer(cfg, out, **kwargs).run()
