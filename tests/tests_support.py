"""Helpers for tests that read ../shared/data (importable from any test module)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("LITBENCH_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))


def shared_data_root(required_subpath: str) -> Path:
    """The shared data root when ``required_subpath`` exists under it; otherwise skip (locally) or
    fail (under CI=true, where ../shared/data is always present)."""
    if not (SHARED_DATA / required_subpath).exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI needs {SHARED_DATA / required_subpath} (../shared/data beside the checkout)")
        pytest.skip(f"{SHARED_DATA / required_subpath} not present (set LITBENCH_TEST_DATA to the shared data root)")
    return SHARED_DATA
