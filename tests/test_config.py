"""Config: YAML round trip, strict unknown keys, overrides."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ctcm
from ctcm.config import ConfigError, ModelConfig, apply_overrides, from_dict, load_yaml, save_yaml, to_dict


def test_preset_config_round_trips_through_yaml(tmp_path):
    cfg = ctcm.preset_config("wfno-cifar")
    save_yaml(cfg, tmp_path / "m.yaml")
    again = load_yaml(ModelConfig, tmp_path / "m.yaml")
    assert again == cfg
    assert to_dict(again)["objective"] == [{"name": "consistency", "weight": 1.0}, {"name": "tangent", "weight": 0.1}]


@settings(max_examples=30, deadline=None)
@given(width=st.integers(1, 512), layers=st.integers(1, 12), res=st.sampled_from([8, 16, 32, 64]),
       weight=st.floats(0, 10), sched=st.sampled_from(["geometric", "trigflow"]))
def test_model_config_dict_round_trip(width, layers, res, weight, sched):
    cfg = ModelConfig(backbone=ctcm.ComponentConfig("wfno", {"width": width, "n_layers": layers}),
                      schedule=ctcm.ComponentConfig(sched), resolution=res,
                      objective=[ctcm.ObjectiveTermConfig("tangent", weight, {"normalize": False})])
    assert from_dict(ModelConfig, to_dict(cfg)) == cfg


def test_unknown_key_lists_valid_keys():
    data = to_dict(ctcm.preset_config("wfno-cifar"))
    data["resolutoin"] = 64
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['resolutoin'\]. Valid keys: .*resolution"):
        from_dict(ModelConfig, data)


def test_wrong_type_is_reported():
    data = to_dict(ctcm.preset_config("wfno-cifar"))
    data["channels"] = "three"
    with pytest.raises(ConfigError, match="channels: expected int"):
        from_dict(ModelConfig, data)


def test_overrides():
    data = to_dict(ctcm.preset_config("wfno-cifar"))
    out = apply_overrides(data, ["backbone.width=32", "objective.1.weight=0.5", "schedule.name=trigflow"])
    cfg = from_dict(ModelConfig, out)
    assert cfg.backbone.kwargs["width"] == 32 and cfg.objective[1].weight == 0.5 and cfg.schedule.name == "trigflow"
    assert data["backbone"]["width"] == 128  # the input is not mutated
    with pytest.raises(ConfigError, match="out of range"):
        apply_overrides(data, ["objective.5.weight=1"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides(data, ["backbone.width"])


def test_exponent_floats_from_overrides():
    data = to_dict(ctcm.preset_config("wfno-cifar"))
    cfg = from_dict(ModelConfig, apply_overrides(data, ["objective.0.weight=2e-3"]))
    assert cfg.objective[0].weight == 0.002


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_yaml(ModelConfig, tmp_path / "none.yaml")


def test_config_builds_the_same_model():
    cfg = ctcm.preset_config("wfno-cifar")
    cfg.backbone.kwargs.update(width=8, n_layers=1)
    a = ctcm.build(cfg)
    b = ctcm.build(from_dict(ModelConfig, to_dict(a.config)))
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]
