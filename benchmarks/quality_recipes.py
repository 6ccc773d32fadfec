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

(a) is ``tiny.yaml`` / ``default_cifar.yaml`` unchanged. The override lists of (b), (c) and (d) are the lead's
to set; the ones below are stand-ins of the right form. ``unet`` and ``fno`` put the chosen recipe on the peer
backbones at matched parameter counts (complex weights counted twice): on the tiny CPU model (WFNO 118,019
parameters) a U-Net of 122,145 and an FNO of 118,075; on the full model the presets ``unet-cifar`` and
``fno-cifar`` are already matched to ``wfno-cifar`` (30.5M / 30.4M / 30.4M). Point ``extends`` at the best
recipe once (a)-(d) have run.
"""

from __future__ import annotations

DEFAULT_CONFIGS = {"cpu": "examples/cifar10/configs/tiny.yaml", "gpu": "examples/cifar10/configs/default_cifar.yaml"}

# the backbone swap at matched parameters, per size (a string or a list of overrides; a backbone dict with another `name` replaces the config's)
PEER_BACKBONES = {
    "cpu": {
        "unet": "model.backbone={name: unet, model_channels: 10, channel_mult: [1, 2, 2], num_res_blocks: 1, "
                "attn_levels: [], emb_dim: 64}",
        "fno": "model.backbone={name: fno, width: 26, n_layers: 2, modes: 8}",
    },
    # the preset's own backbone: model.backbone={} drops default_cifar.yaml's WFNO-only spectral_weight_drop
    "gpu": {"unet": ["model.preset=unet-cifar", "model.backbone={}"],
            "fno": ["model.preset=fno-cifar", "model.backbone={}"]},
}

RECIPES: dict[str, dict] = {
    "a": {
        "label": "today's default",
        "config": None,
        "overrides": [],
    },
    "b": {
        "label": "ECT curriculum",
        "config": None,
        "overrides": ["model.objective=[{name: consistency, weight: 1.0, delta_max: 1.0}]"],
    },
    "c": {
        "label": "sCM on TrigFlow, adaptive weighting",
        "config": None,
        "overrides": ["model.schedule={name: trigflow}",
                      "model.objective=[{name: consistency, weight: 1.0, delta_max: 1.0}]"],
    },
    "d": {
        "label": "denoising warm start, then (b)",
        "config": None,
        "overrides": [],
        "phases": [
            {"fraction": 0.25, "init_from_previous": False,
             "overrides": ["model.objective=[{name: consistency, weight: 1.0, delta_max: 1.0}]"]},
            {"fraction": 0.75, "init_from_previous": True,
             "overrides": ["model.objective=[{name: consistency, weight: 1.0, delta_max: 1.0}]"]},
        ],
    },
    "unet": {
        "label": "best recipe on the U-Net (matched parameters)",
        "extends": "a",
        "config": None,
        "overrides": ["@backbone:unet"],
    },
    "fno": {
        "label": "best recipe on the FNO (matched parameters)",
        "extends": "a",
        "config": None,
        "overrides": ["@backbone:fno"],
    },
}

DEFAULT_RECIPES = ("a", "b", "c", "d")
