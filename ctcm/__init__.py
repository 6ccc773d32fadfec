"""ctcm: neural-operator backbones and continuous-time consistency-model objectives for PyTorch.

    import ctcm
    model = ctcm.build("wfno-cifar")
    x = model.sample(16, steps=1, seed=0)

Reference backbones and objectives are plugins (entry points), loaded on first use. Every kind of part has
``register_<kind>``, ``create_<kind>`` and ``list_<kind>s`` (backbones, schedules, objectives, time
distributions, gaps, recipes).
"""

from importlib.metadata import PackageNotFoundError, version as _version

from .build import build, build_objective
from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from .config import ComponentConfig, ConfigError, ModelConfig, ObjectiveTermConfig, Recipe
from .ema import EMA
from .errors import UserError, UserTypeError, UserValueError
from .interfaces import Backbone, ComplexSafeModule, NoiseSchedule
from .jvp import total_derivative
from .model import ConsistencyModel, compile_backbone
from .objective import LossOutput, Objective, ObjectiveContext, TimedObjective, WeightedSum
from .registry import (
    RegistryError,
    create_backbone,
    create_gap,
    create_objective,
    create_recipe,
    create_schedule,
    create_time_distribution,
    get_recipe,
    list_backbones,
    list_gaps,
    list_models,
    list_objectives,
    list_recipes,
    list_schedules,
    list_time_distributions,
    register_backbone,
    register_gap,
    register_objective,
    register_recipe,
    register_schedule,
    register_time_distribution,
)
from .sampling import default_times, multistep_sample, sample_all, sample_batches, to_uint8
from . import schedules  # registers "geometric", "trigflow" and "linear"
from .time_distributions import Gap, TimeDistribution, TimePairDistribution

try:
    __version__ = _version("ctcm")  # the one source: pyproject.toml's [project] version
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Backbone", "CheckpointError", "ComplexSafeModule", "ComponentConfig", "ConfigError", "ConsistencyModel", "EMA",
    "Gap", "LossOutput", "ModelConfig", "NoiseSchedule", "Objective", "ObjectiveContext", "ObjectiveTermConfig",
    "Recipe", "RegistryError", "TimeDistribution", "TimePairDistribution", "TimedObjective", "UserError",
    "UserTypeError", "UserValueError", "WeightedSum",
    "build", "build_objective", "compile_backbone", "create_backbone", "create_gap", "create_objective",
    "create_recipe", "create_schedule", "create_time_distribution", "default_times", "get_recipe", "list_backbones",
    "list_gaps", "list_models", "list_objectives", "list_recipes", "list_schedules", "list_time_distributions",
    "load_checkpoint", "multistep_sample", "read_checkpoint", "register_backbone", "register_gap",
    "register_objective", "register_recipe", "register_schedule", "register_time_distribution", "sample_all",
    "sample_batches", "save_checkpoint", "schedules", "to_uint8", "total_derivative",
]
