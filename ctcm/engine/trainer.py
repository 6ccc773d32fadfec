"""The training loop: AdamW + warm-up/cosine, clipping, EMA, non-finite guard, checkpoints, exact resume, DDP.

Exact resume: everything random is a function of state stored in the checkpoint. The data order and flips
are a function of (seed, step) (:mod:`ctcm.engine.data_order`); the objective's draws (t, eps, gaps,
weight-drop masks) come from one generator whose state is saved together with the global CPU/CUDA/NumPy/
Python RNG states. On CPU, N steps + resume + N steps therefore gives bit-identical weights to 2N steps.

The parts around the loop live in their own modules: the run folder (:mod:`.rundir`), the periodic tasks
(:mod:`.periodic`), set-up/tear-down (:mod:`.session`), the preemption-safe loader (:mod:`.loader`), what
resume may change (:mod:`.resume`) and the evaluations (:mod:`.evaluations`).
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..build import build, build_objective
from ..checkpoint import network_weights, read_checkpoint, save_checkpoint
from ..config import to_dict
from ..ema import EMA
from ..model import compile_backbone
from ..objective import Objective
from . import state as run_state
from .config import TrainConfig, dump_yaml
from .data_order import FlippedDataset, StepBatchSampler
from .distributed import all_ranks_true, any_rank_true, average_gradients, barrier, dist_info, mean_logs, pick_device
from .evaluations import Evaluations, split_data
from .loader import close_loader, make_loader, next_batch
from .logging import MetricsLogger, plot_fid, plot_losses
from .lr import build_scheduler
from .periodic import Periodic
from .resume import check_resume_config, checkpoint_config, stored_train_config
from .rundir import RunFolder, latest_checkpoint
from .session import RunSession

OBJECTIVE_SEED_OFFSET = 1


class NonFiniteError(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient norm, or non-finite weights."""


@dataclass
class TrainResult:
    """What a run leaves behind. ``interrupted``: the signal number that stopped it early (else None).
    ``trailing_nonfinite``: skipped steps at the very end of the run (0 when its last step was applied)."""

    out: Path
    step: int
    checkpoint: Path | None
    files: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    nonfinite: int = 0
    interrupted: int | None = None
    trailing_nonfinite: int = 0


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


