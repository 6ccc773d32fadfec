"""The training engine: configs, the loop (AdamW/cosine, EMA, clipping, non-finite guard, checkpoints with
exact resume, DDP under torchrun), logging and plots. Entry points: :func:`train` and ``main_train``.

    from ctcm.engine import load_train_config, train
    cfg = load_train_config("examples/cifar10/configs/tiny.yaml", ["steps=100"])
    result = train(cfg, "runs/tiny")
"""

from .config import (DataConfig, EMAConfig, EvalConfig, OptimConfig, TrainConfig, load_train_config,
                     resolve_train_dict)
from .guard import NonFiniteError
from .results import TrainResult
from .trainer import Trainer, train

__all__ = [
    "DataConfig", "EMAConfig", "EvalConfig", "NonFiniteError", "OptimConfig", "TrainConfig",
    "TrainResult", "Trainer", "load_train_config", "resolve_train_dict", "train",
]
