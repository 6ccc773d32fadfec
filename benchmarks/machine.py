"""What machine a result comes from: a short tag for file names and a description for the report."""

from __future__ import annotations

import os
import platform
import re
import socket

import torch


def _slug(text: str) -> str:
    text = re.sub(r"\((r|tm)\)", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_tag(device: torch.device) -> str:
    """``cuda-<gpu>`` or ``cpu-<cpu model>-<cores>c``, e.g. ``cpu-intel-xeon-processor-2c``."""
    if device.type == "cuda":
        return f"cuda-{_slug(torch.cuda.get_device_name(device))}"
    return f"cpu-{_slug(cpu_model())}-{os.cpu_count()}c"


def machine_info(device: torch.device) -> dict[str, object]:
    """Everything that changes the numbers: device, threads, versions, load at start."""
    info: dict[str, object] = {
        "device": str(device),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    try:
        import neuralop

        info["neuraloperator"] = getattr(neuralop, "__version__", "?")
    except ImportError:  # pragma: no cover - a hard dependency
        pass
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
