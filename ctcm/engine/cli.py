"""``ctcm train``: the command line of a training run (``examples/cifar10/train.py`` calls the same
:func:`main_train`).

    ctcm train --config CFG.yaml --out DIR [--steps N] [--data PATH] [--device DEV] [--resume [CKPT]]
               [key.sub=value ...]
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from ..checkpoint import CheckpointError, read_checkpoint
from ..config import ConfigError
from ..data import DataError
from .config import load_train_config
from .trainer import NonFiniteError, resolve_resume, train


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ctcm train", description="Train a continuous-time consistency model.",
                                epilog="Extra arguments key.sub=value override config entries, e.g. "
                                       "optim.lr=1e-4 model.backbone.width=64 (unknown keys are errors).")
    p.add_argument("--config", help="YAML TrainConfig (with --resume and no --config: the run's stored config)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, samples, metrics, plots")
    p.add_argument("--steps", type=int, help="total optimiser steps (config 'steps')")
    p.add_argument("--data", help="data source (config 'data.source'): folder, .zip, .npz, cifar10[:ROOT], embedded")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (config 'device')")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="CKPT",
                   help="resume from CKPT, or without a path from the latest checkpoint in --out")
    p.add_argument("--init-from", metavar="CKPT",
                   help="start from the network weights of CKPT (e.g. a denoising run): fresh optimiser and EMA")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value")
    return p


def main_train(argv: list[str] | None = None) -> int:
    """Parse ``argv``, train, print where the outputs are. Exit codes: 0 done, 1 error, 128+signal interrupted."""
    args = parser().parse_args(argv)
    overrides = list(args.overrides)
    overrides += [f"steps={args.steps}"] if args.steps is not None else []
    overrides += [f"data.source={args.data}"] if args.data is not None else []
    overrides += [f"device={args.device}"] if args.device is not None else []
    overrides += [f"init_from={args.init_from}"] if args.init_from is not None else []
    out = Path(args.out)
    try:
        resume = resolve_resume(out, args.resume)
        if args.config is None and resume is None:
            raise ConfigError("give --config PATH (or --resume to continue a run with its stored config)")
        if args.config is not None:
            cfg = load_train_config(args.config, overrides)
        else:  # resuming without an explicit config: the run's own
            cfg = load_train_config(None, overrides, base=read_checkpoint(resume)["extra"]["config"], resolved=True)
        result = train(cfg, out, resume=resume, progress=not args.no_progress)
    except (ConfigError, CheckpointError, DataError, FileNotFoundError, NonFiniteError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if result.checkpoint is None:  # a non-main rank
        return 0 if result.interrupted is None else 128 + int(result.interrupted)
    if result.interrupted is not None:
        name = signal.Signals(result.interrupted).name
        print(f"{name} at step {result.step}: checkpoint written to {result.checkpoint}; "
              f"continue with --out {out} --resume")
        return 128 + int(result.interrupted)
    learning = result.metrics.get("learning")
    if learning:
        print("learning evidence (distance of EMA samples to held-out data; lower is better):")
        for key, v in learning.items():
            if isinstance(v, dict):
                print(f"  {key:<16} initial {v['initial']:.4f} -> final {v['final']:.4f}")
        floor = result.metrics.get("learning_initial", {})
        print(f"  noise floor (train vs held-out): fd8 {floor.get('fd8_floor', float('nan')):.4f}, "
              f"channel {floor.get('channel_floor', float('nan')):.4f}; improved: {learning['improved']}")
    print(f"done at step {result.step} ({result.nonfinite} non-finite steps skipped). Outputs:")
    for name, path in result.files.items():
        print(f"  {name:<13} {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_train())
