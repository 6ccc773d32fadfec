"""``python -m benchmarks --gpu-check --out DIR``: every target of the GPU-speed issue in one short run.

Measures on one device, side by side: wfno-cifar forward / JVP / training steps in fp32 and bf16
autocast (batch 64), fno-cifar under bf16 autocast, and the trainer's throughput for the default recipe
at batch 512 (bf16 eager, bf16 compiled, fp32 eager). Writes ``gpu-check.json`` and ``gpu-check.md`` under
DIR (2 files) and prints the Markdown. Sized for 8 minutes of one H100 (compilation included); items
that would start after ``budget_s`` are reported as skipped. ``--smoke`` (with ``--device cpu``) runs the
same code on tiny models in about a minute, compiling with the ``aot_eager`` backend (the test suite does).
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

import torch

from .machine import machine_info, machine_tag
from .models import bench_recipe
from .settings import GPU_TRAIN_GRID, SMOKE_BACKBONES, SMOKE_TRAIN, Settings
from .throughput import run_throughput

BF16_SPEEDUP = 1.5  # fp32 forward time / bf16 forward time, wfno-cifar at batch 64
JVP_RATIO = 2.0  # JVP (no grad) / forward
STEP_RATIO = 1.5  # (consistency + tangent) step / consistency-only step
THROUGHPUT = 6000.0  # images/s, default recipe, batch 512, bf16


def _plan(smoke: bool) -> tuple[Settings, list[tuple[int, str, bool | str]], list[str]]:
    """(model-section settings, throughput grid, config overrides) of a full or smoke check."""
    if smoke:
        settings = Settings("gpu-check-smoke", [], model_batch=2, warmup=0, repeats=1, model_repeats=1, matmul_n=64,
                            backbone_overrides=SMOKE_BACKBONES, model_resolution=16)
        return settings, [(4, "bf16", False), (4, "bf16", "aot_eager")], SMOKE_TRAIN
    settings = Settings("gpu-check", [], model_batch=64, warmup=3, repeats=10, model_repeats=10, matmul_n=4096)
    return settings, GPU_TRAIN_GRID, []


def run_gpu_check(device: str | None = None, out_dir: str | Path = ".", *, smoke: bool = False,
                  budget_s: float = 420.0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure, judge every target, write ``gpu-check.json`` / ``.md`` under ``out_dir``; returns the results."""
    start = time.perf_counter()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    settings, grid, overrides = _plan(smoke)
    settings.clock = "wall"
    results: dict[str, Any] = {
        "tag": machine_tag(dev), "mode": settings.mode, "machine": machine_info(dev),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "models": [], "train": [], "skipped": [],
    }
    for recipe, precision in (("wfno-cifar", "fp32"), ("wfno-cifar", "bf16"), ("fno-cifar", "bf16")):
        log(f"[gpu-check] {recipe} {precision} batch={settings.model_batch}")
        results["models"].append(bench_recipe(recipe, precision, settings, dev))
    for item in grid:
        if time.perf_counter() - start > budget_s:
            results["skipped"].append(f"train batch={item[0]} {item[1]} compile={item[2]}: time budget")
            continue
        results["train"] += run_throughput([item], dev, steps=3 if smoke else 15, warmup=1 if smoke else 3,
                                           overrides=overrides, log=log)
    results["elapsed_s"] = time.perf_counter() - start
    results["targets"] = targets(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu-check.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "gpu-check.md").write_text(markdown(results))
    log(f"wrote {out / 'gpu-check.json'} and .md")
    return results


def _median(row: dict[str, Any], key: str) -> float | None:
    return row.get("times", {}).get(key, {}).get("median_s")


