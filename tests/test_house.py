"""The house: one source for the version, lint over the whole repository with no module excluded."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import ctcm

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_has_one_source():
    """pyproject.toml's version is ctcm.__version__ (read from the installed metadata) and heads the changelog."""
    declared = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert ctcm.__version__ == importlib.metadata.version("ctcm") == declared
    first = re.search(r"^## (\S+)", (ROOT / "docs" / "changelog.md").read_text(), re.M).group(1)
    assert first == declared
    assert declared not in (ROOT / "ctcm" / "__init__.py").read_text()  # no second copy of the number


def test_lint_covers_everything():
    """mypy checks every module of ctcm/ (no ignore_errors), ruff has no per-file exceptions, and CI's
    ``make lint`` runs ruff on the whole repository."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "ignore_errors" not in pyproject and "per-file-ignores" not in pyproject
    lint = re.search(r"^lint:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert "ruff check .\n" in lint and "mypy" in lint
    assert "make lint" in (ROOT / ".ci" / "run").read_text()


def test_equations_are_numbered_in_order_and_every_citation_exists():
    """docs/maths.md numbers its equations in the order they appear, and every ``Eq. N`` the code cites is there."""
    maths = (ROOT / "docs" / "maths.md").read_text()
    labels = re.findall(r"^\*\*\((\d+)([a-z]?)\)", maths, re.M)
    numbers = [int(n) for n, _ in labels]
    assert numbers == sorted(numbers) and sorted(set(numbers)) == list(range(1, max(numbers) + 1)), numbers
    cited = set()
    for folder in ("ctcm", "backbones", "objectives"):
        for path in (ROOT / folder).rglob("*.py"):
            for first, last in re.findall(r"Eq\. (\d+)(?:-(\d+))?", path.read_text()):
                cited.update(range(int(first), int(last or first) + 1))
    assert cited and cited <= set(numbers), sorted(cited - set(numbers))
