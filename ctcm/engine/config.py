"""Training configuration: dataclasses with a strict YAML round trip (see :mod:`ctcm.config`).

A run is described by one :class:`TrainConfig`, resolved once by :func:`load_train_config`: the recipe's
defaults (``recipe: wfno-cifar``: its model, objective and optimiser/EMA settings) <- the YAML file <-
command-line ``key.sub=value`` overrides (applied to the YAML before the merge), all with the one merge rule
:func:`ctcm.config.merge`. The result names every component with every argument the recipe and the YAML give
(arguments left out keep the code's defaults); it is what runs and checkpoints store, and it rebuilds the
run without the recipe (``resolved=True``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..registry import create_recipe
from ..sampling import SAMPLING_STEPS
from ..config import (ConfigError, ModelConfig, ObjectiveTermConfig, apply_overrides, from_dict, merge,
                      read_yaml_mapping, to_dict)

@dataclass
class DataConfig:
    """``source``: ``embedded``, an image folder, a .zip, a .npz or ``cifar10[:ROOT]``
    (:func:`ctcm.data.build_dataset`).

    ``flip``: random horizontal flips, drawn by the engine from the data-order generator (so they are
    identical on resume and for any number of ranks). ``heldout``: the images the learning measure compares
    samples against: a split name (``test``) or a number N, the last N images of the training source, which
    are then not trained on (for sources without a test split, such as ``embedded``). ``num_workers``:
    DataLoader worker processes (0: load in the main process). ``label_dropout``: for a class-conditional
    model (``model.num_classes`` > 0), the probability that a training image's label is replaced by the null
    class (classifier-free guidance's p_uncond, Ho & Salimans 2022; drawn with the data order, so exact on resume).
    ``resolutions``: multi-resolution training: each step's batch is resized (bicubic, antialiased) to one of
    these sizes, drawn uniformly with the data order (exact on resume, the same for every rank), e.g.
    ``[32, 64]`` for a resolution-agnostic model meant to be sampled at 64x64 too; ``null``: the model's
    resolution only. Evaluations stay at ``model.resolution``.
    """

    source: str = "embedded"
    flip: bool = True
    heldout: str | int = "test"
    num_workers: int = 0
    label_dropout: float = 0.0
    resolutions: list[int] | None = None

    def __post_init__(self) -> None:
        if self.resolutions is not None and (
                not self.resolutions or len(set(self.resolutions)) != len(self.resolutions)
                or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 4 for r in self.resolutions)):
            raise ConfigError(f"data.resolutions must be distinct image sizes >= 4, e.g. [32, 64] (or null: the "
                              f"model's resolution only), got {self.resolutions!r}")
        if not 0.0 <= self.label_dropout < 1.0:
            raise ConfigError(f"data.label_dropout must be in [0, 1) (e.g. 0.1), got {self.label_dropout}")
        if isinstance(self.heldout, bool) or not isinstance(self.heldout, (str, int)) or (
                isinstance(self.heldout, int) and self.heldout < 0):
            raise ConfigError(f"data.heldout must be a split name or a number of images >= 0, got {self.heldout!r}")


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to ``min_lr_ratio * lr`` at ``decay_steps``.

    ``decay_steps``: length of the schedule (``null``: the run's ``steps``); set it to extend a run past
    its original ``steps`` without changing the learning rates already used. ``grad_clip``: max global
    gradient norm (0: off).
    """

    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-8
    weight_decay: float = 0.01
    warmup_steps: int = 1000
    decay_steps: int | None = None
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"optim.lr must be a finite number > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), e.g. [0.9, 0.99]; got {list(self.betas)}")
        checks = {"eps": self.eps > 0, "weight_decay": self.weight_decay >= 0, "warmup_steps": self.warmup_steps >= 0,
                  "min_lr_ratio": 0 <= self.min_lr_ratio <= 1, "grad_clip": self.grad_clip >= 0,
                  "decay_steps": self.decay_steps is None or self.decay_steps > 0}
        for name, ok in checks.items():
            value = getattr(self, name)
            if not ok or (isinstance(value, float) and not math.isfinite(value)):
                raise ConfigError(f"optim.{name}={value} is out of range (eps > 0; weight_decay, warmup_steps, "
                                  f"grad_clip >= 0; min_lr_ratio in [0, 1]; decay_steps > 0 or null)")


@dataclass
class EMAConfig:
    """theta_ema <- beta theta_ema + (1 - beta) theta; give ``decay`` or ``half_life_images``."""

    decay: float | None = None
    half_life_images: float | None = 500_000.0


