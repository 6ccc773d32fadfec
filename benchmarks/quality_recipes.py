"""The recipes of ``python -m benchmarks quality``: data only, one entry per named recipe.

Each recipe is ``name -> {label, config, overrides, phases}``:

- ``label``: a short description for the report.
- ``config``: the YAML the run starts from; ``None`` takes the size's default (:data:`DEFAULT_CONFIGS`).
- ``overrides``: ``key.sub=value`` strings passed to ``examples/cifar10/train.py`` after the benchmark's own
  budget settings (steps, batch size, seed, checkpoints), so do not set those here.
- ``phases`` (optional): a list of ``{fraction, overrides, init_from_previous}``. The image budget is split by
  ``fraction``; every phase but the last trains in ``<run>/phase<i>``, the last in ``<run>``. A phase with
  ``init_from_previous`` starts with ``--init-from <previous phase>/checkpoints/latest.pt``. A phase's
  overrides come after the recipe's. Its points sit on the images-seen axis after the earlier phases' images.
- ``extends`` (optional): another recipe's name; its overrides (and phases) come first, then this entry's.

Budget-relative settings: in an override, ``$STEPS`` is the phase's number of optimiser steps and ``$STEPS/N``
its integer division by N, so a curriculum (ECT's stages, sCM's warm-up) is set by the budget it runs in.

``default`` is the original design's objective as ``tiny.yaml`` / ``default_cifar.yaml`` had it before the study
(:data:`DESIGN_OBJECTIVE`, ``@objective:design``). ``unet`` and
``fno`` put the winning recipe (``ect``, docs/results.md) on the peer backbones at matched parameter counts
(complex weights counted twice): on the tiny CPU model (WFNO 118,019 parameters) a U-Net of 122,145 and an
FNO of 118,075; on the full model the recipes ``unet-cifar`` and ``fno-cifar`` are already matched to
``wfno-cifar`` (30.5M / 30.4M / 30.4M).
"""

from __future__ import annotations

import json

from ctcm_backbones.wfno import WFNO2d

DEFAULT_CONFIGS = {"cpu": "examples/cifar10/configs/tiny.yaml", "gpu": "examples/cifar10/configs/default_cifar.yaml"}

# the backbone swap at matched parameters, per size (a string or a list of overrides; a backbone with another
# `name` replaces the config's, see ctcm.config.merge)
PEER_BACKBONES = {
    "cpu": {
        "unet": "model.backbone={name: unet, model_channels: 10, channel_mult: [1, 2, 2], num_res_blocks: 1, "
                "attn_levels: [], emb_dim: 64}",
        "fno": "model.backbone={name: fno, width: 26, n_layers: 2, modes: 8}",
        # the size of the WFNO the design study ran (the `w-*` / `w3-*` recipes pin it: tiny.yaml's may change)
        "wfno-study": "model.backbone.modes=8",
    },
    # the recipe's own backbone (replacing default_cifar.yaml's WFNO-only spectral_weight_drop)
    "gpu": {"unet": ["recipe=unet-cifar", "model.backbone={name: unet}"],
            "fno": ["recipe=fno-cifar", "model.backbone={name: fno}"],
            "wfno-study": ["model.backbone.width=130", "model.backbone.modes=16"]},
}

# the original design's objective as tiny.yaml / default_cifar.yaml had it before the study (recipe `default`):
# consistency with a uniform gap + 0.1 x tangent; spelled out so the configs can move on to the winner
DESIGN_OBJECTIVE = {
    "cpu": "objective=[{name: consistency, weight: 1.0, gap: {name: uniform, delta_max: 0.1}}, "
           "{name: tangent, weight: 0.1, warmup_steps: 100}]",
    "gpu": "objective=[{name: consistency, weight: 1.0, gap: {name: uniform, delta_max: 0.02}}, "
           "{name: tangent, weight: 0.1, warmup_steps: 10000}]",
}

ECT = ("objective=[{name: consistency, gap: {name: ect, stage_steps: $STEPS/4}, distance: pseudo_huber, "
       "weighting: inv_dsigma}]")

