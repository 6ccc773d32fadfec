"""Evaluate a run's checkpoints for ``python -m benchmarks quality`` (run as a subprocess, one thread).

    python -m benchmarks.quality_eval SPEC.json

SPEC holds ``checkpoints`` (``[{path, fid, grid}]``) and the settings below. For each checkpoint the EMA model
draws ``n`` samples with 1 and with 2 steps (fixed noise: the same for every checkpoint and run); fd8 is their
Frechet distance to ``n`` held-out images on 8x8 pooled pixels (:mod:`ctcm.engine.learning_measure`), FID (when the
entry's ``fid`` is set and ``n_fid`` > 0) the TF-Inception FID of the same samples against the cached statistics
of the first ``n_fid`` training images of ``fid_ref``. Results go to ``<checkpoint stem>.quality.json`` beside
the checkpoint and are reused while the settings match; the Inception statistics of the samples (with their
features, :class:`ctcm.metrics.Statistics`) go to ``<checkpoint stem>.inception<k>step.npz``, so an FID against
another reference set costs no sampling or Inception pass (``python -m benchmarks quality-refid``). ``grid``:
also save the first 64 samples of each step count as ``<checkpoint stem>.grid<k>step.png``. With no checkpoints
it only builds the FID reference cache.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

SAMPLE_SEED = 12345  # the noise of every evaluation: same images index by index for every checkpoint
REF_SEED = 0  # which held-out images form the fd8 reference
STEPS = (1, 2)


def result_path(checkpoint: str | Path) -> Path:
    return Path(checkpoint).with_suffix(".quality.json")


def grid_path(checkpoint: str | Path, steps: int) -> Path:
    return Path(checkpoint).with_suffix(f".grid{steps}step.png")


def sample_statistics_path(checkpoint: str | Path, steps: int) -> Path:
    """The Inception statistics (and features) of the checkpoint's FID samples at ``steps`` steps."""
    return Path(checkpoint).with_suffix(f".inception{steps}step.npz")


def signature(spec: dict[str, Any]) -> dict[str, Any]:
    """What the cached numbers depend on besides the checkpoint."""
    return {k: spec[k] for k in ("n", "n_fid", "fd8_source", "fd8_heldout", "fid_ref")} | {"sample_seed": SAMPLE_SEED}


def load_cached(checkpoint: str | Path, spec: dict[str, Any]) -> dict[str, Any] | None:
    path = result_path(checkpoint)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("settings") == signature(spec) else None


