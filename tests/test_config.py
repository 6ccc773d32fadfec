"""Config: YAML round trip, strict unknown keys, overrides, the one merge rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ctcm
from ctcm.recipes import WFNO_CIFAR
from ctcm.config import (ConfigError, ModelConfig, Recipe, apply_overrides, from_dict, load_yaml, merge, save_yaml,
                         to_dict)


def test_recipe_round_trips_through_yaml(tmp_path):
    recipe = ctcm.create_recipe("wfno-cifar")
    save_yaml(recipe, tmp_path / "r.yaml")
    again = load_yaml(Recipe, tmp_path / "r.yaml")
    assert again == recipe
    terms = [(t["name"], t["weight"], t["gap"]["name"]) for t in to_dict(again)["objective"]]
    assert terms == [("consistency", 1.0, "ect")]
    assert "objective" not in to_dict(again.model)  # a model is backbone + schedule + data shape only


@settings(max_examples=30, deadline=None)
@given(width=st.integers(1, 512), layers=st.integers(1, 12), res=st.sampled_from([8, 16, 32, 64]),
       weight=st.floats(0, 10), sched=st.sampled_from(["geometric", "trigflow"]))
def test_model_config_dict_round_trip(width, layers, res, weight, sched):
    cfg = ModelConfig(backbone=ctcm.ComponentConfig("wfno", {"width": width, "n_layers": layers}),
                      schedule=ctcm.ComponentConfig(sched), resolution=res)
    assert from_dict(ModelConfig, to_dict(cfg)) == cfg
    recipe = Recipe(cfg, [ctcm.ObjectiveTermConfig("tangent", weight, {"normalize": False})], {"batch_size": layers})
    assert from_dict(Recipe, to_dict(recipe)) == recipe


@settings(max_examples=60, deadline=None)
@given(base=st.dictionaries(st.sampled_from("abcd"), st.integers() | st.dictionaries(st.sampled_from("xyz"),
                                                                                       st.integers()), max_size=4),
       over=st.dictionaries(st.sampled_from("abcd"), st.integers() | st.dictionaries(st.sampled_from("xyz"),
                                                                                       st.integers()), max_size=4))
def test_merge_rule(base, over):
    out = merge(base, over)
    assert merge(base, {}) == base and set(out) == set(base) | set(over)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            assert out[k] == {**base[k], **v}  # mappings merge key by key
        else:
            assert out[k] == v  # anything else replaces
    for k in set(base) - set(over):
        assert out[k] == base[k]


def test_merge_replaces_a_component_whose_name_changes():
    base = {"name": "wfno", "width": 128, "modes": 16}
    assert merge(base, {"width": 32}) == {"name": "wfno", "width": 32, "modes": 16}
    assert merge(base, {"name": "unet", "model_channels": 8}) == {"name": "unet", "model_channels": 8}


def test_unknown_key_lists_valid_keys():
    data = to_dict(ctcm.create_recipe("wfno-cifar").model)
    data["resolutoin"] = 64
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['resolutoin'\]. Valid keys: .*resolution"):
        from_dict(ModelConfig, data)


def test_wrong_type_is_reported():
    data = to_dict(ctcm.create_recipe("wfno-cifar").model)
    data["channels"] = "three"
    with pytest.raises(ConfigError, match="channels: expected int"):
        from_dict(ModelConfig, data)


def test_overrides():
    data = to_dict(ctcm.create_recipe("wfno-cifar"))
    out = apply_overrides(data, ["model.backbone.width=32", "objective.0.weight=0.5", "model.schedule.name=trigflow"])
    cfg = from_dict(Recipe, out)
    assert cfg.model.backbone.kwargs["width"] == 32 and cfg.objective[0].weight == 0.5
    assert cfg.model.schedule.name == "trigflow"
    assert data["model"]["backbone"]["width"] == WFNO_CIFAR["width"]  # the input is not mutated
    with pytest.raises(ConfigError, match="out of range"):
        apply_overrides(data, ["objective.5.weight=1"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides(data, ["model.backbone.width"])


def test_exponent_floats_from_overrides():
    data = to_dict(ctcm.create_recipe("wfno-cifar"))
    cfg = from_dict(Recipe, apply_overrides(data, ["objective.0.weight=2e-3"]))
    assert cfg.objective[0].weight == 0.002


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_yaml(ModelConfig, tmp_path / "none.yaml")


def test_config_builds_the_same_model():
    cfg = ctcm.create_recipe("wfno-cifar").model
    cfg.backbone.kwargs.update(width=8, n_layers=1)
    a = ctcm.build(cfg)
    b = ctcm.build(from_dict(ModelConfig, to_dict(a.config)))
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]


def test_component_options_are_typed_like_dataclass_fields():
    """``model.backbone.dropout=5e-2`` is a string to YAML 1.1: it reaches the constructor as the float 0.05,
    as a dataclass field would, for backbones, schedules and objectives alike (issue 16, item 3)."""
    from ctcm.engine import load_train_config

    cfg = load_train_config(None, ["model.backbone.dropout=5e-2", "model.backbone.width=8.0",
                                   "model.schedule.sigma_data=5e-1"])
    model = ctcm.build(cfg.model)
    assert cfg.model.backbone.kwargs["dropout"] == "5e-2"  # as YAML read it
    assert model.config.backbone.kwargs["dropout"] == 0.05 and model.config.backbone.kwargs["width"] == 8
    assert model.backbone.blocks[0].dropout.p == 0.05 and type(model.backbone.blocks[0].dropout.p) is float
    assert model.schedule.sigma_data == 0.5
    assert ctcm.create_objective("consistency", huber_c="1e-3").huber_c == 0.001


def test_a_component_option_of_the_wrong_type_is_one_clear_line():
    with pytest.raises(ConfigError, match=r"^backbone 'wfno' argument dropout: expected float, got str 'lots'$"):
        ctcm.build("wfno-cifar", backbone={"dropout": "lots"})
    with pytest.raises(ConfigError, match=r"objective 'tangent' argument normalize: expected bool, got str 'maybe'"):
        ctcm.create_objective("tangent", normalize="maybe")


@settings(max_examples=50, deadline=None)
@given(st.floats(min_value=0.0, max_value=0.99, allow_nan=False))
def test_a_float_written_in_e_notation_reaches_the_constructor_as_that_float(p):
    text = f"{p:e}"  # what YAML 1.1 leaves a string when it has no dot, e.g. 5e-02
    model = ctcm.build("wfno-cifar", backbone={"width": 4, "n_layers": 1, "modes": 2, "emb_dim": 4, "dropout": text})
    assert model.backbone.blocks[0].dropout.p == float(text)


@pytest.mark.parametrize("steps", ["[3]", "[1, 0]", "[]"])
def test_fid_steps_are_checked_when_the_config_is_read(steps):
    """eval.fid_steps outside what the sampler knows (1 or 2 steps) fails at config time, not at the first FID."""
    from ctcm.engine import load_train_config

    with pytest.raises(ConfigError, match=r"eval\.fid_steps .* each one of \[1, 2\]"):
        load_train_config(None, [f"eval.fid_steps={steps}", "eval.fid_every=100"])
    assert load_train_config(None, ["eval.fid_steps=[2]"]).eval.fid_steps == [2]
