"""``python -m benchmarks resolution``: sample a model trained at R x R at s R x s R with the same weights.

    python -m benchmarks resolution RUN_OR_CHECKPOINT [...] --n 1000 --scale 2 --out DIR

For each checkpoint (a run folder means its ``checkpoints/latest.pt``) the EMA model draws ``n`` images with 1
and 2 steps at the native resolution R and at s R (the same seed rule, :mod:`ctcm.sampling`; only the image
size changes). The s R samples are area-downsampled (s x s mean pooling) back to R, and both sets get fd8
(8x8-pooled pixels vs ``n`` held-out test images) and TF-Inception FID@n against the first ``n`` training images
of the offline zip (:mod:`benchmarks.quality_eval`'s reference and statistics). A resolution-agnostic operator
that generalises gives the downsampled s R samples about the native FID; aliasing (spectral weights tied to
the training grid's frequencies) shows as a gap. Writes ``DIR/resolution.{json,md}`` and one grid per
checkpoint at s R (``DIR/<name>-<sR>px-<k>step.png``). ``--no-fid``: fd8 only (seconds, not Inception's
minutes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .quality_plan import OFFLINE_ZIP, default_data
from .quality_eval import SAMPLE_SEED, fd8_reference, fid_of, fid_reference


def checkpoint_of(path: str) -> Path:
    p = Path(path)
    return p / "checkpoints" / "latest.pt" if p.is_dir() else p


def evaluate(path: Path, *, scale: int, n: int, fd8_ref: torch.Tensor, fid_net: Any, fid_ref: Any,
             out: Path, batch_size: int = 250, steps: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """fd8 and FID of native and of scale x (area-downsampled) samples, 1 and 2 steps; grids at scale x."""
    from ctcm import load_checkpoint
    from ctcm.engine.learning_measure import data_distance
    from ctcm.engine.logging import save_grid

    model = load_checkpoint(path, weights="ema", map_location="cpu").eval()
    native = model.resolution
    row: dict[str, Any] = {"checkpoint": str(path), "native": native, "scale": scale, "steps": list(steps)}
    name = path.parent.parent.name if path.name == "latest.pt" else path.stem
    for k in steps:
        for res in (native, scale * native):
            model.resolution = res  # the sample shape: the only thing that changes
            x = model.sample(n, steps=k, seed=SAMPLE_SEED, batch_size=batch_size).float()
            if res != native:
                save_grid(x[:64], out / f"{name}-{res}px-{k}step.png")
                x = F.avg_pool2d(x, scale)
            tag = "native" if res == native else f"x{scale}"
            row[f"fd8_{k}step_{tag}"] = data_distance(x, fd8_ref)["fd8"]
            row[f"fid_{k}step_{tag}"] = fid_of(x, fid_net, fid_ref, batch_size) if fid_net is not None else None
        model.resolution = native
    return row


def _fid(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def markdown(rows: list[dict[str, Any]], n: int) -> str:
    lines = [f"FID@{n:,} / fd8 of samples at the native resolution and at the scaled one "
             "(area-downsampled back).",
             "", "| checkpoint | steps | fd8 native | fd8 scaled | FID native | FID scaled |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        s = f"x{r['scale']}"
        for k in r["steps"]:
            lines.append(f"| `{r['checkpoint']}` | {k} | {r[f'fd8_{k}step_native']:.2f} | {r[f'fd8_{k}step_{s}']:.2f} "
                         f"| {_fid(r[f'fid_{k}step_native'])} | {_fid(r[f'fid_{k}step_{s}'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks resolution", description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", help="checkpoint files or run folders (their latest.pt)")
    p.add_argument("--scale", type=int, default=2, help="sample at scale x the training resolution (default 2)")
    p.add_argument("--n", type=int, default=1000, help="samples per set, and FID reference images (default 1000)")
    p.add_argument("--steps", default="1,2", help="sampler step counts (default 1,2)")
    p.add_argument("--data", help="FID reference and fd8 held-out source (default: as the quality study)")
    p.add_argument("--out", default="benchmarks/results", help="folder of resolution.{json,md} and the grids")
    p.add_argument("--fid", action=argparse.BooleanOptionalAction, default=True,
                   help="TF-Inception FID besides fd8 (default on; --no-fid: fd8 only)")
    a = p.parse_args(argv)
    paths = [checkpoint_of(c) for c in a.checkpoints]
    missing = [str(c) for c in paths if not c.is_file()]
    if missing or a.scale < 2 or a.n < 2:
        p.error(f"checkpoint not found: {', '.join(missing)}" if missing else "--scale >= 2 and --n >= 2")
    torch.set_num_threads(1)
    from ctcm import load_checkpoint
    from ctcm.errors import UserError

    for c in paths:  # a corrupted or foreign file: one line before the Inception network is loaded
        try:
            load_checkpoint(c)
        except UserError as exc:
            p.error(str(exc).splitlines()[0])

    source = a.data or (str(OFFLINE_ZIP) if OFFLINE_ZIP.is_file() else default_data())
    fid_ref = fid_net = None
    if a.fid:
        from ctcm.metrics import InceptionFeatures

        spec = {"fid_ref": source, "n_fid": a.n, "device": "cpu", "batch_size": 250}
        fid_ref, fid_net = fid_reference(spec), InceptionFeatures(None, "cpu")
    fd8_ref = fd8_reference(source, "test", a.n)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for c in paths:
        rows.append(evaluate(c, scale=a.scale, n=a.n, fd8_ref=fd8_ref, fid_net=fid_net, fid_ref=fid_ref, out=out,
                             steps=tuple(int(k) for k in a.steps.split(",") if k)))
        print(json.dumps(rows[-1]), flush=True)
    (out / "resolution.json").write_text(json.dumps({"n": a.n, "data": source, "rows": rows}, indent=1))
    (out / "resolution.md").write_text(markdown(rows, a.n))
    print(markdown(rows, a.n) + f"wrote {out / 'resolution.json'}, {out / 'resolution.md'} and the grids")


if __name__ == "__main__":
    main()
