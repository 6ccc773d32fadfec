"""``python -m benchmarks --quick | --full | --smoke [--device cuda] [--out DIR] [--tag NAME]``, or
``python -m benchmarks --gpu-check --out DIR`` (every GPU-speed target, 8 minutes of one GPU; ``--smoke`` for
tiny sizes), or ``python -m benchmarks quality ...`` (training-quality study; see its ``--help``), or
``python -m benchmarks resolution CHECKPOINT ...`` (sampling above the training resolution), or
``python -m benchmarks quality-merge A.json B.json --out DIR --tag T`` (one report of a study run in pieces), or
``python -m benchmarks quality-refid RESULTS.json --split test --tag T`` (its FIDs against another reference)."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from .runner import SECTIONS, run

SUBCOMMANDS = {"quality": "quality", "resolution": "resolution", "quality-cost": "quality_cost",
               "quality-merge": "quality_merge", "quality-refid": "quality_refid"}  # name -> module with main()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:  # each study command is its own module, imported only when asked for
        importlib.import_module(f".{SUBCOMMANDS[argv[0]]}", __package__).main(argv[1:])
        return
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="mode", action="store_const", const="quick", help="minutes on a CPU (default)")
    size.add_argument("--full", dest="mode", action="store_const", const="full", help="the whole grid")
    size.add_argument("--smoke", dest="mode", action="store_const", const="smoke", help="tiny sizes, seconds")
    parser.add_argument("--gpu-check", action="store_true",
                        help="the GPU-speed targets in one run (gpu-check.json/.md under --out); "
                             "with --smoke: tiny sizes")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--out", default=None, help="output folder (default benchmarks/results)")
    parser.add_argument("--tag", default=None, help="file stem (default: a machine tag)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--recipes", default=None, help="comma-separated recipes of the models section (default: all)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default=None,
                        help="timer: wall or process CPU time (default: cpu on a CPU device, wall on GPU)")
    parser.add_argument("--report", metavar="JSON", default=None,
                        help="measure nothing: rewrite the .md and .png of an existing results JSON")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    args = parser.parse_args(argv)
    if args.gpu_check:
        from .gpu_check import run_gpu_check

        if args.mode not in (None, "smoke"):
            parser.error("--gpu-check takes --smoke or no size flag")
        run_gpu_check(args.device, args.out or ".", smoke=args.mode == "smoke", log=lambda s: print(s, flush=True))
        print((Path(args.out or ".") / "gpu-check.md").read_text())
        return
    if args.report:
        from .runner import write_report

        print(write_report(args.report, plot_png=not args.no_plot))
        return
    results = run(args.mode or "quick", device=args.device, out_dir=args.out, tag=args.tag,
                  sections=tuple(s for s in args.sections.split(",") if s), plot_png=not args.no_plot,
                  clock=args.clock, recipes=tuple(args.recipes.split(",")) if args.recipes else None)
    from .report import markdown

    print(markdown(results))


if __name__ == "__main__":
    main()