# MeanFlow (Eq. 37-40) on the same WFNO with a second time input: the flow map on the linear path, the paper's
# (t, r) sampler and adaptive weight, and the recipe's dropout 0.2 (wfno-cifar-meanflow); the size's optimiser
MEANFLOW = ["model.schedule={name: linear}", "model.backbone.time_inputs=2", "model.backbone.dropout=0.2",
            "objective=[{name: meanflow}]"]

RECIPES: dict[str, dict] = {
    "default": {
        "label": "(a) the design's objective: consistency (uniform gap) + 0.1 tangent",
        "config": None,
        "overrides": ["@objective:design"],
    },
    "ect": {
        "label": "(b) ECT curriculum: 4 stages, pseudo-Huber, 1/(s - s') weighting",
        "config": None,
        "overrides": [ECT],
    },
    "scm": {
        "label": "(c) sCM on TrigFlow, adaptive weighting, warm-up 10% of the steps",
        "config": None,
        "overrides": ["model.schedule={name: trigflow}", "objective=[{name: scm, warmup_steps: $STEPS/10}]"],
    },
    "denoise-ect": {
        "label": "(d) denoising warm start (half the images), then (b)",
        "config": None,
        "overrides": [],
        "phases": [
            {"fraction": 0.5, "init_from_previous": False, "overrides": ["objective=[{name: denoising}]"]},
            {"fraction": 0.5, "init_from_previous": True, "overrides": [ECT]},
        ],
    },
    "meanflow": {
        "label": "(m) MeanFlow: a flow map on the linear path, (t, r) logit-normal(-2, 2), 75% r != t, p = 0.75",
        "config": None,
        "overrides": MEANFLOW,
    },
    "unet": {
        "label": "(b) on the U-Net (matched parameters)",
        "extends": "ect",
        "config": None,
        "overrides": ["@backbone:unet"],
    },
    "fno": {
        "label": "(b) on the FNO (matched parameters)",
        "extends": "ect",
        "config": None,
        "overrides": ["@backbone:fno"],
    },
}

# The WFNO design study (docs/results.md, "Backbone design"): ECT on the CPU-size WFNO with one design option
# changed at a time from the 0.2 design (the hypotheses are written there, before the runs), then the
# combination. Each recipe pins the 0.2 design and the study's size first (DESIGN_02), so it means the same
# run whatever the `wfno` defaults and the sizes' configs are; `ect` itself follows them (0.3: `w-fnolike`).
DESIGN_02 = [*(f"model.backbone.{k}={json.dumps(v)}" for k, v in WFNO2d.legacy_defaults.items()),
             "@backbone:wfno-study"]
# the parts of the 0.3 design (`w-fnolike`); `w-no-<part>` is the 0.3 design without that one part (leave-one-out)
FNOLIKE_PARTS = {"grid": "model.backbone.positional_grid=true", "tin": "model.backbone.time_channels=16",
                 "lift": "model.backbone.lift_hidden=48", "mlp": "model.backbone.channel_mlp=0.5",
                 "k1": "model.backbone.local_kernel=1"}
