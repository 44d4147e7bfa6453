"""Where datamodules look for data and keep their caches (one rule for every datamodule)."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$LITBENCH_CACHE``, else ``$XDG_CACHE_HOME/litbench`` (``~/.cache/litbench``)."""
    if os.environ.get("LITBENCH_CACHE"):
        return Path(os.environ["LITBENCH_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "litbench"
