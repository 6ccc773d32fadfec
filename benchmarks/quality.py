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
import copy
import datetime as _dt
import json
import os
import shlex
import subprocess
import re
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

from .quality_recipes import DEFAULT_CONFIGS, DEFAULT_RECIPES, DESIGN_OBJECTIVE, PEER_BACKBONES, RECIPES

REPO = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO / "examples" / "cifar10" / "train.py"
OFFLINE_ZIP = Path("/work/shared/data/cifar10/cifar10-jpeg75.zip")
RUN_RECORD = "quality_run.json"

# what a size adds to every recipe (before the recipe's own overrides): the short GPU run needs a short
# warm-up and an EMA that forgets the first steps
SIZE_OVERRIDES = {
    "cpu": [],
    "gpu": ["optim.warmup_steps=20", "ema.half_life_images=10000", "data.num_workers=2", "sample_every=0"],
}
SIZES: dict[str, dict[str, Any]] = {
    "cpu": dict(images=64_000, batch=32, points=4, jobs=2, n=1000, fid_every_point=False, device="cpu",
                eval_batch=250),
    "gpu": dict(images=51_200, batch=256, points=4, jobs=2, n=5000, fid_every_point=True, device="cuda",
                eval_batch=250),
}


@dataclass
class Settings:
    size: str = "cpu"
    images: int = 64_000
    batch: int = 32
    points: int = 4
    jobs: int = 2
    n: int = 1000
    n_fid: int = 1000
    fid_steps: list[int] = field(default_factory=lambda: [1, 2])  # the step counts FID is computed for
    fid_every_point: bool = False
    device: str = "cpu"
    eval_batch: int = 250
    data: str | None = None  # training source (None: the config's)
    fd8_heldout: str | int = "test"
    fid_ref: str | None = None  # FID reference source (None: the training source)
    recipes: list[str] = field(default_factory=lambda: list(DEFAULT_RECIPES))
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    overrides: list[str] = field(default_factory=list)  # appended to every run's training command
    compute_of: str | None = None  # equal compute: this recipe gets `images`, the others its compute
    costs: dict[str, Any] | None = None  # the step-cost table (benchmarks.quality_budget.step_costs)
    images_by_recipe: dict[str, int] = field(default_factory=dict)  # per-recipe budgets (equal compute)
    out: str = ""
    tag: str = ""
    python: str = sys.executable


def default_data() -> str:
    """``cifar10`` when torchvision's copy is present, else the offline JPEG zip, else the config's source."""
    from ctcm.data.sources import default_cifar10_root

    if (default_cifar10_root() / "cifar-10-batches-py").is_dir():
        return "cifar10"
    return str(OFFLINE_ZIP) if OFFLINE_ZIP.is_file() else "cifar10"


