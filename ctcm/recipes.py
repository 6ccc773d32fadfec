"""Reference recipes: a model (backbone + schedule + data shape) plus how to train it (Eq. 13-26).

A recipe is registered under the name users type for both ``ctcm.build(name)`` (the model only) and
training (``recipe: name`` in a YAML config: the model, the objective with its time distribution and gap,
and optimiser/EMA defaults). Recipes name components by their registered names only, so this module
imports no plugin. Third-party recipes register through the ``ctcm.recipes`` entry-point group or
:func:`ctcm.register_recipe`.
"""

from __future__ import annotations

from typing import Any

from .config import ComponentConfig, ModelConfig, ObjectiveTermConfig, Recipe


def cifar_model(backbone: str, schedule: str = "geometric", num_classes: int = 0,
                **backbone_kwargs: Any) -> ModelConfig:
    """A 3x32x32 model with ``backbone`` and ``schedule`` (class-conditional with ``num_classes`` > 0)."""
    return ModelConfig(backbone=ComponentConfig(backbone, dict(backbone_kwargs)), schedule=ComponentConfig(schedule),
                       channels=3, resolution=32, num_classes=num_classes)


# The CIFAR-10 objective, the winner of the equal-budget study (docs/results.md): consistency with ECT's gap
# curriculum (Eq. 21), four stages over the recipe's 200k steps, pseudo-Huber distance, 1 / (s - s') weighting:
# ECT's settings as of locuslab/ect commit 4311059 (ECMLoss, run_ecm.sh); its departures: docs/deviations.md, D18.
# (The original design's consistency + 0.1 x tangent stays available as an objective list; docs/results.md.)
CIFAR_OBJECTIVE = [ObjectiveTermConfig("consistency", 1.0, {
    "gap": {"name": "ect", "stage_steps": 50_000}, "distance": "pseudo_huber", "weighting": "inv_dsigma"})]

# Optimiser and EMA of the CIFAR-10 recipes (TrainConfig keys; a YAML config overrides any of them).
CIFAR_TRAINING: dict[str, Any] = {
    "optim": {"lr": 3.0e-4, "betas": [0.9, 0.99], "weight_decay": 0.01, "warmup_steps": 2000, "min_lr_ratio": 0.01,
              "grad_clip": 1.0},
    "ema": {"decay": None, "half_life_images": 500_000},
    "batch_size": 512,
    "steps": 200_000,
}

WFNO_CIFAR: dict[str, Any] = {"width": 130, "n_layers": 6, "modes": 16}  # 30.5M: the peers within 0.5%


def wfno_cifar() -> Recipe:
    """Weighted FNO-2D (width 128, 6 blocks, 16x16 modes), geometric schedule, ECT-curriculum consistency."""
    return Recipe(cifar_model("wfno", **WFNO_CIFAR), list(CIFAR_OBJECTIVE), dict(CIFAR_TRAINING))


# p_uncond of classifier-free guidance: the label is dropped for 10% of the training images (Ho & Salimans
# 2022 found 0.1-0.2 best; EDM2 and DiT use 0.1), so one network is also the unconditional model.
CIFAR_LABEL_DROPOUT = 0.1


def wfno_cifar_cond() -> Recipe:
    """``wfno-cifar`` conditioned on the 10 CIFAR-10 classes (a label embedding added to the time embedding,
    Eq. 34) with label dropout 0.1 (the null class), trained on the labelled training set."""
    return Recipe(cifar_model("wfno", num_classes=10, **WFNO_CIFAR), list(CIFAR_OBJECTIVE),
                  {**CIFAR_TRAINING, "data": {"label_dropout": CIFAR_LABEL_DROPOUT}})


def wfno_cifar_trigflow() -> Recipe:
    """As ``wfno-cifar`` on the TrigFlow schedule, trained with sCM's loss (Algorithm 1, adaptive weighting)."""
    return Recipe(cifar_model("wfno", schedule="trigflow", **WFNO_CIFAR), [ObjectiveTermConfig("scm", 1.0)],
                  dict(CIFAR_TRAINING))


def unet_cifar() -> Recipe:
    """DDPM++-style U-Net peer of ``wfno-cifar`` (30.5M parameters vs 30.4M): 96 base channels, 3 levels
    x 4 residual blocks at 192 channels, attention at 16x16, geometric schedule, same objective."""
    model = cifar_model("unet", model_channels=96, channel_mult=[2, 2, 2], num_res_blocks=4, attn_levels=[1],
                        emb_dim=288)
    return Recipe(model, list(CIFAR_OBJECTIVE), dict(CIFAR_TRAINING))


def fno_cifar() -> Recipe:
    """neuraloperator FNO peer of ``wfno-cifar`` (30.4M real parameters, complex weights counted twice):
    width 132, 6 blocks, 16x16 modes, time embedding as input channels; geometric schedule, same objective."""
    return Recipe(cifar_model("fno", width=132, n_layers=6, modes=16), list(CIFAR_OBJECTIVE), dict(CIFAR_TRAINING))


# MeanFlow's CIFAR-10 training (py-meanflow, cifar10_v0.sh / train.py): Adam (no weight decay), lr 6e-4 with a
# linear warm-up of 200 epochs (~9.8k steps at batch 1024) then constant, no clipping, EMA 0.9999, 800k steps.
MEANFLOW_TRAINING: dict[str, Any] = {
    "optim": {"lr": 6.0e-4, "betas": [0.9, 0.999], "weight_decay": 0.0, "warmup_steps": 9766, "min_lr_ratio": 1.0,
              "grad_clip": 0.0},
    "ema": {"decay": 0.9999, "half_life_images": None},
    "batch_size": 1024,
    "steps": 800_000,
}


def wfno_cifar_meanflow() -> Recipe:
    """``wfno-cifar`` as a flow map X(x, t, r) (a second time input, dropout 0.2) on the linear schedule, trained
    with MeanFlow (Eq. 37-40; the paper's (t, r) sampler, adaptive weight p = 0.75) and its optimiser."""
    model = cifar_model("wfno", schedule="linear", **WFNO_CIFAR, time_inputs=2, dropout=0.2)
    return Recipe(model, [ObjectiveTermConfig("meanflow", 1.0)], dict(MEANFLOW_TRAINING))
