"""``python -m benchmarks quality-merge A.json B.json ... --out DIR --tag T``: one report of a study run in pieces.

A study often runs across sessions: seeds 0 and 1 first, seed 2 later, a peer in a third invocation. Each
``python -m benchmarks quality`` invocation writes its own JSON; this joins them into one results JSON (and
its Markdown, curves and sample grids) whose table has every run, so mean +- half-range are over all seeds.

Joining is only honest under one protocol, so every part must agree on what makes numbers comparable (the
keys of :data:`PROTOCOL` and the evaluation block: budget, batch, points, samples, FID reference, held-out
set, overrides, the equal-compute reference and its stored step costs); a difference is one error naming the
key and both values. A (recipe, seed) present in two parts is an error too (it would count one run twice).
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

PROTOCOL = ("size", "images", "batch", "points", "n", "n_fid", "fid_steps", "fid_every_point", "device", "data",
            "fd8_heldout", "fid_ref", "overrides", "compute_of", "costs")


def _ordered_union(lists: list[list[Any]]) -> list[Any]:
    out: list[Any] = []
    for items in lists:
        out += [x for x in items if x not in out]
    return out


def merge(parts: list[dict[str, Any]], *, names: list[str] | None = None) -> dict[str, Any]:
    """The results of ``parts`` (quality JSONs) as one; raises ``ValueError`` (one line) if they cannot join."""
    if len(parts) < 2:
        raise ValueError("quality-merge needs two results JSONs or more")
    names = names or [f"part {i + 1}" for i in range(len(parts))]
    for part, name in zip(parts, names):
        if part.get("kind") != "quality":
            raise ValueError(f"{name} is not a `python -m benchmarks quality` results JSON")
    first, first_name = parts[0], names[0]
    for part, name in zip(parts[1:], names[1:]):
        for key in PROTOCOL:
            a, b = first["settings"].get(key), part["settings"].get(key)
            if a != b:
                raise ValueError(f"{name} has {key}={b!r} but {first_name} has {key}={a!r}: "
                                 "only runs of one protocol can share a table")
        if part["eval"] != first["eval"]:
            raise ValueError(f"{name} was evaluated differently from {first_name} ({part['eval']} vs "
                             f"{first['eval']}): only runs of one protocol can share a table")
    seen: dict[tuple[str, int], str] = {}
    for part, name in zip(parts, names):
        for run in part["runs"]:
            key = (run["recipe"], run["seed"])
            if key in seen:
                raise ValueError(f"{run['recipe']} seed {run['seed']} is in both {seen[key]} and {name}: "
                                 "drop one of the two JSONs")
            seen[key] = name
    merged = copy.deepcopy(first)
    merged["runs"] = [run for part in parts for run in part["runs"]]
    merged["recipes"] = {k: v for part in parts for k, v in part["recipes"].items()}
    merged["wall_s"] = sum(part["wall_s"] for part in parts)
    merged["timestamp"] = max(part["timestamp"] for part in parts)
    merged["merged_from"] = [{"file": name, "tag": part["tag"], "timestamp": part["timestamp"]}
                             for part, name in zip(parts, names)]
    s = merged["settings"]
    s["recipes"] = _ordered_union([part["settings"]["recipes"] for part in parts])
    s["seeds"] = sorted(_ordered_union([part["settings"]["seeds"] for part in parts]))
    budgets = [part["settings"].get("images_by_recipe") or {} for part in parts]
    s["images_by_recipe"] = {k: v for budget in budgets for k, v in budget.items()}
    return merged


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks quality-merge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json", nargs="+", help="results JSONs of `python -m benchmarks quality` (two or more)")
    p.add_argument("--out", required=True, help="folder of the merged report")
    p.add_argument("--tag", required=True, help="its tag: the files are OUT/quality-<size>-<tag>.*")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    a = p.parse_args(argv)
    parts = []
    for path in a.json:
        try:
            parts.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            p.error(f"cannot read {path}: {exc}")
    try:
        merged = merge(parts, names=a.json)
    except ValueError as exc:
        p.error(str(exc))
    merged["tag"] = merged["settings"]["tag"] = a.tag
    merged["settings"]["out"] = a.out
    from .quality import output_stem, write_outputs
    from .quality_report import markdown

    stem = output_stem(merged)
    if stem.with_suffix(".json").exists():
        p.error(f"{stem}.json exists: choose another --tag or --out (a merge never overwrites a report)")
    files = write_outputs(merged, plot_png=not a.no_plot)
    print(markdown(merged))
    print("wrote " + ", ".join(map(str, files)))
