"""Registry: decorator, lazy entry points, duplicate names, unknown names with suggestions."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from torch import nn

import ctcm
from ctcm.registry import BACKBONES, Registry, RegistryError


def test_reference_plugins_are_listed_without_importing_them():
    code = "import sys, ctcm; names = ctcm.list_backbones(); print('ctcm_backbones.wfno' in sys.modules, names)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded, names = out.split(" ", 1)
    assert loaded == "False"
    assert "wfno" in names and "unet" in names


def test_decorator_registers_and_creates():
    reg: Registry = Registry("widget", "ctcm.test-widgets")

    @reg.register("w")
    class Widget:
        def __init__(self, size: int = 1) -> None:
            self.size = size

    assert reg.create("w", size=3).size == 3
    assert reg.names() == ["w"]


def test_duplicate_name_is_an_error():
    reg: Registry = Registry("widget", "ctcm.test-widgets")
    reg.register("w", object)
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("w", int)


def test_builtin_name_cannot_be_taken_by_a_user():
    # refused whether the plugin is still a pending entry point or already loaded by an earlier lookup
    with pytest.raises(RegistryError, match="'wfno' is already (registered|provided).*Choose another name"):
        ctcm.register_backbone("wfno")(nn.Identity)
    ctcm.create_backbone("wfno", width=4, n_layers=1, modes=4)
    with pytest.raises(RegistryError, match="'wfno' is already registered"):
        ctcm.register_backbone("wfno")(nn.Identity)


def test_unknown_name_lists_names_and_closest_match():
    with pytest.raises(RegistryError) as info:
        ctcm.create_backbone("wfn")
    message = str(info.value)
    assert "Did you mean 'wfno'" in message and "unet" in message and "wfno" in message


def test_unknown_kwarg_lists_valid_arguments():
    with pytest.raises(TypeError, match="Valid arguments: .*width"):
        ctcm.create_backbone("wfno", widht=3)


def test_user_backbone_by_decorator_builds_a_model():
    @ctcm.register_backbone("test-identity-net")
    class IdentityNet(ctcm.Backbone):
        resolution_agnostic = True

        def __init__(self, in_channels: int = 3, out_channels: int = 3) -> None:
            super().__init__()
            self.in_channels, self.out_channels = in_channels, out_channels
            self.scale = nn.Parameter(__import__("torch").ones(()))

        def forward(self, x, c_noise):
            return self.scale * x

    try:
        model = ctcm.build("wfno-cifar", backbone="test-identity-net")
        assert isinstance(model.backbone, IdentityNet)
        assert model.sample(2).shape == (2, 3, 32, 32)
    finally:
        BACKBONES.unregister("test-identity-net")


PLUGIN_MODULE = '''
import torch
from torch import nn
import ctcm

class ToyNet(ctcm.Backbone):
    resolution_agnostic = True
    def __init__(self, in_channels=3, out_channels=3, gain=2.0):
        super().__init__()
        self.in_channels, self.out_channels, self.gain = in_channels, out_channels, gain
        self.w = nn.Parameter(torch.ones(()))
    def forward(self, x, c_noise):
        return self.gain * self.w * x

@ctcm.register_schedule("toy-schedule")
class ToySchedule(ctcm.schedules.GeometricSchedule):
    pass
'''


def _install_plugin(tmp_path, entry_points: str) -> dict:
    """Install a plugin distribution into tmp_path the way pip lays it out (module + dist-info)."""
    (tmp_path / "toy_plugin.py").write_text(PLUGIN_MODULE)
    info = tmp_path / "toy_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tmp_path) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_entry_point_plugin_loads_lazily(tmp_path):
    env = _install_plugin(tmp_path, """
        [ctcm.backbones]
        toy-net = toy_plugin:ToyNet
        [ctcm.schedules]
        toy-schedule = toy_plugin
    """)
    code = textwrap.dedent("""
        import sys, ctcm
        assert "toy-net" in ctcm.list_backbones() and "toy_plugin" not in sys.modules
        model = ctcm.build("wfno-cifar", backbone={"name": "toy-net", "gain": 3.0}, schedule="toy-schedule")
        assert "toy_plugin" in sys.modules and model.backbone.gain == 3.0
        assert type(model.schedule).__name__ == "ToySchedule"
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_entry_point_colliding_with_decorator_is_an_error(tmp_path):
    env = _install_plugin(tmp_path, """
        [ctcm.backbones]
        toy-net = toy_plugin:ToyNet
    """)
    code = textwrap.dedent("""
        import ctcm
        from torch import nn
        try:
            ctcm.register_backbone("toy-net")(nn.Identity)
        except ctcm.RegistryError as exc:
            print("refused:", exc)
    """)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "refused:" in result.stdout and "toy_plugin:ToyNet" in result.stdout, result.stderr