@dataclass
class EvalConfig:
    """What the run measures besides the loss.

    ``learning_samples``: samples (and held-out images) for the cheap learning measure at step 0 and at the
    end (0: off). ``batch_size``: sampling batch of the grid and the learning measure. ``grid``: images in
    the fixed-noise sample grid. ``fid_every``: FID every N steps (0: off)
    on ``fid_samples`` samples against ``fid_ref`` (statistics or a dataset, see
    :class:`ctcm.metrics.FIDEvaluator`), for each number of sampling steps in ``fid_steps``; a
    class-conditional model is sampled class-balanced (the conditional protocol), guided by ``guidance``
    (null: none). ``inception_score``: also the Inception Score of the same samples (``is_weights``: the
    file with its softmax layer, default found as :func:`ctcm.metrics.find_logit_weights` does).
    """

    learning_samples: int = 1000
    grid: int = 64
    fid_every: int = 0
    fid_samples: int = 10_000
    fid_ref: str = "cifar10"
    fid_steps: list[int] = field(default_factory=lambda: [1, 2])
    fid_batch_size: int = 250
    batch_size: int = 250
    inception_score: bool = False
    is_weights: str | None = None
    guidance: float | None = None

    def __post_init__(self) -> None:
        for name in ("learning_samples", "grid", "fid_every", "fid_samples"):
            if getattr(self, name) < 0:
                raise ConfigError(f"eval.{name} must be >= 0 (0: off), got {getattr(self, name)}")
        for name in ("fid_batch_size", "batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"eval.{name} must be positive, got {getattr(self, name)}")
        if any(steps not in SAMPLING_STEPS for steps in self.fid_steps) or (self.fid_every and not self.fid_steps):
            raise ConfigError(f"eval.fid_steps lists numbers of sampling steps, each one of {list(SAMPLING_STEPS)}, "
                              f"e.g. [1, 2]; got {self.fid_steps}")


@dataclass
class TrainConfig:
    """One training run (build it with :func:`load_train_config`, which resolves the recipe).

    ``recipe``: the registered recipe the run started from (provenance; its defaults are already merged in).
    ``model``: backbone + schedule + data shape; ``objective``: the weighted terms, each with its own
    arguments (time distribution, gap...). ``batch_size`` is the global batch (split evenly across ranks).
    ``precision``: ``bf16`` autocast (CUDA only; CPU always runs float32) or ``fp32``. ``compile``:
    ``torch.compile`` the backbone's forward, backward and tangent (:func:`ctcm.compile_backbone`).
    ``max_nonfinite``: consecutive non-finite steps that stop the run.
    ``*_every``: in optimiser steps (0: off). ``keep_checkpoints``: periodic checkpoints kept besides
    ``latest.pt`` (0: keep all). ``threads``: CPU threads of torch's intra-op pool during the run (null:
    torch's default, one per core; ``auto``: the cores that are idle when the run starts, at least 1; see
    :mod:`ctcm.engine.threads`). ``init_from``: a checkpoint whose network weights (EMA when present)
    start a fresh run (warm start: new optimiser, EMA restarted from those weights); ignored when resuming.
    """

    model: ModelConfig
    objective: list[ObjectiveTermConfig]
    recipe: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    steps: int = 400_000
    batch_size: int = 512
    seed: int = 0
    device: str = "auto"
    precision: str = "bf16"
    compile: bool = False
    deterministic: bool = True
    max_nonfinite: int = 20
    log_every: int = 100
    sample_every: int = 10_000
    checkpoint_every: int = 10_000
    keep_checkpoints: int = 3
    threads: int | str | None = None
    init_from: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in ("bf16", "fp32"):
            raise ConfigError(f"precision must be 'bf16' or 'fp32', got {self.precision!r}")
        for name in ("steps", "batch_size", "max_nonfinite"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("log_every", "sample_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (0: off / keep all), got {getattr(self, name)}")
        if not (self.threads is None or self.threads == "auto" or (isinstance(self.threads, int) and self.threads > 0)):
            raise ConfigError(f"threads must be a positive number, auto or null, got {self.threads!r}")
        if (self.ema.decay is None) == (self.ema.half_life_images is None):
            raise ConfigError("ema: give exactly one of decay or half_life_images (set the other to null)")
        if not self.objective:
            raise ConfigError("objective: give at least one term {name: ..., weight: ...} (or set a recipe)")
        if self.data.label_dropout > 0 and self.model.num_classes == 0:
            raise ConfigError(f"data.label_dropout={self.data.label_dropout} needs a class-conditional model: set "
                              f"model.num_classes (e.g. 10 for CIFAR-10), or data.label_dropout=0")


def recipe_defaults(name: str) -> dict[str, Any]:
    """A recipe as TrainConfig data: ``{recipe, model, objective, **train}``."""
    recipe = create_recipe(name)
    return {"recipe": name, "model": to_dict(recipe.model), "objective": to_dict(recipe.objective),
            **to_dict(recipe.train)}


def resolve_train_dict(data: dict[str, Any], *, resolved: bool = False) -> TrainConfig:
    """recipe defaults <- ``data`` (:func:`ctcm.config.merge`), then typed and checked. ``resolved``: ``data``
    is already explicit (a stored run config), so the recipe is not consulted again."""
    if not isinstance(data, dict):
        raise ConfigError(f"a training config must be a mapping, got {type(data).__name__}")
    name = data.get("recipe", None if resolved else DEFAULT_RECIPE)
    merged = data if resolved or name is None else merge(recipe_defaults(name), data)
    if "model" not in merged or "objective" not in merged:
        raise ConfigError("without a recipe give model (backbone, schedule) and objective in full, or set recipe")
    return from_dict(TrainConfig, merged, where="")


def load_train_config(path: str | os.PathLike | None, overrides: list[str] | None = None,
                      base: dict[str, Any] | None = None, *, resolved: bool = False) -> TrainConfig:
    """Read a :class:`TrainConfig` from YAML (or from the dict ``base``), apply ``key.sub=value`` overrides,
    and resolve it against its recipe (unless ``resolved``). Unknown keys are errors that list the valid ones."""
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(f"config file not found: {path}")
        base = read_yaml_mapping(path)
    return resolve_train_dict(apply_overrides(base or {}, overrides or []), resolved=resolved)


def dump_yaml(cfg: TrainConfig) -> str:
    """The config as YAML text (round-trips through ``load_train_config(..., resolved=True)``)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


DEFAULT_RECIPE = "wfno-cifar"
