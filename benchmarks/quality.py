"""``python -m benchmarks quality``: train named recipes on the same image budget, then fd8 and FID@N per point.

    python -m benchmarks quality --size cpu [--recipes default,ect,scm,denoise-ect] [--seeds 0,1] [--images 64000]
    python -m benchmarks quality --size gpu --data /path/to/cifar10-jpeg75.zip      # one GPU, ~8 minutes
    python -m benchmarks quality --size cpu --dry-run                               # print the commands

Each run (recipe x seed) is ``examples/cifar10/train.py`` in a subprocess (one thread) writing to
``<out>/runs/<size>/<recipe>/seed<k>/`` (a two-phase recipe trains phase 1 in ``.../phase1`` first), then an
evaluation subprocess (:mod:`benchmarks.quality_eval`) that scores every checkpoint's EMA model: fd8 (8x8
pooled pixels, ``n`` samples vs ``n`` held-out test images) for 1 and 2 steps at every point, TF-Inception
FID@N for 1 and 2 steps at the final point (every point with ``--fid-every-point``, on by default for
``--size gpu``) against the first N training images. ``--jobs`` runs go side by side. A run whose final
checkpoint exists is not trained again, and a checkpoint's scores are cached beside it, so a rerun only
adds what is missing. The results go to ``<out>/quality-<size>-<machine>.{json,md,png}`` plus one sample
grid per recipe (``-samples-<recipe>.png``). Recipes: :mod:`benchmarks.quality_recipes`.

Sizes (defaults; every one can be overridden by its flag):

- ``cpu``: 64,000 images per run at batch 32 (2,000 steps of ``tiny.yaml``), 4 points, N = 1,000,
  2 jobs of one thread each (this 2-core machine). At ~60-110 images/s per job a run trains in 15-27 min,
  then FID (Inception on CPU, ~5-10 images/s) of 2 x 1,000 samples takes 4-7 min.
- ``gpu``: 51,200 images per run at batch 256 (200 steps of ``default_cifar.yaml`` with a short warm-up and
  EMA half-life, see ``SIZE_OVERRIDES``), 4 points, N = 5,000, FID at every point, 2 jobs sharing the GPU.
  Estimate for (a)-(d) x 2 seeds on one H100 (not measured; from the recipe's 12.7 GFLOP per training image
  at an assumed 30 TFLOP/s effective, and ~2,500 Inception images/s): training 8 x 51,200 images ~ 3 min,
  FID 8 runs x 4 points x 2 x 5,000 samples + the 5,000-image reference ~ 2.2 min, process start-up and
  sampling ~ 1 min: about 6-7 min. Check the wall times in the JSON after the first run and adjust --images.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as _dt
import json
import shlex
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any
from collections.abc import Callable

from .quality_jobs import eval_spec, prepare_reference, run_one
from .quality_plan import SIZES, Settings, default_data, plan_run, resolve_recipe
from .quality_recipes import DEFAULT_RECIPES, RECIPES


def run_quality(s: Settings, *, dry_run: bool = False, log: Callable[[str], None] | None = None,
                plot_png: bool = True) -> dict[str, Any]:
    """Train and evaluate every (recipe, seed), then write the JSON, Markdown, plot and sample grids."""
    import torch

    from .machine import machine_info, machine_tag

    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    if s.compute_of:
        from .quality_budget import equal_compute_images, step_costs

        measured = list(dict.fromkeys([s.compute_of, *s.recipes]))
        s.costs = step_costs(s.size, measured, s.out, device=s.device, log=log)
        s.images_by_recipe = equal_compute_images(s.images, s.batch, s.costs["step_s"], s.compute_of)
        log("equal compute: " + ", ".join(f"{r} {s.images_by_recipe[r]:,} images" for r in s.recipes))
    plans = [plan_run(s, r, k) for r in s.recipes for k in s.seeds]
    if dry_run:
        for p in plans:
            for ph in p["phases"]:
                print(shlex.join(ph["command"]) + f"  > {ph['log']}")
        return {"plans": plans}
    device = torch.device(s.device)
    if not s.tag:
        s.tag = machine_tag(device) if device.type != "cuda" or torch.cuda.is_available() else "cuda-unknown"
    started = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.perf_counter()
    lock = threading.Lock()

    def say(msg: str) -> None:
        with lock:
            log(f"[quality {time.perf_counter() - t0:6.0f}s] {msg}")

    pool = cf.ThreadPoolExecutor(max_workers=max(1, s.jobs))
    try:
        ref = pool.submit(prepare_reference, s, say)
        futures = [pool.submit(run_one, s, p, ref, say) for p in plans]
        runs = [f.result() for f in futures]
    except KeyboardInterrupt:  # the training subprocesses got the signal too: they checkpoint and stop
        pool.shutdown(wait=True, cancel_futures=True)
        say("interrupted: rerun the same command to continue (finished runs and scores are kept)")
        raise
    pool.shutdown()
    results = {"kind": "quality", "tag": s.tag, "size": s.size, "timestamp": started,
               "wall_s": time.perf_counter() - t0, "machine": machine_info(device),
               "settings": {k: v for k, v in asdict(s).items() if k != "python"},
               "eval": eval_spec(s), "recipes": {r: resolve_recipe(r, s.size) for r in s.recipes},
               "runs": runs}
    write_outputs(results, plot_png=plot_png)
    return results


def output_stem(results: dict[str, Any]) -> Path:
    return Path(results["settings"]["out"]) / f"quality-{results['size']}-{results['tag']}"


def write_outputs(results: dict[str, Any], *, plot_png: bool = True) -> list[Path]:
    """The JSON, then (via the shared report writer) Markdown and PNG, then one sample grid per recipe."""
    from .quality_report import sample_grid
    from .runner import write_report

    stem = output_stem(results)
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path = stem.with_suffix(".json")
    json_path.write_text(json.dumps(results, indent=1, default=str))
    write_report(json_path, results, plot_png=plot_png)
    files = [json_path, stem.with_suffix(".md")] + ([stem.with_suffix(".png")] if plot_png else [])
    for recipe in results["settings"]["recipes"]:
        path = sample_grid(results, recipe, Path(f"{stem}-samples-{recipe}.png"))
        if path is not None:
            files.append(path)
    return files


# -- command line -------------------------------------------------------------------------------------------------
def _per_size(key: str) -> str:
    """A size default for a flag's help, read from :data:`SIZES` (e.g. ``cpu 64000, gpu 51200``)."""
    return ", ".join(f"{size} {d[key]}" for size, d in SIZES.items())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks quality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="cpu")
    p.add_argument("--recipes", default=",".join(DEFAULT_RECIPES), help=f"comma-separated, of {sorted(RECIPES)}")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--images", type=int, help=f"images seen per run ({_per_size('images')})")
    p.add_argument("--batch", type=int, help=f"batch size ({_per_size('batch')})")
    p.add_argument("--points", type=int, help="evaluation points per run, evenly spaced (default 4)")
    p.add_argument("--jobs", type=int, help="runs side by side (default 2)")
    p.add_argument("--n", type=int, help=f"samples for fd8 and FID ({_per_size('n')})")
    p.add_argument("--fid-n", type=int, help="samples for FID if not --n (0: no FID)")
    p.add_argument("--fid-steps", default="1,2", help="step counts FID is computed for (default 1,2; fd8: always both)")
    p.add_argument("--fid-every-point", action=argparse.BooleanOptionalAction, default=None,
                   help="FID at every point, not just the final one (default: on for gpu)")
    p.add_argument("--data", help="training source (default: cifar10 where present, else the offline zip)")
    p.add_argument("--fd8-heldout", default="test",
                   help="fd8 reference: a split of the data, or a number of last training images (default test)")
    p.add_argument("--fid-ref", help="FID reference source (default: the training source; its first N images)")
    p.add_argument("--device", help="cpu or cuda (cpu size: cpu; gpu size: cuda)")
    p.add_argument("--eval-batch", type=int, help="sampling / Inception batch (default 250)")
    p.add_argument("--compute-of", metavar="RECIPE",
                   help="equal compute: RECIPE trains on --images, every other recipe on the same measured CPU "
                        "time (benchmarks/quality_budget.py); the step costs are stored in OUT/costs-<size>.json")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra train.py override for every run (repeatable)")
    p.add_argument("--out", help="results folder (default benchmarks/results); runs go to OUT/runs/")
    p.add_argument("--tag", help="machine tag in the file names (default: benchmarks.machine.machine_tag)")
    p.add_argument("--dry-run", action="store_true", help="print the training commands and stop")
    p.add_argument("--report", metavar="JSON", help="run nothing: rewrite the .md/.png of a quality JSON")
    p.add_argument("--no-plot", action="store_true")
    return p


