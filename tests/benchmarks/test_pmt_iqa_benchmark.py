"""The PMT-IQA benchmark through the real CLI: the smoke profile for every arm in one process
(records, metric sanity, arms that differ only where intended, resume), a real database without its
images (exit 2, one line), and 2-process DDP against 1 process (the gathered test metrics)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.cli import main
from leaderboard.records import read_record
from tests_support import run_ddp_cli, shared_data_root

pytestmark = pytest.mark.slow  # real smoke runs of the benchmark (the fast tier skips them)

SMOKE = ["--profile", "smoke", "--wandb", "disabled"]
RECORD = "pmt_iqa/generated/{method}/smoke/seed-0.json"
METHODS = ("pmt_iqa", "single_task_regression", "no_multiscale", "fixed_weights")


def test_smoke_every_arm_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("LITBENCH_NUM_THREADS", "1")
    results = tmp_path / "results"
    assert main(["run", "pmt_iqa", *SMOKE, "--results", str(results)]) == 0
    records = {method: read_record(results / RECORD.format(method=method)) for method in METHODS}
    for record in records.values():
        assert record.ok and set(record.metrics) == {"srcc", "plcc", "plcc_logistic", "params_m"}
        assert -1 <= record.metrics["srcc"] <= 1 and -1 <= record.metrics["plcc"] <= 1
        # the logistic family contains every linear map: its PLCC is never below |raw PLCC|
        assert record.metrics["plcc_logistic"] >= abs(record.metrics["plcc"]) - 1e-6
        assert record.config["data"]["init_args"]["dataset"] == "generated"
    params = {method: record.metrics["params_m"] for method, record in records.items()}
    # fixed weights change only the loss; C4-only drops the MS branches (keeping MS's 28-d C4 branch);
    # single-task drops MS and the grade head
    assert params["fixed_weights"] == params["pmt_iqa"]
    assert params["no_multiscale"] < params["pmt_iqa"] and params["single_task_regression"] < params["pmt_iqa"]
    assert records["no_multiscale"].config["model"]["init_args"]["last_stage_dim"] == 28
    assert records["pmt_iqa"].config["data"]["init_args"]["split_seed"] is None  # one content split per seed
    assert records["fixed_weights"].config["model"]["init_args"]["schedule"] == "fixed"
    assert records["pmt_iqa"].config["model"]["init_args"]["schedule"] == "progressive"
    # same config again: every run is skipped, nothing is overwritten
    capsys.readouterr()
    assert main(["run", "pmt_iqa", *SMOKE, "--results", str(results)]) == 0
    assert "4 skipped" in capsys.readouterr().out
    assert read_record(results / RECORD.format(method="pmt_iqa")).run_id == records["pmt_iqa"].run_id


def test_database_without_images_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = shared_data_root("iqa_scores")
    code = main(["run", "pmt_iqa", *SMOKE, "--datasets", "CSIQ", "--data-dir", str(root), "--results", str(tmp_path)])
    assert code == 2
    assert "image folder CSIQ/ not found" in capsys.readouterr().err
    assert not (tmp_path / "pmt_iqa").exists()


@pytest.mark.ddp
def test_ddp_gathers_the_same_test_metrics_as_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Untrained (max_epochs 0) so both runs score with identical seeded weights: the 50 smoke test
    # images are split 25/25 over the ranks and the correlations must come from the gathered
    # predictions of both, equal to the single-process values up to float noise.
    monkeypatch.setenv("LITBENCH_NUM_THREADS", "1")
    args = [*SMOKE, "--methods", "pmt_iqa", "--set", "trainer.max_epochs=0"]
    assert main(["run", "pmt_iqa", *args, "--results", str(tmp_path / "single")]) == 0
    run_ddp_cli("pmt_iqa", args, results=tmp_path / "ddp", timeout=400)
    one = read_record(tmp_path / "single" / RECORD.format(method="pmt_iqa"))
    two = read_record(tmp_path / "ddp" / RECORD.format(method="pmt_iqa"))
    assert one.hardware["world_size"] == 1 and two.hardware["world_size"] == 2
    for name in ("srcc", "plcc", "plcc_logistic", "params_m"):
        assert two.metrics[name] == pytest.approx(one.metrics[name], abs=1e-5), name
