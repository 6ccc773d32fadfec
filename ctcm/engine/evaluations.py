"""What a run measures besides the loss: the sample grid, the learning measure and FID, plus the data
they need (training and held-out sets). Sampling batch sizes come from ``eval.batch_size``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ..model import ConsistencyModel
from ..errors import UserValueError
from ..sampling import class_cond
from .config import TrainConfig
from .distributed import DistInfo, barrier
from .learning_measure import data_distance
from .logging import save_grid
from ..config import ConfigError

GRID_SEED_OFFSET = 2
EVAL_SEED_OFFSET = 3


def load_data(cfg: TrainConfig, resolution: int, split: str) -> Dataset:
    """``build_dataset(cfg.data.source, ...)`` with clear errors (flips are the data order's, ``data.flip``),
    with labels for a class-conditional model (``model.num_classes`` > 0)."""
    from ..data import DataError, build_dataset

    try:
        return build_dataset(cfg.data.source, resolution, split=split, labels=cfg.model.num_classes > 0)
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
            raise ConfigError(f"data.heldout={h} leaves no training images out of {n}; lower it")
        return Subset(train, range(n - h)), (Subset(train, range(n - h, n)) if h else None)
    wanted = need_heldout and cfg.eval.learning_samples > 0
    return train, (load_data(cfg, resolution, h) if wanted else None)


def reference_images(ds: Dataset, n: int, seed: int) -> torch.Tensor:
    """n images of ``ds`` (a fixed random subset, without flips), stacked (n, C, H, W)."""
    n = min(n, len(ds))  # type: ignore[arg-type]
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]  # type: ignore[arg-type]
    items = [ds[int(i)] for i in idx]
    return torch.stack([torch.as_tensor(x[0] if isinstance(x, (tuple, list)) else x) for x in items]).float()


def class_names_of(dataset: Dataset, num_classes: int, source: str) -> list[str] | None:
    """The class names of a conditional run's dataset (None for an unconditional run); a clear error when the
    dataset has no labels or another number of classes than ``model.num_classes``."""
    if not num_classes:
        return None
    names = getattr(getattr(dataset, "dataset", dataset), "class_names", None)  # through a Subset
    if names is None:
        if not isinstance(dataset[0], (tuple, list)):
            raise UserValueError(f"model.num_classes={num_classes} needs labelled training data, but the given "
                                 f"dataset yields images without labels; give a dataset of (image, label) items")
        names = [str(k) for k in range(num_classes)]
    if len(names) != num_classes:
        raise UserValueError(f"data.source={source!r} has {len(names)} classes ({', '.join(names[:12])}) but "
                             f"model.num_classes={num_classes}; set model.num_classes={len(names)}")
    return list(names)


def class_grid(model: ConsistencyModel, n: int, *, seed: int, batch_size: int, path: Path, steps: int = 1,
               guidance: float | None = None) -> Path:
    """About ``n`` samples from the fixed noise of run ``seed`` tiled into ``path``: for a conditional model one
    row per class (row k: class k, named by ``model.class_names``), n // K images each; else a square grid."""
    k = model.num_classes
    if not k:
        return save_grid(model.sample(n, steps=steps, seed=seed, batch_size=min(n, batch_size)), path)
    per_row = max(1, n // k)
    y = torch.arange(k).repeat_interleave(per_row)
    x = model.sample(len(y), steps=steps, seed=seed, batch_size=min(len(y), batch_size), cond={"y": y},
                     guidance=guidance)
    names = model.class_names or [str(c) for c in range(k)]
    return save_grid(x, path, nrow=per_row, row_labels=[f"{c} {names[c]}" for c in range(k)])


class Evaluations:
    """The grid, learning measure and FID of one run (the FID network is built on first use)."""

    def __init__(self, cfg: TrainConfig, device: torch.device, progress: bool) -> None:
        self.cfg, self.device, self.progress = cfg, device, progress
        self._fid: Any = None

    def grid(self, model: ConsistencyModel, path: Path) -> Path:
        """``eval.grid`` one-step samples from fixed noise, tiled into ``path`` (one row per class for a
        conditional model, :func:`class_grid`)."""
        return class_grid(model, self.cfg.eval.grid, seed=self.cfg.seed + GRID_SEED_OFFSET,
                          batch_size=self.cfg.eval.batch_size, path=path)

    def learning(self, model: ConsistencyModel, train: Dataset, heldout: Dataset | None, step: int,
                 initial: bool) -> dict[str, float]:
        """:func:`data_distance` of 1- and 2-step samples to held-out data, plus (initially) the noise floor."""
        if heldout is None:
            raise ConfigError("eval.learning_samples > 0 needs held-out images: set data.heldout (a split name or "
                              "a number of training images to hold out), or eval.learning_samples=0")
        seed = self.cfg.seed
        ref = reference_images(heldout, self.cfg.eval.learning_samples, seed)
        out: dict[str, float] = {"step": step}
        cond = class_cond(model.num_classes, seed + EVAL_SEED_OFFSET, len(ref))  # class-balanced when conditional
        for steps in (1, 2):
            x = model.sample(len(ref), steps=steps, seed=seed + EVAL_SEED_OFFSET, cond=cond,
                             batch_size=self.cfg.eval.batch_size).cpu()
            out.update({f"{k}_{steps}step": v for k, v in data_distance(x, ref).items()})
        if initial:
            floor = data_distance(reference_images(train, len(ref), seed + 1), ref)
            out.update({f"{k}_floor": v for k, v in floor.items()})
        return out

    def fid(self, model: nn.Module, step: int, info: DistInfo) -> dict[str, float]:
        """FID (and with ``eval.inception_score`` the Inception Score) of ``model`` for each of ``eval.fid_steps``,
        class-balanced for a conditional model; every rank takes part (it shards the samples)."""
        from ..metrics import FIDEvaluator

        e = self.cfg.eval
        if self._fid is None:
            for turn in (True, False):  # rank 0 first: it computes and caches the reference statistics
                if info.is_main == turn:
                    self._fid = FIDEvaluator(e.fid_ref, e.fid_samples, batch_size=e.fid_batch_size,
                                             device=self.device, progress=self.progress and turn,
                                             inception_score=e.inception_score, is_weights=e.is_weights,
                                             guidance=e.guidance)
                barrier(info)
        assert self._fid is not None
        row: dict[str, float] = {"step": step}
        for steps in e.fid_steps:  # fid_1step, and with eval.inception_score is_mean_1step, is_std_1step
            scores = self._fid.scores(model, steps=steps, seed=self.cfg.seed)
            row.update({f"{k}_{steps}step": float(v) for k, v in scores.items()})
        return row
