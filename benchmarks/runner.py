"""One run: measure every section, then write ``<out>/<tag>.json``, ``.md`` and ``.png``."""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path
from typing import Any
from collections.abc import Callable

import torch

from .fft_layers import run_fft_layers
from .machine import machine_info, machine_tag
from .meanflow_cost import run_meanflow
from .models import run_models
from .report import markdown, plot
from .settings import settings_for
from .throughput import run_throughput
from .timing import matmul_flops

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SECTIONS = ("fft", "models", "train", "meanflow")


def run(mode: str = "quick", *, device: str | None = None, out_dir: str | Path | None = None,
        tag: str | None = None, sections: tuple[str, ...] = SECTIONS, plot_png: bool = True,
        clock: str | None = None, recipes: tuple[str, ...] | None = None,
        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark and write its files; returns the results dict.

    Args:
        mode: ``smoke`` (tiny sizes, seconds), ``quick`` or ``full`` (see :mod:`benchmarks.settings`).
        device: ``cpu`` / ``cuda`` (default: cuda when available).
        out_dir: where the files go (default ``benchmarks/results``).
        tag: file stem (default: :func:`machine_tag`).
        sections: any of ``fft``, ``models``, ``train`` (the trainer's throughput, :mod:`benchmarks.throughput`)
            and ``meanflow`` (a MeanFlow step vs a flow-matching step, :mod:`benchmarks.meanflow_cost`).
        clock: ``wall`` or ``cpu`` (default: process CPU time on a CPU device, wall time on GPU).
        recipes: the models section's recipes (default: all of :data:`benchmarks.settings.RECIPES`).
    """
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    bad = set(sections) - set(SECTIONS)
    if bad:
        raise ValueError(f"unknown section(s) {sorted(bad)}; choose from {SECTIONS}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    settings = settings_for(mode, dev.type)
    settings.clock = clock or ("cpu" if dev.type == "cpu" else "wall")
    settings.recipes = recipes or settings.recipes
    tag = tag or machine_tag(dev)
    results: dict[str, Any] = {
        "tag": tag, "mode": mode, "timestamp": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(dev), "settings": {k: v for k, v in vars(settings).items()},
        "matmul": {p: matmul_flops(dev, p, settings.matmul_n, warmup=settings.warmup, repeats=settings.repeats,
                                   clock=settings.clock) for p in settings.precisions},
        "fft_layers": [], "models": [], "train": [], "meanflow": [],
    }
    if "fft" in sections:
        results["fft_layers"] = run_fft_layers(settings, dev, results["matmul"], log)
    if "models" in sections:
        results["models"] = run_models(settings, dev, log)
    if "train" in sections:
        results["train"] = run_throughput(settings.train_grid, dev, steps=settings.model_repeats,
                                          warmup=settings.warmup, overrides=settings.train_overrides,
                                          clock=settings.clock, log=log)
    if "meanflow" in sections:
        results["meanflow"] = run_meanflow(settings, dev, log)
    # the reference rate again at the end: a large change means the machine's load moved during the run
    results["matmul_end"] = {p: matmul_flops(dev, p, settings.matmul_n, warmup=settings.warmup,
                                             repeats=settings.repeats, clock=settings.clock)
                             for p in settings.precisions}
    out = Path(out_dir) if out_dir is not None else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tag}.json").write_text(json.dumps(results, indent=1, default=str))
    write_report(out / f"{tag}.json", results, plot_png=plot_png)
    log(f"wrote {out / tag}.json, .md{', .png' if plot_png else ''}")
    return results


def write_report(json_path: str | Path, results: dict[str, Any] | None = None, *, plot_png: bool = True) -> str:
    """Write the Markdown report (and plot) beside a results JSON (either benchmark); returns the Markdown."""
    json_path = Path(json_path)
    results = results if results is not None else json.loads(json_path.read_text())
    if results.get("kind") == "quality":  # ``python -m benchmarks quality``
        from . import quality_report

        render, draw = quality_report.markdown, quality_report.plot
    else:
        render, draw = markdown, plot
    text = render(results)
    json_path.with_suffix(".md").write_text(text)
    if plot_png:
        draw(results, json_path.with_suffix(".png"))
    return text
