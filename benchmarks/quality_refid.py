"""``python -m benchmarks quality-refid RESULTS.json --ref SOURCE --split test --tag T``: a study's FIDs against
another reference set, from the Inception statistics its evaluation saved (no sampling, no Inception pass on
samples; only the new reference's images go through the network, once, cached).

A ranking that holds against one reference set only may be tuned to it. The quality evaluation saves the
statistics of each final checkpoint's FID samples (``<checkpoint stem>.inception<k>step.npz``, see
:mod:`benchmarks.quality_eval`); this command computes the Frechet distance of the same samples to the first
``--n`` images of ``--split`` of ``SOURCE`` and writes a results JSON of the same shape (its report, curves and
grids too) with those FIDs in place of the study's. fd8 and every other number are the input's.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

from .quality_eval import sample_statistics_path


def refid(results: dict[str, Any], reference: Any, *, ref_name: str, split: str, n: int) -> dict[str, Any]:
    """``results`` with each FID it holds recomputed against ``reference`` (:class:`ctcm.metrics.Statistics`)
    from the saved sample statistics. Raises ``ValueError`` (one line) when a checkpoint has none."""
    from ctcm.metrics import Statistics, frechet_distance

    out = copy.deepcopy(results)
    steps = results["settings"]["fid_steps"]
    for run in out["runs"]:
        for point in run["points"]:
            for k in (k for k in steps if f"fid_{k}step" in point):  # the points the study scored with FID
                path = sample_statistics_path(point["path"], int(k))
                if not path.is_file():
                    raise ValueError(f"{run['recipe']} seed {run['seed']}: no sample statistics at {path} (evaluated "
                                     "before they were saved): delete its step_*.quality.json and rerun the study's "
                                     "command to evaluate it again")
                s = Statistics.load(path)
                nets = s.meta.get("network_sha1"), reference.meta.get("network_sha1")
                if None not in nets and nets[0] != nets[1]:
                    raise ValueError(f"{path} holds features of network {nets[0]} but the reference is of {nets[1]}: "
                                     "an FID needs one network for both")
                point[f"fid_{k}step"] = frechet_distance(s.mu, s.sigma, reference.mu, reference.sigma)
    out["eval"] = {**results["eval"], "fid_ref": ref_name, "fid_split": split, "n_fid_ref": n}
    out["refid_of"] = {"tag": results["tag"], "fid_ref": results["eval"]["fid_ref"],
                       "fid_split": results["eval"].get("fid_split", "train"), "n_fid": results["eval"]["n_fid"]}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks quality-refid", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json", help="results JSON of `python -m benchmarks quality` (or quality-merge)")
    p.add_argument("--ref", help="reference source (default: the study's)")
    p.add_argument("--split", default="test", help="its split (default test)")
    p.add_argument("--n", type=int, help="reference images: the first N of the split (default: the study's FID N)")
    p.add_argument("--out", help="folder of the new report (default: the input's folder)")
    p.add_argument("--tag", required=True, help="its tag: the files are OUT/quality-<size>-<tag>.*")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    a = p.parse_args(argv)
    try:
        results = json.loads(Path(a.json).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        p.error(f"cannot read {a.json}: {exc}")
    if results.get("kind") != "quality" or results["eval"].get("n_fid", 0) <= 0:
        p.error(f"{a.json} is not a quality results JSON with FID (`python -m benchmarks quality --fid-n N`)")
    ref, n = a.ref or results["eval"]["fid_ref"], a.n or results["eval"]["n_fid"]
    from ctcm.errors import UserError
    from ctcm.metrics import load_or_compute_statistics

    from .quality import output_stem, write_outputs
    from .quality_report import markdown

    new = copy.deepcopy(results)
    new["tag"] = new["settings"]["tag"] = a.tag
    new["settings"]["out"] = a.out or str(Path(a.json).parent)
    stem = output_stem(new)
    if stem.with_suffix(".json").exists():
        p.error(f"{stem}.json exists: choose another --tag or --out (a report is never overwritten)")
    try:
        reference = load_or_compute_statistics(ref, num=n, split=a.split, device="cpu", distributed=False)
        new = refid(new, reference, ref_name=ref, split=a.split, n=n)
    except (ValueError, UserError) as exc:
        p.error(str(exc))
    files = write_outputs(new, plot_png=not a.no_plot)
    print(markdown(new))
    print("wrote " + ", ".join(map(str, files)))
