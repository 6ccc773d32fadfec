"""Results -> Markdown tables, target checks and a PNG plot."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from .meanflow_cost import TARGET_MEANFLOW_STEP

TARGET_JVP = 2.0  # JVP (no grad) / forward, wfno-cifar
TARGET_TANGENT_STEP = 1.5  # (consistency + tangent) step / consistency step, wfno-cifar


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def _x(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and whether it is met (fp32 rows)."""
    models = {r["recipe"]: r for r in results["models"] if r["precision"] == "fp32"}
    out: list[dict[str, Any]] = []
    w = models.get("wfno-cifar", {})
    jvp = w.get("ratio_to_forward", {}).get("jvp_nograd")
    out.append({"target": f"wfno-cifar JVP (no grad) <= {TARGET_JVP}x forward", "value": _x(jvp),
                "met": jvp is not None and jvp <= TARGET_JVP})
    step = w.get("tangent_step_ratio")
    out.append({"target": f"wfno-cifar step with tangent <= {TARGET_TANGENT_STEP}x consistency-only",
                "value": _x(step), "met": step is not None and step <= TARGET_TANGENT_STEP})
    for kind in ("fwd_s", "fwd_bwd_s"):
        ratios = spectral_ratios(results, kind)
        label = "forward" if kind == "fwd_s" else "forward+backward"
        if ratios:
            faster = sum(r <= 1.0 for r in ratios)
            out.append({"target": f"ctcm spectral {label} <= neuralop SpectralConv (time ratio)",
                        "value": f"median {statistics.median(ratios):.2f}x, <=1 in {faster}/{len(ratios)} sizes",
                        "met": statistics.median(ratios) <= 1.0})
    mf = next((r for r in results.get("meanflow", []) if r["precision"] == "fp32"), {})
    ratio = mf.get("ratio_to_flow_matching", {}).get("step_meanflow")
    out.append({"target": f"MeanFlow step on the WFNO <= {TARGET_MEANFLOW_STEP}x a flow-matching step",
                "value": _x(ratio), "met": ratio is not None and ratio <= TARGET_MEANFLOW_STEP})
    u = models.get("unet-cifar", {})
    tw, tu = (m.get("times", {}).get("step_consistency_tangent", {}).get("median_s") for m in (w, u))
    out.append({"target": "wfno-cifar training step <= unet-cifar (matched params)",
                "value": "-" if not (tw and tu) else f"{tw / tu:.2f}x unet's time",
                "met": bool(tw and tu and tw <= tu)})
    return out


def spectral_ratios(results: dict[str, Any], kind: str = "fwd_s", precision: str = "fp32") -> list[float]:
    """ctcm / neuralop time per size (below 1: ours faster)."""
    by_size: dict[tuple, dict[str, float]] = {}
    for r in results["fft_layers"]:
        if r["precision"] == precision and r.get(kind):
            by_size.setdefault((r["width"], r["modes"], r["res"], r["batch"]), {})[r["layer"]] = r[kind]
    return [v["ctcm"] / v["neuralop"] for v in by_size.values() if "ctcm" in v and "neuralop" in v]


