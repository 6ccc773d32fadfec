"""``threads: auto`` never asks for more threads than there are idle cores (at least one)."""

from __future__ import annotations

import os

import pytest

from ctcm.engine.threads import pick_threads
from test_engine import small_config


def test_auto_threads_follow_the_load(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.0, 0.0))
    assert pick_threads("auto") == 2          # idle 2-core machine: both cores
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 0.0, 0.0))
    assert pick_threads("auto") == 1          # one busy job beside us: one thread, never torch's default 2
    monkeypatch.setattr(os, "getloadavg", lambda: (7.0, 0.0, 0.0))
    assert pick_threads("auto") == 1
    assert pick_threads(None) is None and pick_threads(3) == 3


def test_demo_config_uses_auto_threads_and_bad_values_are_errors():
    from ctcm.config import ConfigError
    from ctcm.engine import load_train_config
    from test_engine import TINY

    assert load_train_config(TINY).threads == "auto"
    with pytest.raises(ConfigError, match="threads"):
        small_config("threads=many")
