"""Training configuration: dataclasses with a strict YAML round trip (see :mod:`ctcm.config`).

A run is described by one :class:`TrainConfig`. Its ``model`` section starts from a preset and merges
overrides into it (``model: {preset: wfno-cifar, backbone: {width: 32}}``), or spells out a full model
(``preset: null`` plus ``backbone``/``schedule``/``objective``). :func:`resolve` turns it into the fully
explicit form that is stored in the run folder and in every checkpoint, so a run can be rebuilt from it.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..build import preset_config
from ..config import ConfigError, ModelConfig, apply_overrides, from_dict, to_dict


@dataclass
class ModelSection:
    """A preset plus overrides, or (``preset: null``) a full model.

    ``backbone``/``schedule`` merge into the preset's keyword arguments (a ``name`` key switches to another
    registered component); ``objective``, when given, replaces the preset's list of terms.
    """

    preset: str | None = "wfno-cifar"
    backbone: dict[str, Any] = field(default_factory=dict)
    schedule: dict[str, Any] = field(default_factory=dict)
    channels: int | None = None
    resolution: int | None = None
    objective: list[dict[str, Any]] | None = None


@dataclass
class DataConfig:
    """``source``: ``embedded``, an image folder, a .zip, a .npz or ``cifar10[:ROOT]`` (:func:`ctcm.data.build_dataset`).

    ``flip``: random horizontal flips, drawn by the engine from the data-order generator (so they are
    identical on resume and for any number of ranks). ``heldout``: the images the learning measure compares
    samples against: a split name (``test``) or a number N, the last N images of the training source, which
    are then not trained on (for sources without a test split, such as ``embedded``). ``num_workers``:
    DataLoader worker processes (0: load in the main process).
    """

    source: str = "embedded"
    flip: bool = True
    heldout: str | int = "test"
    num_workers: int = 0

    def __post_init__(self) -> None:
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


@dataclass
class EMAConfig:
    """theta_ema <- beta theta_ema + (1 - beta) theta; give ``decay`` or ``half_life_images``."""

    decay: float | None = None
    half_life_images: float | None = 500_000.0


@dataclass
class EvalConfig:
    """What the run measures besides the loss.

    ``learning_samples``: samples (and held-out images) for the cheap learning measure at step 0 and at the
    end (0: off). ``grid``: images in the fixed-noise sample grid. ``fid_every``: FID every N steps (0: off)
    on ``fid_samples`` samples against ``fid_ref`` (statistics or a dataset, see
    :class:`ctcm.metrics.FIDEvaluator`), for each number of sampling steps in ``fid_steps``.
    """

    learning_samples: int = 1000
    grid: int = 64
    fid_every: int = 0
    fid_samples: int = 10_000
    fid_ref: str = "cifar10"
    fid_steps: list[int] = field(default_factory=lambda: [1, 2])
    fid_batch_size: int = 250


@dataclass
class TrainConfig:
    """One training run.

    ``batch_size`` is the global batch (split evenly across ranks). ``precision``: ``bf16`` autocast
    (CUDA only; CPU always runs float32) or ``fp32``. ``compile``: ``torch.compile`` the backbone's forward, backward and tangent (``ctcm.compile_backbone``).
    ``max_nonfinite``: consecutive non-finite steps that stop the run. ``*_every``: in optimiser steps
    (0: off). ``keep_checkpoints``: periodic checkpoints kept besides ``latest.pt`` (0: keep all).
    ``threads``: CPU threads of torch's intra-op pool during the run (null: torch's default, one per core).
    """

    model: ModelSection = field(default_factory=ModelSection)
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
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in ("bf16", "fp32"):
            raise ConfigError(f"precision must be 'bf16' or 'fp32', got {self.precision!r}")
        for name in ("steps", "batch_size", "max_nonfinite"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if (self.ema.decay is None) == (self.ema.half_life_images is None):
            raise ConfigError("ema: give exactly one of decay or half_life_images (set the other to null)")


def model_config(section: ModelSection) -> ModelConfig:
    """The :class:`ctcm.ModelConfig` a model section describes (preset merged with its overrides)."""
    if section.preset is None:
        missing = [k for k in ("backbone", "schedule") if not getattr(section, k)]
        if missing or section.objective is None:
            raise ConfigError(
                f"model: without a preset give backbone, schedule and objective (missing "
                f"{missing + ([] if section.objective is not None else ['objective'])}), or set model.preset"
            )
        base: dict[str, Any] = {}
    else:
        base = to_dict(preset_config(section.preset))
    for key in ("backbone", "schedule"):
        extra = dict(getattr(section, key))
        if "name" in extra and base.get(key, {}).get("name") != extra["name"]:
            base[key] = extra
        else:
            base[key] = {**base.get(key, {}), **extra}
    for key in ("channels", "resolution", "objective"):
        if getattr(section, key) is not None:
            base[key] = copy.deepcopy(getattr(section, key))
    return from_dict(ModelConfig, base, where="model")


def resolve(cfg: TrainConfig) -> TrainConfig:
    """A copy whose model section is explicit (``preset: null``): what runs and checkpoints store."""
    out = copy.deepcopy(cfg)
    m = to_dict(model_config(cfg.model))
    out.model = ModelSection(preset=None, backbone=m["backbone"], schedule=m["schedule"],
                             channels=m["channels"], resolution=m["resolution"], objective=m["objective"])
    return out


def load_train_config(path: str | os.PathLike | None, overrides: list[str] | None = None,
                      base: dict[str, Any] | None = None) -> TrainConfig:
    """Read a :class:`TrainConfig` from YAML (or from the dict ``base``), then apply ``key.sub=value`` overrides.

    Unknown keys are errors that list the valid ones."""
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(f"config file not found: {path}")
        with open(path) as fh:
            base = yaml.safe_load(fh) or {}
    data = apply_overrides(base or {}, overrides or [])
    cfg = from_dict(TrainConfig, data, where="")
    model_config(cfg.model)  # fail early on a bad model section
    return cfg


def dump_yaml(cfg: TrainConfig) -> str:
    """The config as YAML text (round-trips through :func:`load_train_config`)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
