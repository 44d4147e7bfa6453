"""`litbench run --compile`: the method's module trains and tests under torch.compile, the option is
part of the config (another hash, another record), and the numbers match the eager run."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.cli import main
from leaderboard.records import RecordStore

FAST = ["--wandb", "disabled", "--profile", "smoke", "--methods", "linear", "--seeds", "1"]


@pytest.mark.slow
def test_a_compiled_run_records_the_option_and_matches_the_eager_run(toy_env, tmp_path: Path) -> None:
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    assert main(["run", "toy", "--results", str(eager), *FAST]) == 0
    assert main(["run", "toy", "--results", str(compiled), "--compile", *FAST]) == 0
    (eager_record,), (compiled_record,) = (list(RecordStore(folder).iter_records()) for folder in (eager, compiled))
    assert compiled_record.ok and compiled_record.config["litbench"]["compile"] is True
    assert "compile" not in eager_record.config["litbench"]  # other runs' hashes unchanged
    assert compiled_record.config_hash != eager_record.config_hash
    assert compiled_record.metrics["mse"] == pytest.approx(eager_record.metrics["mse"], rel=1e-4)
    assert compiled_record.cost["train_samples_per_s"] > 0
