"""``ctcm sample``: a checkpoint -> N images, as PNG files and/or one ``.npz`` (uint8, NHWC, key ``x``).

    ctcm sample --ckpt runs/cifar/checkpoints/latest.pt --num-samples 50000 --npz samples.npz
    torchrun --nproc_per_node 8 examples/cifar10/sample.py --ckpt ... --num-samples 50000 --out samples/ --steps 2

Image i is a function of (seed, i, steps) only (:mod:`ctcm.sampling`): the same ``--seed`` gives the same
images for any ``--batch-size`` and number of ranks, and the same images as in-training FID with that seed.
Under ``torchrun`` batch k is drawn by rank k mod W; rank 0 joins the parts into the ``.npz``.

A class-conditional checkpoint samples class-balanced sets by default (``--classes all``: the label of image
i is :func:`ctcm.sampling.class_labels` of (seed, i), stored in the ``.npz`` under ``y`` with the class
names under ``classes``), or one class (``--class K``), optionally guided (``--guidance W``, Eq. 32);
``--grid PATH`` writes one row per class, named.

    ctcm sample --ckpt runs/cond/checkpoints/latest.pt --num-samples 50000 --classes all --npz samples.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .atomic import atomic_write
from .checkpoint import load_checkpoint
from .devices import parse_device
from .engine.distributed import barrier, cleanup, init_distributed, pick_device
from .engine.evaluations import class_grid
from .errors import add_debug_option, run_cli
from .errors import UserValueError
from .model import ConsistencyModel
from .sampling import class_cond, to_uint8


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ctcm sample", description="Write N images sampled from a checkpoint.")
    p.add_argument("--ckpt", required=True, help="checkpoint written by training (e.g. RUN/checkpoints/latest.pt)")
    p.add_argument("--num-samples", type=int, default=50_000, help="number of images (default %(default)s)")
    p.add_argument("--out", help="folder for PNG files 000000.png, 000001.png, ...")
    p.add_argument("--npz", help="one .npz with all images under 'x', uint8 (N, H, W, C)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the PNG files already in --out (without it a folder holding PNGs is refused)")
    p.add_argument("--steps", type=int, choices=(1, 2), default=1, help="network evaluations per image")
    p.add_argument("--batch-size", type=int, default=250,
                   help="images per network call; with --seed it fixes the images (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default %(default)s)")
    p.add_argument("--weights", choices=("ema", "model"), default="ema", help="EMA (default) or live weights")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--classes", choices=("all",), default=None,
                       help="conditional checkpoints: class-balanced labels, a function of (seed, image index) "
                            "(the default for a conditional checkpoint)")
    which.add_argument("--class", dest="label", type=int, default=None, help="conditional checkpoints: class K only")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale W of a conditional checkpoint (1: none; docs/training.md)")
    p.add_argument("--grid", default=None, help="also a PNG grid: one row of 10 images per class (conditional), "
                                                "else 64 images")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_debug_option(p)
    return p


def prepare_png_folder(folder: Path, overwrite: bool) -> None:
    """Create ``folder``; refuse one that already holds PNGs (a later FID would mix them in) unless
    ``overwrite``, which deletes them first."""
    folder.mkdir(parents=True, exist_ok=True)
    old = sorted(folder.glob("*.png"))
    if old and not overwrite:
        raise FileExistsError(f"--out {folder} already holds {len(old)} PNG file(s), which a later FID would mix "
                              f"with the new images; pass --overwrite to replace them, or choose an empty folder")
    for path in old:
        path.unlink()


def write_npz(path: Path, images: np.ndarray, labels: dict[str, np.ndarray] | None = None) -> None:
    """``np.savez`` of ``x`` (and ``labels``: ``y``, ``classes``) through :func:`ctcm.atomic.atomic_write`
    (never a half-written file)."""
    arrays: dict[str, Any] = {"x": images, **(labels or {})}
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


def class_names(model: ConsistencyModel) -> list[str]:
    """The stored class names of a conditional model, else "0".."K-1"."""
    return list(model.class_names or [str(k) for k in range(model.num_classes)])


def main_sample(argv: list[str] | None = None) -> int:
    """``ctcm sample``; known errors print one line and exit 2 (:func:`ctcm.errors.run_cli`)."""
    return run_cli("ctcm sample", _main, list(sys.argv[1:] if argv is None else argv))


def _main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.out is None and args.npz is None:
        raise UserValueError("give --out DIR (PNG files) and/or --npz FILE")
    if args.num_samples < 1 or args.batch_size < 1 or args.seed < 0:
        raise UserValueError("--num-samples and --batch-size must be positive, --seed non-negative")
    parse_device(args.device)  # a bad device is named before the checkpoint is read
    info = init_distributed(args.device)
    try:
        device = pick_device(args.device, info)
        model = load_checkpoint(args.ckpt, weights=args.weights, map_location=device)
        if not model.num_classes and (args.classes or args.label is not None or args.guidance is not None):
            raise UserValueError(f"{args.ckpt} is an unconditional model (model.num_classes=0): --classes, --class and "
                             f"--guidance need a class-conditional checkpoint; drop them")
        cond = class_cond(model.num_classes, args.seed, args.num_samples, args.label)
        folder = Path(args.out) if args.out else None
        if folder is not None and info.is_main:
            prepare_png_folder(folder, args.overwrite)
        barrier(info)
        parts_dir = Path(args.npz).parent / f".{Path(args.npz).name}.parts" if args.npz else None
        if parts_dir is not None:
            parts_dir.mkdir(parents=True, exist_ok=True)
        batches = model.sample_batches(args.num_samples, steps=args.steps, seed=args.seed, batch_size=args.batch_size,
                                       rank=info.rank, world_size=info.world_size, cond=cond, guidance=args.guidance)
        if info.is_main and not args.no_progress:
            from tqdm.auto import tqdm
            n_batches = -(-args.num_samples // args.batch_size)
            batches = tqdm(batches, total=-(-n_batches // info.world_size), desc="sample")
        starts, chunks = [], []
        for start, x in batches:
            images = to_uint8(x)
            if folder is not None:
                for j, img in enumerate(images):
                    png = img.squeeze(-1) if img.shape[-1] == 1 else img
                    Image.fromarray(png).save(folder / f"{start + j:06d}.png")
            if parts_dir is not None:
                starts.append(start)
                chunks.append(images)
        if parts_dir is not None:
            np.savez(parts_dir / f"rank{info.rank}.npz", starts=np.asarray(starts, dtype=np.int64),
                     x=np.concatenate(chunks) if chunks else np.zeros((0,), np.uint8),
                     sizes=np.asarray([len(c) for c in chunks], dtype=np.int64))
        barrier(info)
        if info.is_main:
            labels = {"y": cond["y"].numpy(), "classes": np.asarray(class_names(model))} if cond else {}
            if parts_dir is not None:
                merge_parts(parts_dir, Path(args.npz), args.num_samples, info.world_size, labels)
            if args.grid:
                class_grid(model, 10 * model.num_classes or 64, seed=args.seed, batch_size=args.batch_size,
                           path=Path(args.grid), steps=args.steps, guidance=args.guidance)
            where = " and ".join(str(p) for p in (folder, args.npz, args.grid) if p is not None)
            what = "" if not cond else (f", class {args.label}" if args.label is not None else ", class-balanced")
            print(f"wrote {args.num_samples} images ({args.steps}-step, seed {args.seed}{what}) to {where}")
        return 0
    finally:
        cleanup(info)


def merge_parts(parts_dir: Path, path: Path, n: int, world_size: int,
                labels: dict[str, np.ndarray] | None = None) -> None:
    """Join the per-rank parts into ``path`` (images in index order, with ``labels``), then delete them."""
    out: np.ndarray | None = None
    for r in range(world_size):
        part = np.load(parts_dir / f"rank{r}.npz")
        offset = 0
        for start, size in zip(part["starts"], part["sizes"]):
            chunk = part["x"][offset:offset + size]
            if out is None:
                out = np.empty((n, *chunk.shape[1:]), dtype=np.uint8)
            out[start:start + size] = chunk
            offset += size
    assert out is not None
    write_npz(path, out, labels)
    for r in range(world_size):
        (parts_dir / f"rank{r}.npz").unlink()
    parts_dir.rmdir()