DESIGN_03 = list(FNOLIKE_PARTS.values())  # the 0.3 design's overrides (`w-fnolike`)
WFNO_DESIGNS: dict[str, tuple[str, list[str]]] = {
    "ect-w02": ("the 0.2 design (the study's baseline)", []),
    "w-grid": ("coordinate grid input channels", ["model.backbone.positional_grid=true"]),
    "w-tin": ("time embedding also as 16 input channels", ["model.backbone.time_channels=16"]),
    "w-tin-nofilm": ("time as 16 input channels, no FiLM", ["model.backbone.time_channels=16",
                                                            "model.backbone.film=false"]),
    "w-lift": ("two-layer lifting MLP (48 hidden)", ["model.backbone.lift_hidden=48"]),
    "w-k1": ("no 3x3 convolution (1x1 local path)", ["model.backbone.local_kernel=1"]),
    "w-mlp": ("per-block channel MLP (1x width)", ["model.backbone.channel_mlp=1.0"]),
    "w-modes4": ("4 Fourier modes instead of 8", ["model.backbone.modes=4"]),
    "w-deep": ("width 16, 4 blocks (vs 24, 2)", ["model.backbone.width=16", "model.backbone.n_layers=4"]),
    "w-liftfilm": ("FiLM of the lifted input (Eq. 18d)", ["model.backbone.lift_film=true"]),
    "w-fnolike": ("the FNO's features together: grid, time channels, lifting MLP, channel MLP, 1x1 local path",
                  DESIGN_03),
    "w-ms": ("U-shaped: 3 blocks at scales 1, 2, 1", ["model.backbone.n_layers=3",
                                                      "model.backbone.block_scales=[1, 2, 1]"]),
}
for _part in FNOLIKE_PARTS:
    WFNO_DESIGNS[f"w-no-{_part}"] = (f"the 0.3 design without its {_part} part (leave-one-out)",
                                     [o for k, o in FNOLIKE_PARTS.items() if k != _part])
# one change at a time from the 0.3 design (`w3-*`, docs/results.md "From the 0.3 design"): the candidates the
# first screen did not run, now on top of the combination that won it
WFNO_DESIGNS.update({
    "w3-deep": ("0.3 design at width 18, 4 blocks (vs 24, 2)",
                DESIGN_03 + ["model.backbone.width=18", "model.backbone.n_layers=4"]),
    "w3-ms": ("0.3 design, U-shaped: 3 blocks at scales 1, 2, 1",
              DESIGN_03 + ["model.backbone.n_layers=3", "model.backbone.block_scales=[1, 2, 1]"]),
    "w3-mlp1": ("0.3 design with a 1x-width channel MLP (vs 0.5x)", DESIGN_03 + ["model.backbone.channel_mlp=1.0"]),
    "w3-modes6": ("0.3 design with 6 Fourier modes (vs 8)", DESIGN_03 + ["model.backbone.modes=6"]),
    "w3-modes4": ("0.3 design with 4 Fourier modes (vs 8)", DESIGN_03 + ["model.backbone.modes=4"]),
    "w3-modes10": ("0.3 design with 10 Fourier modes (vs 8)", DESIGN_03 + ["model.backbone.modes=10"]),
    **{f"w3-taper{a}": (f"0.3 design with a Gaussian mode taper, alpha {a} (Eq. 17b)",
                        DESIGN_03 + [f"model.backbone.mode_taper={a}.0"]) for a in (1, 2)},
    "w3-liftfilm": ("0.3 design with FiLM of the lifted input (Eq. 18d)",
                    DESIGN_03 + ["model.backbone.lift_film=true"]),
    "w3-nofilm": ("0.3 design without per-block FiLM (time as input channels only)",
                  DESIGN_03 + ["model.backbone.film=false"]),
})
# from the 0.4 design (`w-no-lift`, docs/results.md "A 3x3 path that opens"): texture at larger budgets
DESIGN_04 = [o for k, o in FNOLIKE_PARTS.items() if k != "lift"]
WFNO_DESIGNS["w4-k3gate"] = ("0.4 design with a 3x3 path shut at initialisation (a_3 = 0)",
                             [o for o in DESIGN_04 if o != FNOLIKE_PARTS["k1"]]
                             + ["model.backbone.local_kernel=3", "model.backbone.local3_init=0.0"])
WFNO_DESIGNS["w4-ms"] = ("0.4 design, U-shaped: 4 blocks at scales 1, 2, 2, 1",
                         DESIGN_04 + ["model.backbone.n_layers=4", "model.backbone.block_scales=[1, 2, 2, 1]"])
for _name, (_label, _overrides) in WFNO_DESIGNS.items():
    RECIPES[_name] = {"label": f"(b) on the WFNO, {_label}", "extends": "ect", "config": None,
                      "overrides": DESIGN_02 + _overrides}

DEFAULT_RECIPES = ("default", "ect", "scm", "denoise-ect")
