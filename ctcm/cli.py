"""The ``ctcm`` console command: ``ctcm <subcommand> [args]``; each subcommand lives in its own module.

Every subcommand shares one error path (:mod:`ctcm.errors`): a known error prints one line and exits 2;
``--debug`` shows the traceback.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "train": ("ctcm.engine.cli", "train a model from a YAML config (the recipe scripts call the same function)"),
    "sample": ("ctcm.sampling_cli", "write N images from a checkpoint (PNG files and/or .npz)"),
    "fid": ("ctcm.metrics.cli", "FID/KID of generated images against reference statistics"),
    "fid-stats": ("ctcm.metrics.cli", "build reference Inception statistics from a dataset"),
    "info": ("ctcm.info_cli", "list registered recipes, backbones, schedules, objectives, time distributions and gaps"),
}


def usage() -> str:
    lines = ["usage: ctcm [--version] <subcommand> [options] [--debug]", "", "subcommands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "ctcm <subcommand> --help shows its options; --debug shows the traceback of an error."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from . import __version__
        print(f"ctcm {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"ctcm: unknown subcommand {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    entry = getattr(module, "main_" + name.replace("-", "_"))
    return int(entry(rest) or 0)  # each entry runs through ctcm.errors.run_cli


if __name__ == "__main__":
    raise SystemExit(main())