def weights_finite(module: nn.Module) -> bool:
    """Whether every parameter and floating buffer of ``module`` is finite (one device sync).

    x * 0 is 0 for finite x and NaN for inf / NaN, so the norms of the zeroed tensors are all finite
    exactly when the weights are: a few fused multi-tensor kernels on CUDA instead of two per tensor."""
    tensors = [t.detach() for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    if not tensors:
        return True
    return bool(torch.stack(torch._foreach_norm(torch._foreach_mul(tensors, 0.0))).isfinite().all())


def init_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load the network weights of checkpoint ``path`` into ``model`` (its EMA weights when it has them):
    a warm start, e.g. from a diffusion pretraining run. Optimiser, EMA, step and RNG start fresh."""
    payload = read_checkpoint(path)
    state = network_weights(payload, "ema")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"--init-from {path}: its weights do not fit this run's model ({first}); "
                         f"initialise from a checkpoint of the same backbone and width") from exc


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
        self.folder = RunFolder(out)
        if self.info.is_main:  # before anything expensive: a wrong --out fails in a second
            self.folder.claim(resume=self.resumed_from is not None, overwrite=overwrite)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)

        self.model = build(cfg.model).to(self.device)
        self.objective: Objective = build_objective(cfg.objective)
        self.objective.check_model(self.model)  # before any data is read: a mismatch fails in a second
        # an objective's own trainable parameters (e.g. sCM's adaptive weighting): optimised with the model
        self.objective_params = (self.objective.parameters_module() or nn.Module()).to(self.device)
        if cfg.init_from is not None and self.resumed_from is None:
            init_weights(self.model, cfg.init_from)
        self.ema = EMA(self.model, cfg.ema.decay, half_life_images=cfg.ema.half_life_images, batch_size=cfg.batch_size)
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(self.trainable_parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                           weight_decay=o.weight_decay,
                                           fused=True if self.device.type == "cuda" else None)  # one kernel
        self.scheduler = build_scheduler(self.optimizer, o.warmup_steps, o.decay_steps or cfg.steps, o.min_lr_ratio)
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed + OBJECTIVE_SEED_OFFSET)
        self.step, self.nonfinite_total, self.metrics = 0, 0, {}
        self.nonfinite_cause = ""  # what the objective said made the last non-finite loss so (LossOutput.explain)
        self.last_saved: Path | None = None
        if self.resumed_from is not None:
            self._load(self.resumed_from)

        self.dataset, self.heldout = dataset, heldout
        if dataset is None:
            self.dataset, self.heldout = split_data(cfg, cfg.model.resolution, self.info.is_main)
        self.evals = Evaluations(cfg, self.device, self.progress)
        self.wrapped: nn.Module = self.model

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The model's parameters, then the objective's own."""
        return list(self.model.parameters()) + list(self.objective_params.parameters())

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def _load(self, path: Path) -> None:
        """Restore the run from ``path``; optimiser, EMA and schedule settings of this config take effect."""
        payload = read_checkpoint(path, map_location=self.device)
        extra = payload["extra"]
        if "config" in extra:
            check_resume_config(stored_train_config(payload), to_dict(self.cfg), path)
        if int(extra["data_order"]["seed"]) != self.cfg.seed:
            raise ValueError(f"{path} was trained with seed {extra['data_order']['seed']}, this config has "
                             f"seed {self.cfg.seed}: resume with the run's seed (seed=...) for the same data order")
        self.model.load_state_dict(payload["model"])  # the live weights; EMA weights stay in the EMA copy
        decay = self.ema.decay
        self.ema.load_state_dict(payload["ema"])
        self.ema.decay = decay  # ema.* of this config
        self.objective_params.load_state_dict(extra.get("objective", {}))
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["lr_scheduler"])
        self._apply_optim_settings()
        self.step = int(payload["step"])
        run_state.restore_rng(extra["rng"], self.generator)
        self.nonfinite_total = int(extra.get("nonfinite_total", 0))
        self.metrics = dict(extra.get("metrics", {}))
        run = extra.get("run", {})
        self.folder = RunFolder(self.folder.out, run.get("run_id"), run.get("checkpoints", []))

    def _apply_optim_settings(self) -> None:
        """Put this config's optim.* into the restored optimiser and scheduler; the schedule's position (its
        step count) is the checkpoint's, so lr = optim.lr x the schedule's factor at the resumed step."""
        o = self.cfg.optim
        self.scheduler.base_lrs = [o.lr for _ in self.optimizer.param_groups]
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        for group in self.optimizer.param_groups:
            group.update(initial_lr=o.lr, lr=o.lr * factor, betas=tuple(o.betas), eps=o.eps,
                         weight_decay=o.weight_decay)

    def _payload_extra(self) -> dict[str, Any]:
        return {
            "config": checkpoint_config(to_dict(self.cfg)),  # the model section is stored once, as config
            "rng": run_state.capture_rng(self.generator),
            "data_order": {"seed": self.cfg.seed, "step": self.step, "world_size": self.info.world_size},
            "nonfinite_total": self.nonfinite_total,
            "metrics": self.metrics,
            "run": self.folder.state_dict(),
            "objective": self.objective_params.state_dict(),
        }

    def save(self) -> Path | None:
        """Write ``checkpoints/step_N.pt`` and point ``latest.pt`` at it (rank 0; every rank waits).

        Raises:
            NonFiniteError: the live or EMA weights are not finite (nothing is written).
        """
        if not (weights_finite(self.model) and weights_finite(self.ema.model)):
            raise NonFiniteError(self._nonfinite_message(f"the weights are not finite at step {self.step}"))
        path = None
        if self.info.is_main:
            path = self.folder.save_checkpoint(
                self.step, lambda p: save_checkpoint(p, self.model, ema=self.ema, optimizer=self.optimizer,
                                                     lr_scheduler=self.scheduler, step=self.step,
                                                     extra=self._payload_extra()),
                self.cfg.keep_checkpoints)
            self.last_saved = path
        barrier(self.info)
        return path

    def _nonfinite_message(self, what: str) -> str:
        last = self.last_saved or latest_checkpoint(self.folder.out)
        return (f"{what}, so the run stops without writing a checkpoint. The last good checkpoint is "
                f"{last if last is not None else '(none written yet)'}, left untouched. Lower optim.lr, raise "
                f"optim.warmup_steps or lower the weight of the objective term whose column in train.csv grows, then "
                f"resume from it (--resume optim.lr=...).")

    # -- one step ---------------------------------------------------------------------------------------------------
    def _train_step(self, x0: torch.Tensor) -> tuple[dict[str, float], bool]:
        """One optimiser step on the local batch; returns (logs, applied). Non-finite steps change nothing;
        an update that makes the weights non-finite stops the run before the EMA sees it."""
        cfg = self.cfg
        self.wrapped.train()
        use_bf16 = cfg.precision == "bf16" and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = self.objective(self.wrapped, x0, self.step, generator=self.generator, rank=self.info.rank,
                                 world_size=self.info.world_size)
        self.optimizer.zero_grad(set_to_none=True)
        logs = dict(out.logs)
        applied = all_ranks_true(bool(torch.isfinite(out.loss.detach())), self.info, self.device)
        if not applied and out.explain is not None:
            self.nonfinite_cause = out.explain()
        if applied:
            out.loss.backward()
            average_gradients(self.objective_params.parameters(), self.info)  # DDP syncs only the model's
            clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
            grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), clip)
            logs["grad_norm"] = float(grad_norm)
            applied = bool(torch.isfinite(grad_norm))  # gradients are synchronised: the same on every rank
            if applied:
                self.optimizer.step()
                if not weights_finite(self.model):
                    raise NonFiniteError(self._nonfinite_message(
                        f"the update of step {self.step + 1} made the weights non-finite (lr "
                        f"{self.optimizer.param_groups[0]['lr']:.3g})"))
                self.ema.update(self.model)
            else:
                self.optimizer.zero_grad(set_to_none=True)
        logs["lr"] = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        return logs, applied

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
                self.metrics["learning_initial"] = self.evals.learning(self.ema.model, self.dataset, self.heldout,
                                                                       self.step, initial=True)
            if cfg.eval.grid > 0:
                files["grid_initial"] = self.evals.grid(self.ema.model, self.folder.grid(self.step))

    def _run(self, session: RunSession) -> TrainResult:
        cfg, main = self.cfg, self.info.is_main
        files: dict[str, Path] = {}
        if main:
            self._start(files)
        logger = MetricsLogger(self.folder.out, resume_step=self.step if self.resumed_from else None) if main else None
        sampler = StepBatchSampler(len(self.dataset), cfg.batch_size, seed=cfg.seed, start_step=self.step,  # type: ignore[arg-type]
                                   flip=cfg.data.flip, rank=self.info.rank, world_size=self.info.world_size)
        loader = make_loader(FlippedDataset(self.dataset), sampler, cfg.data.num_workers, self.device.type == "cuda")
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
                    logs, applied = self._train_step(batch.to(self.device, non_blocking=True))
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
                    if main and todo.grid:
                        self.evals.grid(self.ema.model, self.folder.grid(self.step))
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

    def _finish(self, files: dict[str, Path], checkpoint: Path | None, interrupted: int | None,
                trailing: int) -> TrainResult:
        if self.info.is_main:
            out = self.folder.out
            if interrupted is None:
                if self.cfg.eval.grid > 0:
                    files["grid"] = self.evals.grid(self.ema.model, self.folder.grid(self.step))
                if self.cfg.eval.learning_samples > 0:
                    self.metrics["learning_final"] = self.evals.learning(self.ema.model, self.dataset, self.heldout,
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
