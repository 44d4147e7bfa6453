"""The EMO benchmark through the real CLI: the smoke profile in one process and under 2-process DDP
(same global batch), judged by the leaderboard's claim machinery."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.cli import main
from leaderboard.records import read_record
from tests_support import assert_ddp_record_matches, run_ddp_cli

pytestmark = pytest.mark.slow  # real smoke runs of the benchmark (the fast tier skips them)

METHODS = "emo_1m,mobilevit_xxs"
SMOKE = ["--profile", "smoke", "--wandb", "disabled", "--methods", METHODS]
RECORD = "emo/generated/{method}/smoke/seed-0.json"


@pytest.mark.ddp
def test_smoke_one_process_then_ddp(tmp_path: Path) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert main(["run", "emo", *SMOKE, "--results", str(single)]) == 0
    emo = read_record(single / RECORD.format(method="emo_1m"))
    mobilevit = read_record(single / RECORD.format(method="mobilevit_xxs"))
    # Smoke runs EMO-1M/2 (halved widths) in the 32² geometry: 327,510 parameters at 10 classes.
    assert emo.metrics["params_m"] == pytest.approx(0.32751, abs=1e-6)
    assert mobilevit.metrics["params_m"] == pytest.approx(0.954234, abs=1e-6)
    assert emo.metrics["macs_m"] < mobilevit.metrics["macs_m"]
    assert {"top1", "params_m", "macs_m", "throughput"} <= set(emo.metrics)
    assert 0.0 <= emo.metrics["top1"] <= 1.0 and emo.metrics["throughput"] > 0

    # DDP with half the per-device batch: the same 64 images per optimiser step and the same schedule.
    run_ddp_cli("emo", [*SMOKE, "--set", "data.init_args.batch_size=32"], results=ddp, timeout=1500)
    for method in METHODS.split(","):
        # Different shuffles, augmentations and BN batches (32 per rank) after 4 steps: the test
        # accuracies (torchmetrics, synced over ranks) agree only loosely; 0.2 is the stated
        # tolerance (chance is 0.1). Architecture numbers do not depend on the world size.
        assert_ddp_record_matches(read_record(single / RECORD.format(method=method)),
                                  read_record(ddp / RECORD.format(method=method)), top1_tolerance=0.2)

    # The leaderboard judges the MAC claim from the records (deterministic: identical over seeds).
    out = tmp_path / "board"
    assert main(["leaderboard", "--results", str(single), "--out", str(out), "--wandb", "disabled"]) == 0
    claims = (out / "claims.csv").read_text()
    assert "fewer-macs-than-mobilevit" in claims
