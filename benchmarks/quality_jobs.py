"""Running one planned run of ``python -m benchmarks quality``: training (resumable), evaluation, FID reference.

Each phase of a plan (:func:`benchmarks.quality_plan.plan_run`) is a ``train.py`` subprocess of one thread;
a phase whose final checkpoint exists is skipped and one with checkpoints resumes. The evaluation of a run
is one :mod:`benchmarks.quality_eval` subprocess whose scores are cached beside each checkpoint.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .quality_plan import REPO, Settings

RUN_RECORD = "quality_run.json"

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
