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


def run_ddp_cli(benchmark: str, argv: list[str], *, results: Path, timeout: float) -> None:
    """``litbench run BENCHMARK ...`` as two CPU DDP processes in a subprocess (never in-process DDP)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "benchmarks", "run", benchmark, *argv, "--results", str(results),
                           "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu"],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def assert_ddp_record_matches(one, two, *, top1_tolerance: float) -> None:
    """A 2-process image-classification record against the 1-process one: world sizes, the same
    metric names, identical architecture numbers, top-1 within the stated tolerance."""
    assert one.hardware["world_size"] == 1 and two.hardware["world_size"] == 2
    assert set(one.metrics) == set(two.metrics)
    assert two.metrics["params_m"] == one.metrics["params_m"] and two.metrics["macs_m"] == one.metrics["macs_m"]
    assert two.metrics["top1"] == pytest.approx(one.metrics["top1"], abs=top1_tolerance), one.method
