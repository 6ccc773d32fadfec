"""Quality results -> Markdown table, curves of fd8 / FID against images seen, and sample grids."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from .quality_budget import compute_units

METRICS = ("fd8_1step", "fd8_2step", "fid_1step", "fid_2step")


def _value(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _spread(values: list[float]) -> str:
    """mean ± half-range over seeds (one value: the value)."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {(max(values) - min(values)) / 2:.2f}"


def _final(run: dict[str, Any]) -> dict[str, Any]:
    finals = [p for p in run.get("points", []) if p.get("final")]
    return finals[-1] if finals else {}


def by_recipe(results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for run in results["runs"]:
        out.setdefault(run["recipe"], []).append(run)
    return out


def summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per recipe at its final point: the metrics per seed and mean ± half-range."""
    rows = []
    for recipe, runs in by_recipe(results).items():
        finals = {r["seed"]: _final(r) for r in runs}
        row: dict[str, Any] = {"recipe": recipe, "label": results["recipes"].get(recipe, {}).get("label", ""),
                               "images": max((f.get("images", 0) for f in finals.values()), default=0),
                               "seeds": sorted(finals)}
        for m in METRICS:
            row[m] = {k: f.get(m) for k, f in finals.items()}
        settings = results["settings"]
        row["compute"] = compute_units(row["images"], recipe, settings.get("costs"), settings.get("compute_of"))
        walls = [r.get("train_wall_s") for r in runs if r.get("train_wall_s") is not None]
        row["train_wall_s"] = statistics.fmean(walls) if walls else None
        row["errors"] = [f"seed{r['seed']}: {r['error']}" for r in runs if r.get("error")]
        rows.append(row)
    return rows


def markdown(results: dict[str, Any]) -> str:
    s, m = results["settings"], results["machine"]
    ev = results["eval"]
    lines = [f"## Quality `{results['tag']}` ({results['size']} size, {results['timestamp']})", "",
             f"{m.get('cpu')} | device `{m['device']}`{' ' + m['gpu'] if 'gpu' in m else ''} | torch {m['torch']} | "
             f"{s['jobs']} runs side by side, one thread each | total wall {results['wall_s'] / 60:.1f} min", "",
             f"Each run: {s['images']:,} images seen (batch {s['batch']}), {s['points']} evaluation points, EMA "
             f"weights. fd8: 8x8-pooled Frechet distance of {ev['n']:,} samples to {ev['n']:,} held-out images "
             f"({ev['fd8_source']} [{ev['fd8_heldout']}]). "
             + (f"FID@{ev['n_fid']:,}: TF-Inception against the first {ev.get('n_fid_ref', ev['n_fid']):,} "
                f"{ev.get('fid_split', 'train')} images of {ev['fid_ref']}"
                f"{' at every point' if s['fid_every_point'] else ' at the final point'}. "
                if ev["n_fid"] > 0 else "FID: off. ")
             + f"Values: mean ± half-range "
             f"over seeds {s['seeds']}; lower is better. Compare FID only at equal N (small N biases it upward).",
             *_cost_lines(results),
             "", "| recipe | images seen | compute | fd8 1-step | fd8 2-step | FID 1-step | FID 2-step | per seed "
             "(fd8 1/2, FID 1/2) | train wall / run |", "|---|---|---|---|---|---|---|---|---|"]
    for row in summary(results):
        per_seed = "; ".join(f"s{k}: " + "/".join(_value(row[mm].get(k)) for mm in METRICS) for k in row["seeds"])
        wall = "-" if row["train_wall_s"] is None else f"{row['train_wall_s'] / 60:.1f} min"
        compute = "-" if row["compute"] is None else f"{row['compute']:,.0f}"
        lines.append(f"| {row['recipe']} ({row['label']}) | {row['images']:,} | {compute} | "
                     + " | ".join(_spread(list(row[mm].values())) for mm in METRICS) + f" | {per_seed} | {wall} |")
    lines += ["", "### Curves (mean over seeds at each point)", "",
              "| recipe | phase | images seen | fd8 1-step | fd8 2-step | FID 1-step | FID 2-step |",
              "|---|---|---|---|---|---|---|"]
    for recipe, runs in by_recipe(results).items():
        for (phase, images), pts in sorted(_points(runs).items()):
            lines.append(f"| {recipe} | {phase} | {images:,} | "
                         + " | ".join(_spread([p.get(mm) for p in pts]) for mm in METRICS) + " |")
    errors = [r["error"] for r in results["runs"] if r.get("error")]  # each names its recipe and seed
    if errors:
        lines += ["", "Failed runs: " + "; ".join(errors)]
    lines += ["", "Runs: " + ", ".join(f"`{r['dir']}`" for r in results["runs"])]
    return "\n".join(lines) + "\n"


def _cost_lines(results: dict[str, Any]) -> list[str]:
    """The step-cost table and what the compute column means (equal-compute studies only)."""
    s = results["settings"]
    costs, ref = s.get("costs"), s.get("compute_of")
    if not costs or not ref:
        return []
    steps = ", ".join(f"{r} {1e3 * t:.0f} ms ({t / costs['step_s'][ref]:.2f}x)" for r, t in costs["step_s"].items())
    return ["", f"Equal compute: every recipe trains for the {costs['clock']} time of {s['images']:,} images of "
                f"`{ref}`; compute = images seen x step cost / `{ref}`'s step cost, in `{ref}` images. Step costs "
                f"(batch {s['batch']}, one thread, measured {costs['measured']}, load {costs['load']}): {steps}."]


def _points(runs: list[dict[str, Any]]) -> dict[tuple[int, int], list[dict[str, Any]]]:
    out: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for run in runs:
        for p in run.get("points", []):
            out.setdefault((p["phase"], p["images"]), []).append(p)
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    """fd8 and FID (1 and 2 steps) against images seen: one colour per recipe, mean as a thick line with
    markers, each seed as a thin line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (recipe, runs) in enumerate(by_recipe(results).items()):
        c = colours[i % len(colours)]
        for ax, metric in zip(axes.flat, METRICS):
            for run in runs:
                pts = [(p["images"], p[metric]) for p in run.get("points", []) if p.get(metric) is not None]
                if pts:
                    ax.plot(*zip(*pts), color=c, lw=0.7, alpha=0.5)
            mean = [(images, statistics.fmean(v)) for (_, images), pts in sorted(_points(runs).items(),
                                                                                key=lambda kv: kv[0][1])
                    if (v := [p[metric] for p in pts if p.get(metric) is not None])]
            if mean:
                ax.plot(*zip(*mean), color=c, lw=2, marker="o", ms=4,
                        label=f"{recipe} ({results['recipes'].get(recipe, {}).get('label', '')})")
    for ax, metric in zip(axes.flat, METRICS):
        kind, steps = metric.split("_")
        n = results["eval"]["n" if kind == "fd8" else "n_fid"]
        ax.set_title(f"{'fd8' if kind == 'fd8' else 'FID'}@{n:,}, {steps[0]} step{'s' if steps[0] != '1' else ''}")
        ys = [v for line in ax.get_lines() for v in line.get_ydata() if v > 0]
        if ys and max(ys) > 3 * min(ys):  # log only where the curves span a wide range
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("images seen")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"quality {results['size']} | {results['tag']} | thin lines: seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sample_grid(results: dict[str, Any], recipe: str, path: Path) -> Path | None:
    """The final one-step and two-step sample grids of the recipe's first seed, side by side."""
    import numpy as np
    from PIL import Image

    from .quality_eval import grid_path

    runs = sorted((r for r in results["runs"] if r["recipe"] == recipe), key=lambda r: r["seed"])
    final = _final(runs[0]) if runs else {}
    if not final:
        return None
    grids = [grid_path(final["path"], k) for k in (1, 2)]
    if not all(g.is_file() for g in grids):
        return None
    a, b = (np.asarray(Image.open(g).convert("RGB")) for g in grids)
    gap = np.full((a.shape[0], 8, 3), 255, dtype=np.uint8)
    Image.fromarray(np.concatenate([a, gap, b], 1)).save(path)
    return path
