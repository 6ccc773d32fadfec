"""Command line of a training run: ``ctcm train`` (``examples/cifar10/train.py`` is a thin wrapper around
:func:`main_train`).

    ctcm train --config CFG.yaml --out DIR [--steps N] [--data PATH] [--device DEV] [--resume [CKPT]]
               [--init-from CKPT] [--overwrite] [--import MODULE] [key.sub=value ...]
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from pathlib import Path

from ..checkpoint import read_checkpoint
from ..config import ConfigError
from ..errors import add_debug_option, run_cli
from .config import load_train_config
from .resume import stored_train_config
from .checkpointing import resolve_resume
from .results import TrainResult
from .trainer import train


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ctcm train", description="Train a continuous-time consistency model.",
                                epilog="Extra arguments key.sub=value override config entries, e.g. "
                                       "optim.lr=1e-4 model.backbone.width=64 (unknown keys are errors); they may "
                                       "come before, between or after the options. Exit codes: 0 done, 1 the run "
                                       "diverged, 2 a usage error, 128+N stopped by signal N (checkpoint written).")
    p.add_argument("--config", help="YAML TrainConfig (with --resume and no --config: the run's stored config)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, samples, metrics, plots")
    p.add_argument("--steps", type=int, help="total optimiser steps (config 'steps')")
    p.add_argument("--data", help="data source (config 'data.source'): folder, .zip, .npz, cifar10[:ROOT], embedded")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (config 'device')")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="CKPT",
                   help="continue the run in --out from CKPT, or without a path from its latest checkpoint; "
                        "optim.*, ema.*, eval.* and logging overrides take effect (docs/training.md)")
    p.add_argument("--init-from", metavar="CKPT",
                   help="start from the network weights of CKPT (e.g. a denoising run): fresh optimiser and EMA")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that holds one, deleting that run's files")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (repeatable), e.g. one that registers your own objective or backbone")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_debug_option(p)
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides (values parsed as YAML)")
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Options and overrides in any order; ``--resume key=value`` is a bare ``--resume`` plus an override."""
    args = parser().parse_intermixed_args(argv)
    if isinstance(args.resume, str) and "=" in args.resume and not os.path.exists(args.resume):
        args.overrides.insert(0, args.resume)
        args.resume = True
    return args


def import_modules(names: list[str]) -> None:
    """Import each ``--import`` module (the current folder is searchable, like ``python -m``)."""
    if names and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"--import {name}: cannot import it ({exc}); give a module name importable from "
                              f"the current folder or the environment (my_plugin, not my_plugin.py)") from exc


def report(result: TrainResult, out: Path) -> int:
    """Print where the outputs are (and what went wrong); return the exit code."""
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
    print(f"done at step {result.step} ({result.nonfinite} non-finite steps skipped, "
          f"{result.metrics.get('threads', '?')} CPU threads). Outputs in {out}:")
    for name, path in result.files.items():
        print(f"  {name:<13} {path}")
    if result.trailing_nonfinite:
        print(f"warning: the last {result.trailing_nonfinite} step(s) had a non-finite loss or gradient and were "
              f"skipped; the checkpoint holds the weights from before them. Lower optim.lr and resume, or check "
              f"the data.")
    return 0


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    import_modules(args.imports)
    overrides = list(args.overrides)
    overrides += [f"steps={args.steps}"] if args.steps is not None else []
    overrides += [f"data.source={args.data}"] if args.data is not None else []
    overrides += [f"device={args.device}"] if args.device is not None else []
    overrides += [f"init_from={args.init_from}"] if args.init_from is not None else []
    out = Path(args.out)
    resume = resolve_resume(out, args.resume)
    if resume is not None and args.overwrite:
        raise ConfigError("--resume continues the run in --out and --overwrite deletes it: give one of them")
    if args.config is not None:
        cfg = load_train_config(args.config, overrides)
    elif resume is not None:  # resuming without an explicit config: the run's own
        cfg = load_train_config(None, overrides, base=stored_train_config(read_checkpoint(resume)), resolved=True)
    else:
        raise ConfigError("give --config PATH (or --resume to continue a run with its stored config)")
    result = train(cfg, out, resume=resume, overwrite=args.overwrite, progress=not args.no_progress)
    if not result.files:  # a non-main rank: rank 0 reports
        return 0 if result.interrupted is None else 128 + int(result.interrupted)
    return report(result, out)


def main_train(argv: list[str] | None = None) -> int:
    """Parse ``argv``, train, print where the outputs are (exit codes: see ``--help``)."""
    return run_cli("train", _main, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main_train())
