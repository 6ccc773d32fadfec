"""ctcm's benchmarks: spectral layers vs alternatives, JVP cost vs a forward, training/sampling throughput.

Run ``python -m benchmarks --quick`` (minutes on a laptop CPU) or ``--full``; ``--smoke`` runs tiny sizes
in seconds (the test suite does, so the code cannot rot). Every figure is a median over repeats after
warm-up, measured interleaved with the figures it is compared with, in one run. See ``README.md``.
"""

from .runner import run

__all__ = ["run"]
