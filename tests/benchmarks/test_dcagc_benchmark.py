"""The DCAGC benchmark through the real CLI: smoke in one process and under 2-process DDP, and a
real-data run on Cora read from ../shared/data with a read-only-safe cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.cli import main
from leaderboard.records import read_record
from tests_support import run_ddp_cli, shared_data_root

pytestmark = pytest.mark.slow  # real smoke runs of the benchmark (the fast tier skips them)

SMOKE = ["--profile", "smoke", "--wandb", "disabled", "--methods", "dcagc,kmeans_features"]


@pytest.mark.ddp
def test_smoke_ddp_matches_one_process(tmp_path: Path) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert main(["run", "dcagc", *SMOKE, "--results", str(single)]) == 0
    run_ddp_cli("dcagc", SMOKE, results=ddp, timeout=400)
    for method in ("dcagc", "kmeans_features"):
        one = read_record(single / f"dcagc/sbm-synthetic/{method}/smoke/seed-0.json")
        two = read_record(ddp / f"dcagc/sbm-synthetic/{method}/smoke/seed-0.json")
        assert one.hardware["world_size"] == 1 and two.hardware["world_size"] == 2
        # Full-graph training: both ranks see the same graph, so the averaged gradient equals the
        # single-process one and the clustering must agree up to floating-point noise.
        assert two.metrics["acc"] == pytest.approx(one.metrics["acc"], abs=0.02), method
        assert set(one.metrics) == set(two.metrics)


def test_real_cora_through_the_cli(tmp_path: Path) -> None:
    data_root = shared_data_root("planetoid/Cora/raw")
    results = tmp_path / "results"
    assert main(["run", "dcagc", "--profile", "cpu", "--methods", "kmeans_smoothed,spectral_adjacency", "--seeds", "1",
                 "--data-dir", str(data_root), "--results", str(results), "--wandb", "disabled"]) == 0
    smoothed = read_record(results / "dcagc/Cora/kmeans_smoothed/cpu/seed-0.json")
    assert smoothed.ok and smoothed.metrics["clusters_found"] == 7
    assert 0.5 < smoothed.metrics["acc"] < 0.75  # SGC/AGC-style smoothing: about 0.6 on Cora
    spectral = read_record(results / "dcagc/Cora/spectral_adjacency/cpu/seed-0.json")
    assert spectral.metrics["acc"] < smoothed.metrics["acc"]  # Cora's 78 components defeat plain spectral
    assert not (data_root / "planetoid" / "Cora" / "processed").exists()  # the cache went to the results dir
    assert (results / "cache").is_dir()