# -- recipes -> run plans -----------------------------------------------------------------------------------------
def resolve_recipe(name: str, size: str) -> dict[str, Any]:
    """The recipe with ``extends`` merged, ``@backbone:X`` expanded and its config filled in."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from {sorted(RECIPES)}")
    r = copy.deepcopy(RECIPES[name])
    if r.get("extends"):
        base = resolve_recipe(r["extends"], size)
        r["overrides"] = base["overrides"] + r.get("overrides", [])
        r["phases"] = r.get("phases") or base.get("phases")
        r["config"] = r.get("config") or base["config"]

    def expand(items: list[str]) -> list[str]:
        out: list[str] = []
        for item in items:
            if item.startswith("@backbone:"):
                swap = PEER_BACKBONES[size][item.split(":", 1)[1]]
            elif item == "@objective:design":
                swap = DESIGN_OBJECTIVE[size]
            else:
                swap = item
            out += [swap] if isinstance(swap, str) else list(swap)
        return out

    r["overrides"] = expand(r.get("overrides", []))
    for ph in r.get("phases") or []:
        ph["overrides"] = expand(ph.get("overrides", []))
    r["config"] = r.get("config") or DEFAULT_CONFIGS[size]
    r.pop("extends", None)
    return r


def budget(override: str, steps: int) -> str:
    """``$STEPS`` -> the phase's steps, ``$STEPS/N`` -> steps // N (at least 1): budget-relative settings."""
    return re.sub(r"\$STEPS(?:/(\d+))?", lambda m: str(max(1, steps // int(m.group(1) or 1))), override)


def checkpoint_file(folder: Path, step: int) -> Path:
    return folder / "checkpoints" / f"step_{step:08d}.pt"


def plan_run(s: Settings, name: str, seed: int) -> dict[str, Any]:
    """Folders, steps and training commands of one run (recipe x seed)."""
    recipe = resolve_recipe(name, s.size)
    total = max(1, s.images_by_recipe.get(name, s.images) // s.batch)
    interval = max(1, total // max(1, s.points))
    phases = recipe.get("phases") or [{"fraction": 1.0, "overrides": [], "init_from_previous": False}]
    fractions = [float(p["fraction"]) for p in phases]
    steps = [max(1, round(total * f / sum(fractions))) for f in fractions[:-1]]
    steps.append(max(1, total - sum(steps)))
    run_dir = Path(s.out) / "runs" / s.size / name / f"seed{seed}"
    config = recipe["config"] if Path(recipe["config"]).is_absolute() else str(REPO / recipe["config"])
    plan: dict[str, Any] = {"recipe": name, "seed": seed, "dir": str(run_dir), "phases": []}
    offset = 0
    for i, (ph, n_steps) in enumerate(zip(phases, steps)):
        folder = run_dir if i == len(phases) - 1 else run_dir / f"phase{i + 1}"
        final = checkpoint_file(folder, n_steps)
        cmd = [s.python, str(TRAIN_SCRIPT), "--config", config, "--out", str(folder), "--no-progress"]
        cmd += ["--data", s.data] if s.data else []
        cmd += ["--device", s.device]
        if ph.get("init_from_previous") and i > 0:
            cmd += ["--init-from", str(Path(plan["phases"][-1]["dir"]) / "checkpoints" / "latest.pt")]
        cmd += ["threads=1", f"seed={seed}", "eval.learning_samples=0", "eval.fid_every=0", f"steps={n_steps}",
                f"batch_size={s.batch}", f"checkpoint_every={min(interval, n_steps)}", "keep_checkpoints=0",
                "data.heldout=test"]
        cmd += [budget(o, n_steps) for o in SIZE_OVERRIDES[s.size] + recipe["overrides"]
                + list(ph.get("overrides", [])) + s.overrides]
        plan["phases"].append({"dir": str(folder), "steps": n_steps, "every": min(interval, n_steps),
                               "images_offset": offset, "final": str(final),
                               "command": cmd, "log": str(folder / "train.log")})
        offset += n_steps * s.batch
    plan["images"] = offset
    return plan


# -- running ------------------------------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _last_step(folder: Path) -> str:
    try:
        lines = (folder / "train.csv").read_text().strip().splitlines()
        return lines[-1].split(",", 1)[0] if len(lines) > 1 else "0"
    except OSError:
        return "?"


def _run_logged(cmd: list[str], log: Path, heartbeat: Callable[[], None] | None = None, every: float = 60.0) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        fh.write(f"\n$ {shlex.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_env(), cwd=str(REPO))
        while True:
            try:
                return proc.wait(timeout=every)
            except subprocess.TimeoutExpired:
                if heartbeat is not None:
                    heartbeat()


def train_run(plan: dict[str, Any], log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Train each phase whose final checkpoint is missing (resuming a phase that has checkpoints)."""
    record_path = Path(plan["dir"]) / RUN_RECORD
    old = json.loads(record_path.read_text()) if record_path.is_file() else {}
    old_phases = {p["dir"]: p for p in old.get("phases", [])}
    done = []
    who = f"{plan['recipe']} seed{plan['seed']}"
    for i, ph in enumerate(plan["phases"]):
        folder = Path(ph["dir"])
        row = {"dir": ph["dir"], "steps": ph["steps"], "command": shlex.join(ph["command"]), "images_offset":
               ph["images_offset"]}
        if Path(ph["final"]).is_file():
            prev = old_phases.get(ph["dir"], {})
            row.update(skipped=True, wall_s=prev.get("wall_s"), returncode=prev.get("returncode", 0))
            done.append(row)
            continue
        cmd = list(ph["command"])
        if any((folder / "checkpoints").glob("step_*.pt")):
            cmd = [c for j, c in enumerate(cmd) if c != "--init-from" and (j == 0 or cmd[j - 1] != "--init-from")]
            cmd.insert(cmd.index("--no-progress") + 1, "--resume")
            row["command"] = shlex.join(cmd)
        log(f"{who}: training phase {i + 1}/{len(plan['phases'])}, {ph['steps']} steps -> {ph['log']}")
        t0 = time.perf_counter()
        rc = _run_logged(cmd, Path(ph["log"]), lambda i=i, folder=folder, ph=ph: log(
            f"{who}: phase {i + 1} at step {_last_step(folder)}/{ph['steps']}"))
        row.update(skipped=False, wall_s=time.perf_counter() - t0, returncode=rc)
        done.append(row)
        if rc != 0 or not Path(ph["final"]).is_file():
            raise RuntimeError(f"{who}: training failed (exit {rc}); see {ph['log']}")
        log(f"{who}: phase {i + 1} done in {row['wall_s']:.0f} s")
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps({"phases": done + [old_phases[p["dir"]] for p in plan["phases"][i + 1:]
                                                             if p["dir"] in old_phases]}, indent=1))
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps({"phases": done}, indent=1))
    return done


def eval_spec(s: Settings) -> dict[str, Any]:
    return {"n": s.n, "n_fid": s.n_fid, "fid_steps": s.fid_steps, "fd8_source": s.data,
            "fd8_heldout": s.fd8_heldout, "fid_ref": s.fid_ref or s.data, "device": s.device,
            "batch_size": s.eval_batch, "threads": 1}


def eval_points(s: Settings, plan: dict[str, Any], grid: bool) -> list[dict[str, Any]]:
    """Every periodic checkpoint of every phase, with its images-seen position."""
    from ctcm.engine.rundir import step_of

    points = []
    for i, ph in enumerate(plan["phases"]):
        ckpts = sorted((step_of(p.name), p)
                       for p in (Path(ph["dir"]) / "checkpoints").glob("step_*.pt"))
        for step, path in ckpts:
            if step > ph["steps"] or (step % ph["every"] and step != ph["steps"]):
                continue  # e.g. the checkpoint an interrupted run wrote on its way out
            last = i == len(plan["phases"]) - 1 and step == ph["steps"]
            points.append({"path": str(path), "phase": i + 1, "step": step,
                           "images": ph["images_offset"] + step * s.batch, "final": last,
                           "fid": s.n_fid > 0 and (last or s.fid_every_point), "grid": grid and last})
    return points


def evaluate_run(s: Settings, plan: dict[str, Any], grid: bool, log: Callable[[str], None]) -> tuple[list, float]:
    from .quality_eval import load_cached, pending

    spec = eval_spec(s)
    points = eval_points(s, plan, grid)
    spec["checkpoints"] = [{k: p[k] for k in ("path", "fid", "grid")} for p in points]
    spec_path = Path(plan["dir"]) / "quality_eval_spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    wall = 0.0
    if any(pending(p, spec) for p in spec["checkpoints"]):
        who = f"{plan['recipe']} seed{plan['seed']}"
        log(f"{who}: evaluating {len(points)} checkpoints ({sum(p['fid'] for p in points)} with FID@{s.n_fid}) "
            f"-> {Path(plan['dir']) / 'eval.log'}")
        t0 = time.perf_counter()
        rc = _run_logged([s.python, "-m", "benchmarks.quality_eval", str(spec_path)], Path(plan["dir"]) / "eval.log")
        wall = time.perf_counter() - t0
        if rc != 0:
            raise RuntimeError(f"{who}: evaluation failed (exit {rc}); see {Path(plan['dir']) / 'eval.log'}")
        log(f"{who}: evaluated in {wall:.0f} s")
    rows = []
    for p in points:
        cached = load_cached(p["path"], spec) or {}
        rows.append({**{k: p[k] for k in ("phase", "step", "images", "final", "path")},
                     **{k: v for k, v in cached.items() if k.startswith(("fd8_", "fid_")) or k == "eval_s"}})
    return rows, wall


def prepare_reference(s: Settings, log: Callable[[str], None]) -> None:
    """Compute (or find cached) the FID reference statistics once, before runs evaluate in parallel."""
    if s.n_fid <= 0:
        return
    spec = eval_spec(s) | {"checkpoints": []}
    folder = Path(s.out) / "runs" / s.size
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reference_spec.json").write_text(json.dumps(spec, indent=1))
    log(f"FID reference statistics: first {s.n_fid} training images of {spec['fid_ref']} (cached after once)")
    rc = _run_logged([s.python, "-m", "benchmarks.quality_eval", str(folder / "reference_spec.json")],
                     folder / "reference.log")
    if rc != 0:
        raise RuntimeError(f"FID reference statistics failed (exit {rc}); see {folder / 'reference.log'}")


def run_one(s: Settings, plan: dict[str, Any], ref_ready: cf.Future, log: Callable[[str], None]) -> dict[str, Any]:
    t0 = time.perf_counter()
    result: dict[str, Any] = {"recipe": plan["recipe"], "seed": plan["seed"], "dir": plan["dir"],
                              "images": plan["images"], "phases": [], "points": [], "error": None}
    try:
        result["phases"] = train_run(plan, log)
        ref_ready.result()
        result["points"], result["eval_wall_s"] = evaluate_run(s, plan, grid=plan["seed"] == min(s.seeds), log=log)
    except Exception as exc:  # one failed run must not lose the others
        result["error"] = str(exc)
        log(f"error: {exc}")
    walls = [p.get("wall_s") for p in result["phases"]]
    result["train_wall_s"] = sum(walls) if walls and all(w is not None for w in walls) else None
    result["session_wall_s"] = time.perf_counter() - t0
    return result


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
