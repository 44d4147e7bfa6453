"""Helpers for tests that read ../shared/data (importable from any test module)."""

from __future__ import annotations

import os
import shutil
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


def run_cli_in_subprocess(benchmark: str, argv: list[str], *, results: Path, timeout: float, ddp: bool = False,
                          threads: int | None = None) -> None:
    """``litbench run BENCHMARK ...`` in a subprocess; ``ddp``: as two CPU DDP processes (never in-process DDP).
    ``threads`` sets LITBENCH_NUM_THREADS for it (e.g. 1, so both sides of a comparison use one thread)."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONWARNINGS": "ignore", **({"LITBENCH_NUM_THREADS": str(threads)} if threads else {})}
    ddp_args = ["--devices", "2", "--strategy", "ddp", "--accelerator", "cpu"] if ddp else []
    done = subprocess.run([sys.executable, "-m", "benchmarks", "run", benchmark, *argv, "--results", str(results), *ddp_args],
                          capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def run_ddp_cli(benchmark: str, argv: list[str], *, results: Path, timeout: float, threads: int | None = None) -> None:
    """``litbench run BENCHMARK ...`` as two CPU DDP processes in a subprocess (never in-process DDP)."""
    run_cli_in_subprocess(benchmark, argv, results=results, timeout=timeout, ddp=True, threads=threads)


def assert_ddp_record_matches(one, two, *, top1_tolerance: float) -> None:
    """A 2-process image-classification record against the 1-process one: world sizes, the same
    metric names, identical architecture numbers, top-1 within the stated tolerance."""
    assert one.hardware["world_size"] == 1 and two.hardware["world_size"] == 2
    assert set(one.metrics) == set(two.metrics)
    assert two.metrics["params_m"] == one.metrics["params_m"] and two.metrics["macs_m"] == one.metrics["macs_m"]
    assert two.metrics["top1"] == pytest.approx(one.metrics["top1"], abs=top1_tolerance), one.method


def writable_copy(source: Path, destination: Path) -> Path:
    """``source`` (a read-only shared-data folder) copied to ``destination``, made writable."""
    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(source, destination)
    for path in destination.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return destination


def damage_file(path: Path, how: str, where: float, *, garble_bytes: int = 32) -> bytes:
    """Truncate ``path`` at fraction ``where``, empty it, or XOR-garble ``garble_bytes`` from there;
    returns the original bytes."""
    original = path.read_bytes()
    cut = int(len(original) * where)
    damaged = {"truncate": lambda: original[:cut], "empty": lambda: b"",
               "garble": lambda: original[:cut] + bytes(b ^ 0x5A for b in original[cut:cut + garble_bytes])
               + original[cut + garble_bytes:]}[how]()
    path.write_bytes(damaged)
    return original
