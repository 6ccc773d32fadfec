"""ctcm: neural-operator backbones and continuous-time consistency-model objectives for PyTorch.

    import ctcm
    model = ctcm.build("wfno-cifar")
    x = model.sample(16, steps=1)

Reference backbones and objectives are plugins (entry points), loaded on first use.
"""

from .build import build, build_objective, preset_config
from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from .config import ComponentConfig, ConfigError, ModelConfig, ObjectiveTermConfig
from .ema import EMA
from .interfaces import Backbone, ComplexSafeModule, NoiseSchedule
from .jvp import total_derivative
from .model import ConsistencyModel, compile_backbone
from .objective import LossOutput, Objective, ObjectiveContext, WeightedSum
from .registry import (
    RegistryError,
    create_backbone,
    create_objective,
    create_schedule,
    list_backbones,
    list_models,
    list_objectives,
    list_schedules,
    register_backbone,
    register_objective,
    register_preset,
    register_schedule,
)
from .samplers import sample, sample_onestep, sample_twostep
from . import schedules as _builtin_schedules  # noqa: F401  (registers "geometric" and "trigflow")

__version__ = "0.1.0"

__all__ = [
    "Backbone", "CheckpointError", "ComplexSafeModule", "ComponentConfig", "ConfigError", "ConsistencyModel",
    "EMA", "LossOutput", "ModelConfig", "NoiseSchedule", "Objective", "ObjectiveContext", "ObjectiveTermConfig",
    "RegistryError", "WeightedSum", "build", "build_objective", "compile_backbone", "create_backbone", "create_objective",
    "create_schedule", "list_backbones", "list_models", "list_objectives", "list_schedules", "load_checkpoint",
    "preset_config", "read_checkpoint", "register_backbone", "register_objective", "register_preset",
    "register_schedule", "sample", "sample_onestep", "sample_twostep", "save_checkpoint", "total_derivative",
]
