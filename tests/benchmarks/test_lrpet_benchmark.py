"""The LRPET benchmark through the real CLI: the smoke profile in one process (the dense stage is
trained once and shared by two arms) and under 2-process DDP (identical replicas after every
projection, the same factorised network). Reading the shared CIFAR-10 JPEGs is the datamodule's
(tests/datamodules); the cpu profile's records are the real-data end-to-end check."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.cli import main
from leaderboard.records import read_record
from tests_support import assert_ddp_record_matches, run_ddp_cli

pytestmark = pytest.mark.slow  # real smoke runs of the benchmark (the fast tier skips them)

METHODS = "lrpet,dense,svd_truncate"
DDP_METHODS = "lrpet,svd_truncate"
SMOKE = ["--profile", "smoke", "--wandb", "disabled", "--methods", METHODS]
RECORD = "lrpet/generated/{method}/smoke/seed-0.json"


@pytest.mark.ddp
def test_smoke_one_process_then_ddp(tmp_path: Path) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert main(["run", "lrpet", *SMOKE, "--results", str(single)]) == 0
    lrpet = read_record(single / RECORD.format(method="lrpet"))
    dense = read_record(single / RECORD.format(method="dense"))
    truncated = read_record(single / RECORD.format(method="svd_truncate"))
    # Smoke: 256 images / batch 64 = 4 steps per epoch, 2 epochs, a projection every 2 steps.
    assert lrpet.metrics["projections"] == 4
    # The tested network is the exact factorisation of the last projection.
    assert lrpet.metrics["top1"] == pytest.approx(lrpet.metrics["top1_projected"], abs=1 / 128 + 1e-9)
    # ResNet-8 at p=0.7: the factorised net has the truncated net's size, about 1/3 of the dense one.
    assert lrpet.metrics["params_m"] == pytest.approx(truncated.metrics["params_m"], rel=1e-6)
    assert 0.25 < lrpet.metrics["macs_m"] / dense.metrics["macs_m"] < 0.40
    # dense and svd_truncate consume one cached dense stage: trained for the first, reused by the second.
    assert dense.stages["dense"]["key"] == truncated.stages["dense"]["key"]
    assert [dense.stages["dense"]["cache_hit"], truncated.stages["dense"]["cache_hit"]] == [False, True]

    # DDP with half the per-device batch: the same 64 images per optimiser step, the same 8 steps.
    # Two of the three arms (each DDP run is its own 2-process job): LRPET, and the cached dense
    # stage built under DDP then truncated.
    run_ddp_cli("lrpet", [*SMOKE[:-1], DDP_METHODS, "--set", "data.init_args.batch_size=32"], results=ddp, timeout=600)
    for method in DDP_METHODS.split(","):
        # Different shuffles and BN batches (32 per rank): after 8 steps on generated data the
        # accuracies agree only loosely; 0.2 is the stated tolerance (chance is 0.1).
        assert_ddp_record_matches(read_record(single / RECORD.format(method=method)),
                                  read_record(ddp / RECORD.format(method=method)), top1_tolerance=0.2)
    lrpet_ddp = read_record(ddp / RECORD.format(method="lrpet"))
    assert lrpet_ddp.metrics["projections"] == 4
    # Every parameter and BN buffer equal on both ranks after the last projection (bit for bit).
    assert lrpet_ddp.metrics["replica_divergence"] == 0.0
    assert lrpet_ddp.metrics["top1"] == pytest.approx(lrpet_ddp.metrics["top1_projected"], abs=1 / 128 + 1e-9)