def test_broken_plugin_names_itself(tmp_path):
    env = _install_plugin(tmp_path, """
        [ctcm.backbones]
        broken-net = toy_plugin:DoesNotExist
    """)
    code = "import ctcm\ntry:\n    ctcm.create_backbone('broken-net')\nexcept ctcm.RegistryError as e:\n    print(e)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "broken-net" in result.stdout and "toy_plugin:DoesNotExist" in result.stdout, result.stderr


def test_plugin_reusing_a_name_breaks_only_that_name(tmp_path):
    env = _install_plugin(tmp_path, """
        [ctcm.backbones]
        wfno = toy_plugin:ToyNet
    """)
    code = textwrap.dedent("""
        import ctcm
        from ctcm.registry import BACKBONES
        assert BACKBONES.get("unet").__name__ == "UNet"   # other names keep working
        assert "wfno" in ctcm.list_backbones()
        try:
            BACKBONES.get("wfno")
        except ctcm.RegistryError as exc:
            print("refused:", exc)
    """)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout and "two entry points" in result.stdout and "toy_plugin:ToyNet" in result.stdout


KINDS = {"backbone": ("wfno", {"width": 4, "n_layers": 1, "modes": 2}), "schedule": ("trigflow", {}),
         "objective": ("tangent", {}), "time_distribution": ("uniform", {}), "gap": ("ect", {}),
         "recipe": ("unet-cifar", {})}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_has_register_create_and_list(kind):
    """One API shape: ctcm.register_<kind>, ctcm.create_<kind>, ctcm.list_<kind>s, all at the top level; what
    list_* names, create_* builds, and an unknown name is the registry's error."""
    register, create = getattr(ctcm, f"register_{kind}"), getattr(ctcm, f"create_{kind}")
    listed = getattr(ctcm, f"list_{kind}s")()
    name, kwargs = KINDS[kind]
    assert callable(register) and name in listed and listed == sorted(listed)
    assert create(name, **kwargs) is not None
    with pytest.raises(RegistryError, match=f"unknown {kind.replace('_', ' ')} 'no-such-name'"):
        create("no-such-name")


def test_time_distributions_and_gaps_register_and_create_like_the_rest():
    from dataclasses import dataclass

    @dataclass
    class Fixed(ctcm.TimeDistribution):
        value: float = 0.5

        def sample(self, n, schedule, *, generator=None, device=None, dtype=None):
            raise NotImplementedError

    @dataclass
    class NoGap(ctcm.Gap):
        def target_time(self, t, schedule, step, u):
            return t

    ctcm.register_time_distribution("test-fixed", Fixed)
    ctcm.register_gap("test-no-gap", NoGap)
    try:
        assert ctcm.create_time_distribution("test-fixed", value=0.25) == Fixed(0.25)
        assert ctcm.create_gap("test-no-gap") == NoGap()
        assert "test-fixed" in ctcm.list_time_distributions() and "test-no-gap" in ctcm.list_gaps()
        assert set(ctcm.list_gaps()) >= {"uniform", "ect", "ict"}
        with pytest.raises(TypeError, match="Valid arguments: .*value"):
            ctcm.create_time_distribution("test-fixed", vale=1.0)
    finally:
        ctcm.registry.TIME_DISTRIBUTIONS.unregister("test-fixed")
        ctcm.registry.GAPS.unregister("test-no-gap")


def test_recipes_have_the_same_shape_and_old_names_warn():
    recipe = ctcm.create_recipe("wfno-cifar")
    assert isinstance(recipe, ctcm.Recipe) and "wfno-cifar" in ctcm.list_recipes()
    with pytest.warns(DeprecationWarning, match="create_recipe"):
        assert ctcm.get_recipe("wfno-cifar") == recipe
    with pytest.warns(DeprecationWarning, match="list_recipes"):
        assert ctcm.list_models() == ctcm.list_recipes()


def test_the_two_samplers_have_two_names():
    """model.sample(n, steps, seed) draws images by the seed rule; ctcm.multistep_sample(f, noise, times,
    schedule=) is the sampler of given noise. ``ctcm.sample`` (both meanings) is gone."""
    assert not hasattr(ctcm, "sample")
    assert ctcm.multistep_sample is ctcm.sampling.multistep_sample


def test_a_plugin_under_the_old_presets_group_gets_a_warning(tmp_path):
    env = _install_plugin(tmp_path, """
        [ctcm.presets]
        old-recipe = toy_plugin:old_preset
    """)
    code = textwrap.dedent("""
        import warnings, ctcm
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            names = ctcm.list_recipes()
        print(" | ".join(str(w.message) for w in caught if issubclass(w.category, FutureWarning)))
        assert "old-recipe" not in names and "wfno-cifar" in names
        try:
            ctcm.create_recipe("old-recipe")
        except ctcm.RegistryError as exc:
            print("refused:", exc)
    """)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    warned, refused = result.stdout.strip().splitlines()
    assert "old-recipe" in warned and "'ctcm.presets'" in warned and "'ctcm.recipes'" in warned
    assert refused.startswith("refused:") and "ctcm.recipes" in refused
