"""The README's Python blocks run as written (in a scratch folder)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_blocks_run(tmp_path, monkeypatch, one_thread):
    blocks = python_blocks(README.read_text())
    assert blocks, "the README has no Python block"
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})
    assert (tmp_path / "ckpt.pt").is_file()