def markdown(results: dict[str, Any]) -> str:
    """The full report: machine, targets, and the sections' tables."""
    m = results["machine"]
    lines = [f"## `{results['tag']}` ({results['mode']}, {results['timestamp']})", "",
             f"{m.get('cpu')} | device `{m['device']}`{' ' + m['gpu'] if 'gpu' in m else ''} | "
             f"torch {m['torch']} with {m['torch_threads']} threads | neuraloperator {m.get('neuraloperator')} | "
             f"load average at start {m.get('load_average_at_start')} | clock: "
             f"**{results['settings'].get('clock', 'wall')}** time", ""]
    mm = ", ".join(f"{p}: {v['flops_per_s'] / 1e9:.1f} GFLOP/s (n={v['n']}; at the end "
                   f"{results.get('matmul_end', {}).get(p, v)['flops_per_s'] / 1e9:.1f})"
                   for p, v in results["matmul"].items())
    lines += [f"Reference matrix product: {mm}.", "", "### Targets", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['value']} | {'yes' if t['met'] else '**no**'} |" for t in targets(results)]

    lines += ["", "### 1. FFT layers (median ms; GFLOP/s and % of the matrix product are for the forward)", "",
              "| prec | W | modes | R | B | layer | fwd ms | fwd+bwd ms | saved MB | GFLOP/s | % matmul "
              "| max diff vs neuralop |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["fft_layers"]:
        if r.get("error") and "fwd_s" not in r:
            lines.append(f"| {r['precision']} | {r['width']} | {r['modes']} | {r['res']} | {r['batch']} | "
                         f"{r['layer']} | error: {r['error'][:60]} | | | | | |")
            continue
        diff = r.get("max_abs_diff_vs_neuralop")
        lines.append(
            f"| {r['precision']} | {r['width']} | {r['modes']} | {r['res']} | {r['batch']} | {r['layer']} | "
            f"{_ms(r.get('fwd_s'))} | {_ms(r.get('fwd_bwd_s'))} | {r.get('saved_mb', 0):.1f} | "
            f"{r.get('fwd_flops_per_s', 0) / 1e9:.2f} | {100 * r.get('fwd_frac_matmul', 0):.1f} | "
            f"{'-' if diff is None else f'{diff:.1e}'} |")

    lines += ["", "### 2. JVP cost (ratio to a no-grad forward) and training step", "",
              "| prec | recipe | params | B | forward ms | fwd (grad) | fwd at 2B | JVP no grad | total_derivative | "
              "JVP grad | finite diff (2 fwd) | step cons. ms | step cons.+tangent ms | tangent step ratio |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["models"]:
        q, t = r.get("ratio_to_forward", {}), r["times"]
        med = {k: v.get("median_s") for k, v in t.items()}.get
        lines.append(
            f"| {r['precision']} | {r['recipe']} | {r['params'] / 1e6:.2f}M | {r['batch']} | {_ms(med('forward'))} | "
            f"{_x(q.get('forward_grad'))} | {_x(q.get('forward_double_batch'))} | {_x(q.get('jvp_nograd'))} | "
            f"{_x(q.get('total_derivative'))} | "
            f"{_x(q.get('jvp_grad'))} | {_x(q.get('finite_difference'))} | {_ms(med('step_consistency'))} | "
            f"{_ms(med('step_consistency_tangent'))} | {_x(r.get('tangent_step_ratio'))} |")

    lines += ["", "### 3. Throughput (images/s; training = consistency + 0.1 tangent step)", "",
              "| prec | recipe | params | B | train img/s | train (consistency only) img/s | one-step sampling img/s | "
              "train vs unet-cifar |", "|---|---|---|---|---|---|---|---|"]
    unet = {r["precision"]: r.get("train_images_per_s") for r in results["models"] if r["recipe"] == "unet-cifar"}
    for r in results["models"]:
        base, ips = unet.get(r["precision"]), r.get("train_images_per_s")
        rel = _x(ips / base) if ips and base else "-"
        lines.append(f"| {r['precision']} | {r['recipe']} | {r['params'] / 1e6:.2f}M | {r['batch']} | "
                     f"{ips or 0:.2f} | {r.get('train_consistency_images_per_s', 0):.2f} | "
                     f"{r.get('sample_images_per_s', 0):.2f} | {rel} |")
    if results.get("train"):
        lines += ["", "### 4. Trainer throughput, default recipe (`Trainer._train_step` on a device batch)", "",
                  "| B | prec | compile | img/s | step ms | first step s | error |", "|---|---|---|---|---|---|---|"]
        for r in results["train"]:
            lines.append(f"| {r['batch']} | {r['precision']} | {r['compile']} | {r.get('images_per_s', 0):.1f} | "
                         f"{_ms(r.get('step_s'))} | {r.get('first_step_s', 0):.1f} | {r.get('error') or ''} |")
    if results.get("meanflow"):
        lines += ["", "### 5. MeanFlow step on the WFNO (`wfno-cifar-meanflow`; ratio to a flow-matching step)", "",
                  "| prec | B | flow matching ms | MeanFlow ms (ctcm) | ratio | MeanFlow ms (torch.func.jvp) | ratio |",
                  "|---|---|---|---|---|---|---|"]
        for r in results["meanflow"]:
            t, q = r["times"], r["ratio_to_flow_matching"]
            lines.append(f"| {r['precision']} | {r['batch']} | {_ms(t['step_flow_matching']['median_s'])} | "
                         f"{_ms(t['step_meanflow']['median_s'])} | {_x(q['step_meanflow'])} | "
                         f"{_ms(t['step_meanflow_func_jvp']['median_s'])} | {_x(q['step_meanflow_func_jvp'])} |")
    errors = [(r["recipe"], r["precision"], k, v) for r in results["models"] for k, v in r["errors"].items()]
    if errors:
        lines += ["", "Failed measurements: " + "; ".join(f"{p} {q} {k}: {v}" for p, q, k, v in errors)]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """Left: fwd+bwd time of each layer per size (fp32). Right: JVP / step ratios per recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    rows = [r for r in results["fft_layers"] if r["precision"] == "fp32" and r.get("fwd_bwd_s")]
    sizes = sorted({(r["width"], r["modes"], r["res"], r["batch"]) for r in rows})
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    bar = 0.8 / max(1, len(layers))
    for i, layer in enumerate(layers):
        vals = {(r["width"], r["modes"], r["res"], r["batch"]): r["fwd_bwd_s"] * 1e3
                for r in rows if r["layer"] == layer}
        ax1.bar([j + i * bar for j in range(len(sizes))], [vals.get(s, 0) for s in sizes], bar, label=layer)
    ax1.set_xticks([j + 0.4 - bar / 2 for j in range(len(sizes))])
    ax1.set_xticklabels([f"W{w} m{m}\nR{r} B{b}" for w, m, r, b in sizes], fontsize=7)
    ax1.set_yscale("log")
    ax1.set_ylabel("forward+backward ms (median, log)")
    ax1.set_title("1. FFT layers vs convolutions")
    ax1.legend(fontsize=7)

    models = [r for r in results["models"] if r["precision"] == "fp32"]
    keys = ["jvp_nograd", "jvp_grad", "finite_difference", "step_consistency", "step_consistency_tangent"]
    bar = 0.8 / max(1, len(models))
    for i, r in enumerate(models):
        vals = [r.get("ratio_to_forward", {}).get(k) or
                r["times"].get(k, {}).get("median_s", 0) / r["times"].get("forward", {}).get("median_s", 1)
                for k in keys]
        ax2.bar([j + i * bar for j in range(len(keys))], vals, bar, label=f"{r['recipe']} ({r['params'] / 1e6:.1f}M)")
    ax2.axhline(TARGET_JVP, color="grey", ls="--", lw=0.8)
    ax2.set_xticks([j + 0.4 - bar / 2 for j in range(len(keys))])
    ax2.set_xticklabels(["JVP\nno grad", "JVP\ngrad", "finite diff\n(2 fwd)", "step\ncons.", "step\ncons.+tan."],
                        fontsize=8)
    ax2.set_ylabel("time / no-grad forward")
    ax2.set_title(f"2. JVP and training step cost (batch {models[0]['batch'] if models else '?'})")
    ax2.legend(fontsize=7)
    fig.suptitle(f"{results['tag']} ({results['mode']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
