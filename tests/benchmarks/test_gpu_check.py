"""The prepared device check (`python -m benchmarks.perf.gpu_check`): every step resolves to valid
runs with the shared data, and its summary is read from the records it wrote."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.perf.gpu_check import STEPS, format_summary, main, summary_rows
from leaderboard.records import RecordStore, RunRecord
from tests_support import shared_data_root


@pytest.mark.slow
def test_every_step_of_the_device_check_resolves_and_finds_its_data(tmp_path: Path, capsys) -> None:
    """On CPU, `--dry-run` goes through what a GPU run checks first (configs against the classes'
    signatures, `--set` keys, stage names, each dataset's files): a typo or a renamed method fails here."""
    data = shared_data_root("planetoid")
    assert main(["--accelerator", "cpu", "--dry-run", "--data-dir", str(data), "--results", str(tmp_path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("0 cannot run; nothing ran") == len(STEPS)
    assert "9 runs would run" in out  # DCAGC, k-means, smoothed k-means on Cora x 3 seeds
    assert not list(RecordStore(tmp_path).paths())


def test_the_summary_averages_each_methods_runs_and_counts_failures(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "throughput")
    for seed, (status, rate, gflops, mfu) in enumerate([("ok", 900.0, 300.0, 0.30), ("ok", 1100.0, 500.0, 0.50),
                                                        ("failed", None, None, None)]):
        store.write(RunRecord(benchmark="emo", method="emo_1m", role="proposed", dataset="generated", profile="full",
                              seed=seed, status=status, config={}, config_hash="0" * 16,
                              cost={"train_samples_per_s": rate, "achieved_gflops": gflops, "mfu": mfu} if rate else {}))
    (row,) = summary_rows(tmp_path, [step for step in STEPS if step.name == "throughput"])
    assert (row["ok"], row["failed"]) == (2, 1)
    assert format_summary([row]).splitlines()[1].split() == ["throughput", "emo", "emo_1m", "generated", "2", "1",
                                                            "1000.0", "400.0", "40.0%"]


def test_every_step_runs_on_one_device_at_its_precision(tmp_path: Path) -> None:
    argv = STEPS[0].argv(accelerator="gpu", results=tmp_path, data_dir="/data", dry_run=False)
    assert argv[:4] == ["run", "--profile", "smoke", "--accelerator"] and "--dry-run" not in argv
    assert {step.precision for step in STEPS[:2]} == {"32-true", "bf16-mixed"}
    for step in STEPS:
        argv = step.argv(accelerator="gpu", results=tmp_path, data_dir="/data", dry_run=True)
        assert argv[argv.index("--devices") + 1] == "1" and argv[argv.index("--results") + 1] == str(tmp_path / step.name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_smoke_steps_run_on_the_gpu_without_a_failed_run(tmp_path: Path) -> None:
    assert main(["--only", "smoke-fp32", "smoke-bf16", "--results", str(tmp_path),
                 "--data-dir", str(shared_data_root("planetoid"))]) == 0