def _target(name: str, value: float | None, met: bool, fmt: str = "{:.2f}x") -> dict[str, Any]:
    return {"target": name, "value": "not measured" if value is None else fmt.format(value),
            "met": bool(value is not None and met)}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the issue with its measured value and met / not met."""
    rows = {(r["recipe"], r["precision"]): r for r in results["models"]}
    fp32, bf16 = rows.get(("wfno-cifar", "fp32"), {}), rows.get(("wfno-cifar", "bf16"), {})
    out = []
    f32, b16 = _median(fp32, "forward"), _median(bf16, "forward")
    speedup = f32 / b16 if f32 and b16 else None
    out.append(_target(f"wfno-cifar forward: bf16 >= {BF16_SPEEDUP}x faster than fp32", speedup,
                       speedup is not None and speedup >= BF16_SPEEDUP))
    for name, row in (("fp32", fp32), ("bf16", bf16)):
        jvp = row.get("ratio_to_forward", {}).get("jvp_nograd")
        out.append(_target(f"wfno-cifar JVP (no grad) / forward <= {JVP_RATIO}x, {name}", jvp,
                           jvp is not None and jvp <= JVP_RATIO))
        step = row.get("tangent_step_ratio")
        out.append(_target(f"wfno-cifar step with tangent / consistency-only <= {STEP_RATIO}x, {name}", step,
                           step is not None and step <= STEP_RATIO))
    train = [r for r in results["train"] if r.get("error") is None]
    bf16_rates = [r["images_per_s"] for r in train if r["precision"] == "bf16"]
    best = max(bf16_rates) if bf16_rates else None
    batch = results["train"][0]["batch"] if results["train"] else "-"
    out.append(_target(f"default recipe throughput >= {THROUGHPUT:.0f} img/s (bf16, batch {batch}, best of "
                       f"compile on/off)", best, best is not None and best >= THROUGHPUT, "{:.0f} img/s"))
    eager = next((r for r in results["train"] if r["precision"] == "bf16" and r["compile"] is False), {})
    compiled = next((r for r in results["train"] if r["precision"] == "bf16" and r["compile"] is not False), {})
    gain = (compiled["images_per_s"] / eager["images_per_s"]
            if compiled.get("images_per_s") and eager.get("images_per_s") else None)
    out.append(_target("compile works (no error) and is faster than eager (bf16 throughput ratio)", gain,
                       gain is not None and gain > 1.0))
    if compiled.get("error"):
        out[-1]["value"] = compiled["error"][:120]
    fno = rows.get(("fno-cifar", "bf16"), {})
    errors = fno.get("errors", {"all": "not run"})
    out.append({"target": "fno-cifar runs under bf16 autocast (forward, JVP, steps)",
                "value": "ok" if not errors else "; ".join(f"{k}: {v}" for k, v in errors.items())[:160],
                "met": not errors})
    return out


def markdown(results: dict[str, Any]) -> str:
    """The check as Markdown: machine, the targets table, the raw times."""
    m = results["machine"]
    lines = [f"## GPU check `{results['tag']}` ({results['mode']}, {results['timestamp']}, "
             f"{results.get('elapsed_s', 0):.0f} s)", "",
             f"device `{m['device']}`{' ' + m['gpu'] if 'gpu' in m else ''} | torch {m['torch']} | "
             f"load at start {m.get('load_average_at_start')}", "",
             "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['value']} | {'yes' if t['met'] else '**no**'} |" for t in results["targets"]]
    lines += ["", "| recipe | prec | B | forward ms | JVP no grad ms | step cons. ms | step cons.+tangent ms | "
                  "errors |", "|---|---|---|---|---|---|---|---|"]
    for r in results["models"]:
        ms = {k: "-" if _median(r, k) is None else f"{_median(r, k) * 1e3:.1f}"
              for k in ("forward", "jvp_nograd", "step_consistency", "step_consistency_tangent")}
        lines.append(f"| {r['recipe']} | {r['precision']} | {r['batch']} | {ms['forward']} | {ms['jvp_nograd']} | "
                     f"{ms['step_consistency']} | {ms['step_consistency_tangent']} | {len(r['errors'])} |")
    lines += ["", "| train batch | prec | compile | img/s | step ms | first step s | error |",
              "|---|---|---|---|---|---|---|"]
    for r in results["train"]:
        rate = f"{r['images_per_s']:.0f}" if r.get("images_per_s") else "-"
        step = f"{r['step_s'] * 1e3:.1f}" if r.get("step_s") else "-"
        first = f"{r['first_step_s']:.1f}" if r.get("first_step_s") else "-"
        lines.append(f"| {r['batch']} | {r['precision']} | {r['compile']} | {rate} | {step} | {first} | "
                     f"{r.get('error') or ''} |")
    lines += [f"- skipped: {s}" for s in results["skipped"]]
    return "\n".join(lines) + "\n"
