"""Set-up and tear-down of a run as one context manager: process group, torch's process-wide settings
(threads, determinism) and the SIGINT/SIGTERM handlers. Whatever happens inside, everything is restored."""

from __future__ import annotations

import os
import signal
from types import FrameType, TracebackType
from typing import Any

import torch

from .distributed import DistInfo, cleanup, init_distributed
from .threads import pick_threads

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunSession:
    """``with RunSession(device, threads, deterministic) as s:`` joins the process group (under torchrun),
    applies ``threads``/``deterministic``, and records SIGINT/SIGTERM in ``s.stop_signal`` instead of dying,
    so the loop can write a checkpoint and stop. On exit all of it is undone, in reverse order."""

    def __init__(self, device: str, threads: int | str | None, deterministic: bool) -> None:
        self.device, self.threads, self.deterministic = device, threads, deterministic
        self.stop_signal: int | None = None
        self.info = DistInfo()
        self._threads = torch.get_num_threads()
        self._det = torch.are_deterministic_algorithms_enabled()
        self._warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        self._handlers: dict[int, Any] = {}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_signal = signum

    def __enter__(self) -> "RunSession":
        self._threads = torch.get_num_threads()
        self._det = torch.are_deterministic_algorithms_enabled()
        self._warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        n = pick_threads(self.threads)
        if n:
            torch.set_num_threads(n)
        if self.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        self._handlers = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        try:
            self.info = init_distributed(self.device)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        cleanup(self.info)
        for s, handler in self._handlers.items():
            signal.signal(s, handler)
        self._handlers = {}
        torch.set_num_threads(self._threads)
        torch.use_deterministic_algorithms(self._det, warn_only=self._warn_only)
