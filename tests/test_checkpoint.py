"""Checkpoints: bit-exact round trip, EMA kept apart, atomic writes, refusal of pickles, truncated files."""

from __future__ import annotations

import os

import pytest
import torch

import ctcm
from conftest import TINY_WFNO, tiny_model


def _model():
    torch.manual_seed(0)
    return ctcm.build("wfno-cifar-trigflow", backbone=TINY_WFNO, resolution=8)


def test_round_trip_is_bit_exact(tmp_path):
    model = _model().eval()
    path = ctcm.save_checkpoint(tmp_path / "m.pt", model, step=7)
    loaded = ctcm.load_checkpoint(path).eval()
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([0.2, 1.0])
    assert torch.equal(model(x, t), loaded(x, t))
    assert type(loaded.schedule).__name__ == "TrigFlowSchedule"
    assert ctcm.read_checkpoint(path)["step"] == 7


def test_ema_and_live_weights_stay_apart(tmp_path):
    model = _model()
    ema = ctcm.EMA(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    path = ctcm.save_checkpoint(tmp_path / "m.pt", model, ema=ema)
    live, averaged = ctcm.load_checkpoint(path, weights="model"), ctcm.load_checkpoint(path, weights="ema")
    for p_live, p_ema, p_model, p_avg in zip(live.parameters(), averaged.parameters(), model.parameters(),
                                             ema.model.parameters()):
        assert torch.equal(p_live, p_model) and torch.equal(p_ema, p_avg)
        assert not torch.equal(p_live, p_ema)


def test_ema_update_rule():
    model = _model()
    ema = ctcm.EMA(model, half_life_images=64, batch_size=64)
    assert ema.decay == pytest.approx(0.5)
    before = [p.detach().clone() for p in ema.model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    ema.update(model)
    for b, p, e in zip(before, model.parameters(), ema.model.parameters()):
        torch.testing.assert_close(e, 0.5 * b + 0.5 * p)


def test_malicious_pickle_is_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    torch.save({"format": "ctcm-checkpoint/1", "model": Exploit()}, path)
    with pytest.raises(ctcm.CheckpointError, match="refused to load"):
        ctcm.load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_truncated_file_gives_a_clear_error(tmp_path):
    path = ctcm.save_checkpoint(tmp_path / "m.pt", _model())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ctcm.CheckpointError, match="truncated or corrupted"):
        ctcm.load_checkpoint(path)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(ctcm.CheckpointError, match="not found"):
        ctcm.load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ctcm.CheckpointError, match="not a ctcm checkpoint"):
        ctcm.load_checkpoint(tmp_path / "foreign.pt")


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = _model()
    path = ctcm.save_checkpoint(tmp_path / "m.pt", model, step=1)

    def broken_save(obj, fh, *args, **kwargs):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ctcm.save_checkpoint(path, model, step=2)
    monkeypatch.undo()
    assert ctcm.read_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_float64_model_round_trip(tmp_path):
    model = tiny_model().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-12 * torch.randn_like(p))  # values a float32 round trip would lose
    path = ctcm.save_checkpoint(tmp_path / "d.pt", model)
    loaded = ctcm.load_checkpoint(path).eval()
    assert next(loaded.parameters()).dtype == torch.float64
    x, t = torch.randn(1, 3, 8, 8, dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64)
    assert torch.equal(model(x, t), loaded(x, t))


def test_a_0_1_checkpoint_still_loads_and_resumes_its_config(tmp_path):
    """0.1 stored the objective (and preset: null) inside the model section: the model is rebuilt from
    what is left, and a resumed run recovers the objective terms from there."""
    from ctcm.engine.resume import stored_train_config

    model = tiny_model()
    path = ctcm.save_checkpoint(tmp_path / "new.pt", model, step=1, extra={"config": {"seed": 0}})
    payload = torch.load(path, weights_only=True)
    terms = [{"name": "consistency", "weight": 1.0, "delta_max": 0.1}]
    payload["config"] = {**payload["config"], "preset": None, "objective": terms}
    old = tmp_path / "old.pt"
    torch.save(payload, old)  # the checksum covers tensors only, so it still holds
    again = ctcm.load_checkpoint(old)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    stored = stored_train_config(ctcm.read_checkpoint(old))
    assert stored["objective"] == terms and "objective" not in stored["model"] and "preset" not in stored["model"]


def _halve_float_defaults(monkeypatch, cls):
    """A later version's defaults: every float default of ``cls``'s constructor halved, but for the WFNO's
    ``channel_mlp`` (a layer width: another value changes the parameter shapes, which loading catches anyway)."""
    import inspect

    init = cls.__init__
    if init.__defaults__:
        names = [p.name for p in inspect.signature(init).parameters.values() if p.default is not p.empty]
        monkeypatch.setattr(init, "__defaults__", tuple(v / 2 if isinstance(v, float) and n != "channel_mlp" else v
                                                        for n, v in zip(names, init.__defaults__, strict=True)))


