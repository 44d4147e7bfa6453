"""One GPU, fp32 and bf16-mixed: the toy benchmark's smoke runs record the device and precision
(skipped on a machine without CUDA; `python -m benchmarks.perf.gpu_check` runs every benchmark)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.cli import main
from leaderboard.records import RecordStore


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_toy_runs_on_one_gpu(toy_env, tmp_path: Path, precision: str) -> None:
    results = tmp_path / "results"
    assert main(["run", "toy", "--profile", "smoke", "--methods", "linear", "--accelerator", "gpu", "--devices", "1",
                 "--precision", precision, "--results", str(results), "--wandb", "disabled"]) == 0
    records = list(RecordStore(results).iter_records())
    assert records and all(r.ok and r.hardware["accelerator"] == "gpu" and r.hardware["gpu_names"] for r in records)
    assert all(r.config["trainer"]["precision"] == precision and r.cost["peak_gpu_mb"] > 0 for r in records)