def pending(entry: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Whether the checkpoint ``entry`` lacks a number (an FID of one of ``spec``'s step counts) or grid it asks for."""
    cached = load_cached(entry["path"], spec)
    if cached is None:
        return True
    wants_fid = entry.get("fid") and spec["n_fid"] > 0
    return bool((wants_fid and any(f"fid_{k}step" not in cached for k in spec.get("fid_steps", STEPS)))
                or (entry.get("grid") and not grid_path(entry["path"], 1).is_file()))


def fd8_reference(source: str, heldout: str | int, n: int) -> torch.Tensor:
    """n held-out images (a fixed random subset): split ``heldout`` of ``source``, or its last ``heldout``
    training images when ``heldout`` is a number (sources without a test split, e.g. ``embedded``)."""
    from torch.utils.data import Subset

    from ctcm.data import build_dataset
    from ctcm.engine.evaluations import reference_images

    if isinstance(heldout, int) or str(heldout).isdigit():
        train = build_dataset(source, 32, split="train")
        h = int(heldout)
        ds = Subset(train, range(len(train) - h, len(train)))
    else:
        ds = build_dataset(source, 32, split=str(heldout))
    return reference_images(ds, n, REF_SEED)


def fid_reference(spec: dict[str, Any]) -> Any:
    """Statistics of the first ``n_fid`` training images of ``fid_ref`` (ctcm's cache; computed on a miss)."""
    from ctcm.metrics import load_or_compute_statistics

    return load_or_compute_statistics(spec["fid_ref"], num=spec["n_fid"], split="train", device=spec["device"],
                                      batch_size=spec["batch_size"], progress=False, distributed=False)


def fid_of(x: torch.Tensor, fid_net: Any, fid_ref: Any, batch_size: int, save_to: Path | None = None,
           meta: dict[str, Any] | None = None) -> float:
    """TF-Inception FID of samples x (N, C, H, W) in [-1, 1] against the statistics ``fid_ref``; with
    ``save_to``, the samples' statistics and features are written there (atomically) with ``meta``."""
    from ctcm.metrics import frechet_distance, statistics_from_features
    from ctcm.metrics.stats import extract_features
    from ctcm.sampling import to_uint8

    batches = (to_uint8(x[i:i + batch_size]) for i in range(0, len(x), batch_size))  # (b, H, W, C) uint8
    feats = extract_features(batches, fid_net, num_batches=-(-len(x) // batch_size), progress=False,
                             distributed=False)
    s = statistics_from_features(feats, meta={**(meta or {}), "network_sha1": getattr(fid_net, "sha1", "unknown")},
                                 keep_features=True)
    if save_to is not None:
        s.save(save_to)
    return frechet_distance(s.mu, s.sigma, fid_ref.mu, fid_ref.sigma)


def evaluate_checkpoint(path: Path, entry: dict[str, Any], spec: dict[str, Any], ref: torch.Tensor,
                        fid_net: Any, fid_ref: Any) -> dict[str, Any]:
    from ctcm import load_checkpoint
    from ctcm.engine.learning_measure import data_distance
    from ctcm.engine.logging import save_grid

    t0 = time.perf_counter()
    device = torch.device(spec["device"])
    model = load_checkpoint(path, weights="ema", map_location=device).eval()
    step = int(torch.load(path, map_location="cpu", weights_only=True)["step"])
    out: dict[str, Any] = {"checkpoint": str(path), "step": step}
    known = load_cached(path, spec) or {}
    bs = spec["batch_size"]
    for k in STEPS:
        n = max(spec["n"], spec["n_fid"] if entry.get("fid") else 0)
        x = model.sample(n, steps=k, seed=SAMPLE_SEED, batch_size=bs).float().cpu()
        out[f"fd8_{k}step"] = data_distance(x[:spec["n"]], ref)["fd8"]
        if f"fid_{k}step" in known:  # the same samples (settings and seed match): keep, do not recompute
            out[f"fid_{k}step"] = known[f"fid_{k}step"]
        elif entry.get("fid") and spec["n_fid"] > 0 and k in spec.get("fid_steps", STEPS):
            meta = {"source": str(path), "step": step, "sampler_steps": k, "sample_seed": SAMPLE_SEED}
            out[f"fid_{k}step"] = fid_of(x[:spec["n_fid"]], fid_net, fid_ref, bs,
                                         save_to=sample_statistics_path(path, k), meta=meta)
        if entry.get("grid"):
            save_grid(x[:64], grid_path(path, k))
    out["eval_s"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    torch.set_num_threads(int(spec.get("threads", 1)))
    todo = [e for e in spec["checkpoints"] if pending(e, spec)]
    fid_net = fid_ref = None
    if spec["n_fid"] > 0 and (not spec["checkpoints"] or any(e.get("fid") for e in todo)):
        from ctcm.metrics import InceptionFeatures

        fid_ref = fid_reference(spec)  # Inception is loaded here only when the cache misses
        print(f"FID reference: first {spec['n_fid']} training images of {spec['fid_ref']}", flush=True)
        if any(e.get("fid") for e in todo):
            fid_net = InceptionFeatures(None, spec["device"])
    ref = fd8_reference(spec["fd8_source"], spec["fd8_heldout"], spec["n"]) if todo else None
    for e in todo:
        path = Path(e["path"])
        row = evaluate_checkpoint(path, e, spec, ref, fid_net, fid_ref)
        row["settings"] = signature(spec)
        tmp = result_path(path).with_suffix(".tmp")
        tmp.write_text(json.dumps(row, indent=1))
        tmp.replace(result_path(path))
        print(json.dumps({k: v for k, v in row.items() if k != "settings"}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