def settings_from_args(a: argparse.Namespace) -> Settings:
    from .runner import RESULTS_DIR

    d = SIZES[a.size]
    n = a.n if a.n is not None else d["n"]
    data = a.data or default_data()
    heldout: str | int = int(a.fd8_heldout) if str(a.fd8_heldout).isdigit() else a.fd8_heldout
    return Settings(size=a.size, images=a.images or d["images"], batch=a.batch or d["batch"],
                    points=a.points or d["points"], jobs=a.jobs or d["jobs"], n=n,
                    n_fid=a.fid_n if a.fid_n is not None else n,
                    fid_steps=[int(k) for k in a.fid_steps.split(",") if k],
                    fid_every_point=d["fid_every_point"] if a.fid_every_point is None else a.fid_every_point,
                    device=a.device or d["device"], eval_batch=a.eval_batch or d["eval_batch"], data=data,
                    fd8_heldout=heldout, fid_ref=a.fid_ref, recipes=[r for r in a.recipes.split(",") if r],
                    seeds=[int(k) for k in a.seeds.split(",") if k], overrides=list(a.overrides),
                    compute_of=a.compute_of,
                    out=str(Path(a.out) if a.out else RESULTS_DIR), tag=a.tag or "")


def main(argv: list[str] | None = None) -> None:
    p = parser()
    a = p.parse_args(argv)
    if a.report:
        from .runner import write_report

        print(write_report(a.report, plot_png=not a.no_plot))
        return
    steps = a.fid_steps.split(",")
    if not all(k in ("1", "2") for k in steps):
        p.error(f"--fid-steps takes 1, 2 or 1,2 (the sampler's step counts), got {a.fid_steps!r}")
    s = settings_from_args(a)
    try:  # unknown names fail before anything runs, in one line
        for r in s.recipes + ([s.compute_of] if s.compute_of else []):
            resolve_recipe(r, s.size)
    except ValueError as exc:
        p.error(str(exc))
    results = run_quality(s, dry_run=a.dry_run, plot_png=not a.no_plot)
    if a.dry_run:
        return
    from .quality_report import markdown

    print(markdown(results))
    stem = output_stem(results)
    print(f"wrote {stem}.json, {stem}.md{'' if a.no_plot else f', {stem}.png'} and {stem}-samples-<recipe>.png; "
          f"runs under {Path(s.out) / 'runs' / s.size}")
    failed = [f"{r['recipe']} seed{r['seed']}" for r in results["runs"] if r["error"]]
    if failed:
        raise SystemExit(f"failed runs: {', '.join(failed)} (see their logs)")


if __name__ == "__main__":
    main()
