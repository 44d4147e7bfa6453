"""Hand-made run records for the leaderboard tests (no harness involved: the store is the contract)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from leaderboard.records import STATUS_FAILED, STATUS_OK, RecordStore, RunRecord, config_hash

HARDWARE = {"cpu": "Test CPU", "cores": 2, "accelerator": "cpu", "devices": 1, "strategy": "auto",
            "num_nodes": 1, "world_size": 1, "gpu_names": []}
SOFTWARE = {"python": "3.11.9", "torch": "2.14.1", "lightning": "2.6.6", "torchmetrics": "1.9.0",
            "torch_geometric": "2.8.1", "timm": "1.0.31", "git_sha": "abc1234", "git_dirty": False}


def make_record(*, benchmark: str, method: str, role: str, seed: int, dataset: str = "Cora",
                profile: str = "cpu", metrics: dict[str, float] | None = None,
                cost: dict[str, Any] | None = None, error_type: str | None = None,
                spec: dict[str, Any] | None = None, finished_at: str = "2026-01-01T00:00:00+00:00",
                artifacts: list[str] | None = None) -> RunRecord:
    """An ok record, or a failed one when ``error_type`` is given."""
    config = {"benchmark": benchmark, "method": method, "dataset": dataset, "profile": profile, "seed": seed}
    failed = error_type is not None
    return RunRecord(
        benchmark=benchmark, method=method, role=role, dataset=dataset, profile=profile, seed=seed,
        status=STATUS_FAILED if failed else STATUS_OK, config=config, config_hash=config_hash(config),
        metrics={} if failed else dict(metrics or {}), cost=dict(cost or {}),
        hardware=dict(HARDWARE), software=dict(SOFTWARE),
        error={"type": error_type, "message": f"{error_type} in seed {seed}", "traceback_tail": "..."} if failed else None,
        spec=dict(spec or {}), started_at=finished_at, finished_at=finished_at, artifacts=list(artifacts or []))


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    return tmp_path / "results"


@pytest.fixture
def write_run(results_dir: Path) -> Callable[..., Path]:
    """Write one record (keyword arguments of make_record) into the test's results folder."""
    store = RecordStore(results_dir)

    def write(**fields: Any) -> Path:
        return store.write(make_record(**fields))

    return write
