"""Presets: named model configurations for :func:`ctcm.build` (registered via ``ctcm.presets`` entry points)."""

from __future__ import annotations

from ctcm.config import ComponentConfig, ModelConfig, ObjectiveTermConfig

# The original design's objective: consistency + 0.1 x tangent (docs/maths.md, Eq. 13-14).
CIFAR_OBJECTIVE = (("consistency", 1.0), ("tangent", 0.1))


def cifar_preset(backbone: str, schedule: str = "geometric", **backbone_kwargs) -> ModelConfig:
    """A 3x32x32 model with ``backbone`` and the CIFAR objective."""
    return ModelConfig(
        backbone=ComponentConfig(backbone, dict(backbone_kwargs)),
        schedule=ComponentConfig(schedule),
        channels=3,
        resolution=32,
        objective=[ObjectiveTermConfig(name, weight) for name, weight in CIFAR_OBJECTIVE],
    )


def wfno_cifar() -> ModelConfig:
    """Weighted FNO-2D (width 128, 6 blocks, 16x16 modes), geometric schedule."""
    return cifar_preset("wfno", width=128, n_layers=6, modes=16)


def wfno_cifar_trigflow() -> ModelConfig:
    """As ``wfno-cifar`` with the TrigFlow schedule."""
    return cifar_preset("wfno", "trigflow", width=128, n_layers=6, modes=16)


def unet_cifar() -> ModelConfig:
    """DDPM++-style U-Net peer of ``wfno-cifar`` (30.5M parameters vs 30.4M): 96 base channels, 3 levels
    x 4 residual blocks at 192 channels, attention at 16x16, geometric schedule, same objective."""
    return cifar_preset("unet", model_channels=96, channel_mult=[2, 2, 2], num_res_blocks=4,
                        attn_levels=[1], emb_dim=288)


def fno_cifar() -> ModelConfig:
    """neuraloperator FNO peer of ``wfno-cifar`` (30.4M real parameters, complex weights counted twice):
    width 132, 6 blocks, 16x16 modes, time embedding as input channels; geometric schedule, same objective."""
    return cifar_preset("fno", width=132, n_layers=6, modes=16)
