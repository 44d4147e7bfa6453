"""litbench harness: specs, runner, launcher and CLI (`litbench`, `python -m benchmarks`)."""

import os
import warnings

# OpenMP threads that spin at every barrier (libgomp's default) are catastrophic on a CPU machine
# shared with other work: RELIANT's cpu students ran 143-266 s with 2 spinning threads vs 7-13 s
# with OMP_WAIT_POLICY=PASSIVE (same run, alternated, 2 cores under load; `litbench perf threads`
# measures it). Set before torch loads libgomp; a user's own setting wins. Worker and DDP
# processes inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Deprecation chatter from inside torch/lightning at import time, not actionable by users.
warnings.filterwarnings("ignore", message=r".*`torch\.jit\.script` is deprecated.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
