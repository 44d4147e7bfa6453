"""litbench harness: specs, runner, launcher and CLI (`litbench`, `python -m benchmarks`)."""

import warnings

# Deprecation chatter from inside torch/lightning at import time, not actionable by users.
warnings.filterwarnings("ignore", message=r".*`torch\.jit\.script` is deprecated.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
