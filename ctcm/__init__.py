"""ctcm: neural-operator backbones and continuous-time consistency-model objectives for PyTorch.

    import ctcm
    model = ctcm.build("wfno-cifar")
    x = model.sample(16, steps=1, seed=0)

Reference backbones and objectives are plugins (entry points), loaded on first use.
"""

from .build import build, build_objective, get_recipe
from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from .config import ComponentConfig, ConfigError, ModelConfig, ObjectiveTermConfig, Recipe
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
    register_recipe,
    register_schedule,
)
from .sampling import default_times, sample, sample_all, sample_batches, to_uint8
from . import schedules as _builtin_schedules  # noqa: F401  (registers "geometric", "trigflow", "linear")
from .time_distributions import Gap, TimeDistribution, TimePairDistribution
from .registry import register_gap, register_time_distribution

__version__ = "0.1.0"

__all__ = [
    "Backbone", "CheckpointError", "ComplexSafeModule", "ComponentConfig", "ConfigError", "ConsistencyModel",
    "EMA", "Gap", "LossOutput", "ModelConfig", "NoiseSchedule", "Objective", "ObjectiveContext", "ObjectiveTermConfig",
    "TimeDistribution", "TimePairDistribution", "register_gap", "register_time_distribution",
    "RegistryError", "WeightedSum", "build", "build_objective", "compile_backbone", "create_backbone",
    "create_objective",
    "create_schedule", "list_backbones", "list_models", "list_objectives", "list_schedules", "load_checkpoint",
    "get_recipe", "read_checkpoint", "register_backbone", "register_objective", "register_recipe", "Recipe",
    "register_schedule", "sample", "sample_all", "sample_batches", "save_checkpoint", "to_uint8", "default_times",
    "total_derivative",
]