@pytest.mark.parametrize("recipe", ["wfno-cifar", "wfno-cifar-trigflow"])
def test_a_changed_default_does_not_change_a_stored_model(tmp_path, monkeypatch, recipe):
    """Checkpoints store every constructor argument, defaults resolved at build time: halving the float
    defaults of the backbone (its time embedding's max_freq...) and the schedule (sigma_data...) after saving
    leaves the loaded model unchanged (issue 16, item 2)."""
    torch.manual_seed(0)
    model = ctcm.build(recipe, backbone={"width": 8, "n_layers": 1, "modes": 4, "emb_dim": 16}, resolution=8).eval()
    path = ctcm.save_checkpoint(tmp_path / "m.pt", model)
    assert ctcm.read_checkpoint(path)["config"]["backbone"]["max_freq"] == 8.0  # a default, stored
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([0.3, 0.9]) * model.schedule.t_max
    for cls in (type(model.backbone), type(model.schedule)):
        _halve_float_defaults(monkeypatch, cls)
    changed = ctcm.build(recipe, backbone={"width": 8, "n_layers": 1, "modes": 4, "emb_dim": 16}, resolution=8)
    changed.load_state_dict(model.state_dict())
    assert not torch.allclose(changed.eval()(x, t), model(x, t))  # the new defaults do make another model
    loaded = ctcm.load_checkpoint(path)
    assert torch.equal(loaded(x, t), model(x, t))
    assert loaded.config == model.config


def test_a_0_2_checkpoint_with_only_the_given_arguments_loads_and_resumes(tmp_path):
    """0.1/0.2 stored only the arguments a user gave: they load with today's defaults but for the WFNO's
    design arguments (its ``legacy_defaults``), and their stored run config compares equal to the resolved
    one of the model they rebuild (so --resume does not see a change)."""
    from ctcm.engine.resume import frozen_changes, stored_train_config
    from ctcm_backbones.wfno import WFNO2d

    model = tiny_model(**WFNO2d.legacy_defaults)  # a 0.2 model: the 0.2 design
    given = {"backbone": {"name": "wfno", **TINY_WFNO}, "schedule": {"name": "geometric"}, "channels": 3,
             "resolution": 8}
    path = ctcm.save_checkpoint(tmp_path / "new.pt", model, extra={"config": {"seed": 0}})
    payload = torch.load(path, weights_only=True)
    payload["config"] = given
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    again = ctcm.load_checkpoint(old)
    assert again.config == model.config
    x, t = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.tensor([0.3, 0.9], dtype=torch.float64)
    assert torch.equal(again(x, t), model.eval()(x, t))
    stored = stored_train_config(ctcm.read_checkpoint(old))
    assert frozen_changes(stored, {"seed": 0, "model": ctcm.config.to_dict(model.config)}) == []


def test_a_0_2_wfno_checkpoint_rebuilds_the_0_2_design_when_the_defaults_change(tmp_path, monkeypatch):
    """The WFNO's design defaults moved in 0.3 (issue 15): a 0.2 checkpoint (only the given arguments stored)
    takes the missing design arguments from ``WFNO2d.legacy_defaults``, not from today's defaults. Shown by
    turning every design default to another value before loading."""
    import inspect

    from ctcm_backbones.wfno import WFNO2d

    legacy = dict(WFNO2d.legacy_defaults)
    torch.manual_seed(0)
    model = ctcm.build("wfno-cifar", backbone={**TINY_WFNO, **legacy}, resolution=8).double().eval()
    path = ctcm.save_checkpoint(tmp_path / "new.pt", model)
    payload = torch.load(path, weights_only=True)
    payload["config"] = {"backbone": {"name": "wfno", **TINY_WFNO}, "schedule": {"name": "geometric"},
                         "channels": 3, "resolution": 8}
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    other = {"positional_grid": True, "time_channels": 4, "film": False, "lift_hidden": 6, "local_kernel": 1,
             "channel_mlp": 1.0, "block_scales": None, "lift_film": True, "mode_taper": 1.0,
             "local3_init": None}  # a 1x1 local path has no a_3 to start elsewhere
    assert set(other) == set(legacy)
    params = list(inspect.signature(WFNO2d.__init__).parameters.values())[1:]
    monkeypatch.setattr(WFNO2d.__init__, "__defaults__",
                        tuple(other.get(p.name, p.default) for p in params if p.default is not p.empty))
    assert ctcm.create_backbone("wfno", **TINY_WFNO).positional_grid  # today's defaults did change
    again = ctcm.load_checkpoint(old)
    assert {k: again.config.backbone.kwargs[k] for k in legacy} == legacy
    x, t = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.tensor([0.3, 0.9], dtype=torch.float64)
    assert torch.equal(again(x, t), model(x, t))


def test_a_0_3_wfno_checkpoint_rebuilds_the_0_3_design_after_the_0_4_default(tmp_path):
    """0.4 moved ``lift_hidden``'s default from ``None`` (a two-layer lifting MLP of 2 x width) to 0 (one 1x1
    convolution). A 0.3 checkpoint stores ``lift_hidden: None``, so it must rebuild the two-layer lifting and
    the same function, while a model built today has the one-layer lifting."""
    from torch import nn

    torch.manual_seed(0)
    old = ctcm.build("wfno-cifar", backbone={**TINY_WFNO, "lift_hidden": None}, resolution=8).double().eval()
    path = ctcm.save_checkpoint(tmp_path / "m.pt", old)
    assert ctcm.read_checkpoint(path)["config"]["backbone"]["lift_hidden"] is None
    again = ctcm.load_checkpoint(path).double().eval()
    lift = again.backbone.lift
    assert isinstance(lift, nn.Sequential) and lift[0].out_channels == 2 * TINY_WFNO["width"]
    assert isinstance(ctcm.build("wfno-cifar", backbone=TINY_WFNO, resolution=8).backbone.lift, nn.Conv2d)
    x, t = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.tensor([0.3, 0.9], dtype=torch.float64)
    assert torch.equal(again(x, t), old(x, t))
