"""The RELIANT benchmark through the real CLI: the smoke profile in one process and under 2-process
DDP (teacher stage cached once per seed, manual optimisation with the proxy step), and a real-data
run of the German teacher read from ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.cli import main
from leaderboard.records import read_record
from tests_support import run_ddp_cli, shared_data_root

pytestmark = pytest.mark.slow  # real smoke runs of the benchmark (the fast tier skips them)

SMOKE = ["--profile", "smoke", "--wandb", "disabled", "--methods", "teacher_gcn,kd_plp,reliant_sp_plp"]
METRICS = {"acc", "auroc", "f1", "sp", "eo"}


@pytest.mark.ddp
def test_smoke_end_to_end_and_ddp_matches_one_process(tmp_path: Path) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert main(["run", "reliant", *SMOKE, "--results", str(single)]) == 0
    teacher_folders = list((single / "cache" / "stages").glob("teacher-*"))
    assert len(teacher_folders) == 1  # one teacher per (config, seed), shared by the three methods
    run_ddp_cli("reliant", SMOKE, results=ddp, timeout=600)
    for method in ("teacher_gcn", "kd_plp", "reliant_sp_plp"):
        one = read_record(single / f"reliant/fair-sbm-synthetic/{method}/smoke/seed-0.json")
        two = read_record(ddp / f"reliant/fair-sbm-synthetic/{method}/smoke/seed-0.json")
        assert one.ok and METRICS <= set(one.metrics), method
        assert two.hardware["world_size"] == 2 and one.hardware["world_size"] == 1
        # Both ranks train on the same full graph with the same seed, so the averaged gradient is the
        # single-process one: metrics agree up to floating-point noise (stated tolerance 0.02).
        for name in ("acc", "sp", "eo"):
            assert two.metrics[name] == pytest.approx(one.metrics[name], abs=0.02), (method, name)
    teacher = read_record(single / "reliant/fair-sbm-synthetic/teacher_gcn/smoke/seed-0.json")
    vanilla = read_record(single / "reliant/fair-sbm-synthetic/kd_plp/smoke/seed-0.json")
    assert teacher.metrics["acc"] > 0.7 and teacher.metrics["sp"] > 0.3  # the generated graph is biased
    assert vanilla.metrics["teacher_agreement"] > 0.7


def test_real_german_teacher_through_the_cli(tmp_path: Path) -> None:
    data_root = shared_data_root("fair_german/german.csv")
    results = tmp_path / "results"
    assert main(["run", "reliant", "--profile", "cpu", "--methods", "teacher_gcn", "--datasets", "German",
                 "--seeds", "1", "--data-dir", str(data_root),
                 "--results", str(results), "--wandb", "disabled"]) == 0
    record = read_record(results / "reliant/German/teacher_gcn/cpu/seed-0.json")
    assert record.ok and METRICS <= set(record.metrics)
    assert 0.6 < record.metrics["acc"] < 0.8  # 70 % of German's test nodes are positive
    assert not any((data_root / "fair_german").glob("*.pt"))  # nothing written beside the read-only data
