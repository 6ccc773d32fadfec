"""ctcm.errors: user mistakes (UserError) are one line on the CLI; a bug keeps its traceback; the error path
imports nothing of the library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ctcm
from ctcm.errors import FAILED_EXIT, USAGE_EXIT, UserError, UserTypeError, UserValueError, run_cli


def _raising(exc: BaseException):
    def entry(argv: list[str]) -> int:
        raise exc

    return entry


def test_errors_module_imports_nothing_of_ctcm():
    """The bottom layer: no relative import and no ``ctcm`` import anywhere in the module (functions included)."""
    tree = ast.parse((Path(ctcm.__file__).parent / "errors.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and not (node.module or "").startswith("ctcm"), ast.dump(node)
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith("ctcm") for a in node.names), ast.dump(node)


@pytest.mark.parametrize("bug", [TypeError("unsupported operand"), ValueError("math domain error"),
                                 KeyError("w"), RuntimeError("shape mismatch")])
def test_a_bug_keeps_its_traceback(bug, capsys):
    """A plain ValueError is a bug like a TypeError: it propagates (it was one line, exit 2, before)."""
    with pytest.raises(type(bug)):
        run_cli("prog", _raising(bug), [])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("exc, code", [
    (UserValueError("steps must be positive\n(got 0)"), USAGE_EXIT),
    (UserTypeError("a backbone must subclass ctcm.Backbone"), USAGE_EXIT),
    (ctcm.ConfigError("optim.lr must be a finite number"), USAGE_EXIT),
    (FileNotFoundError(2, "No such file or directory", "/nope.yaml"), USAGE_EXIT),
])
def test_a_user_mistake_is_one_line(exc, code, capsys):
    assert run_cli("prog", _raising(exc), []) == code
    err = capsys.readouterr().err
    assert err.startswith("prog: error: ") and len(err.strip().splitlines()) == 1, err


def test_a_diverged_run_exits_1_and_debug_shows_the_traceback(capsys):
    from ctcm.engine import NonFiniteError

    assert run_cli("train", _raising(NonFiniteError("3 consecutive steps")), []) == FAILED_EXIT
    assert "3 consecutive steps" in capsys.readouterr().err
    with pytest.raises(ctcm.ConfigError):
        run_cli("train", _raising(ctcm.ConfigError("bad")), ["--debug"])


def test_every_library_error_is_a_user_error_of_its_builtin_kind():
    from ctcm.atomic import DiskFullError
    from ctcm.data.sources import DataError
    from ctcm.devices import DeviceError
    from ctcm.engine import NonFiniteError
    from ctcm.engine.rundir import RunFolderError
    from ctcm.metrics.network import FeatureNetworkError
    from ctcm.registry import ArgumentError

    kinds = {ctcm.ConfigError: ValueError, DataError: ValueError, DeviceError: ValueError, ArgumentError: TypeError,
             ctcm.RegistryError: KeyError, ctcm.CheckpointError: RuntimeError, RunFolderError: RuntimeError,
             FeatureNetworkError: RuntimeError, NonFiniteError: RuntimeError, DiskFullError: OSError}
    for error, builtin in kinds.items():
        assert issubclass(error, UserError) and issubclass(error, builtin), error


def test_plugin_argument_checks_are_user_errors():
    """The reference plugins' checks of their arguments are user errors (one line on the CLI), still ValueErrors."""
    with pytest.raises(UserValueError, match=r"dropout must be in \[0, 1\)"):
        ctcm.create_backbone("wfno", dropout=1.5)
    with pytest.raises(UserValueError, match="lift_hidden must be 0 .* got -3"):
        ctcm.create_backbone("wfno", lift_hidden=-3)
    with pytest.raises(UserValueError, match="local3_init=0.0 .* needs local_kernel=3"):
        ctcm.create_backbone("wfno", local_kernel=1, local3_init=0.0)
    with pytest.raises(UserValueError, match="unknown weighting"):
        ctcm.create_objective("consistency", weighting="heavy")
    with pytest.raises(UserValueError, match="p_std must be > 0"):
        ctcm.create_time_distribution("lognormal", p_std=0.0)
