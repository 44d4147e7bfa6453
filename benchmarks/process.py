"""What every litbench process sets up before torch loads: nothing happens at import time.

``configure_process()`` runs first in ``benchmarks.cli.main`` (and in a worker started as
``python -m benchmarks.runner``); worker and DDP processes inherit its environment.
"""

from __future__ import annotations

import os
import warnings

# Deprecation chatter from inside torch/lightning at import time, not actionable by users.
IMPORT_TIME_WARNINGS = (r".*`torch\.jit\.script` is deprecated.*", r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")


def configure_process() -> None:
    """OpenMP threads wait passively (a user's own OMP_WAIT_POLICY wins): with libgomp's default
    spinning wait, 2 threads on 2 cores shared with other jobs made runs 10-20x slower. Set before
    torch loads libgomp."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for pattern in IMPORT_TIME_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
