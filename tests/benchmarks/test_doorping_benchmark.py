"""The DOORPING benchmark through the real CLI: the smoke profile in one process (records, stage
reuse, distilled-image grids) and under 2-process DDP (same numbers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.cli import main
from leaderboard.records import read_record
from tests_support import run_cli_in_subprocess, run_ddp_cli

pytestmark = pytest.mark.slow  # real smoke runs of the benchmark (the fast tier skips them)

SMOKE = ["--profile", "smoke", "--wandb", "disabled"]
METRICS = {"cta", "cta_std", "asr", "asr_std", "asr_nontarget", "asr_nontarget_std", "trigger_max",
           "trigger_updates", "trigger_adam_steps"}


def _record(results: Path, method: str):
    return read_record(results / f"doorping/generated/{method}/smoke/seed-0.json")


def test_smoke_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITBENCH_NUM_THREADS", "1")
    results = tmp_path / "results"
    assert main(["run", "doorping", *SMOKE, "--methods", "doorping,static_patch,clean_dc", "--results", str(results)]) == 0
    doorping, static, clean = (_record(results, m) for m in ("doorping", "static_patch", "clean_dc"))
    for record in (doorping, static, clean):
        assert record.ok and set(record.metrics) == METRICS
        assert 0 <= record.metrics["asr_nontarget"] <= 1 and 0 <= record.metrics["cta"] <= 1
        assert record.stages["distill"]["cache_hit"] is False
        assert any(path.endswith(".png") for path in record.artifacts)
    # smoke: 2 iterations x (outer_loop 2 - 1) trigger updates; the static patch never moves
    assert doorping.metrics["trigger_updates"] == 2 and static.metrics["trigger_updates"] == 0
    assert any("distilled_doorping.png" in path for path in doorping.artifacts)
    assert any("distilled_clean.png" in path for path in clean.artifacts)
    # a rerun with --force reuses the cached per-seed distillation
    assert main(["run", "doorping", *SMOKE, "--methods", "clean_dc", "--results", str(results), "--force"]) == 0
    again = _record(results, "clean_dc")
    assert again.stages["distill"]["cache_hit"] is True and again.metrics["cta"] == pytest.approx(clean.metrics["cta"])


@pytest.mark.ddp
def test_smoke_ddp_matches_one_process(tmp_path: Path) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    args = [*SMOKE, "--methods", "doorping"]
    run_cli_in_subprocess("doorping", args, results=single, timeout=400, threads=1)
    run_ddp_cli("doorping", args, results=ddp, timeout=400, threads=1)
    one, two = _record(single, "doorping"), _record(ddp, "doorping")
    assert one.hardware["world_size"] == 1 and two.hardware["world_size"] == 2
    # Every rank runs the same seeded distillation, the evaluation nets see the same synthetic
    # batches on both ranks (the averaged gradient equals the single-process one) and the test set is
    # sharded with summed counters: the numbers agree up to floating-point noise.
    for name in ("cta", "asr", "asr_nontarget"):
        assert two.metrics[name] == pytest.approx(one.metrics[name], abs=0.02), name
    assert two.metrics["trigger_updates"] == one.metrics["trigger_updates"]


def test_dm_extension_smoke_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITBENCH_NUM_THREADS", "1")
    results = tmp_path / "results"
    assert main(["run", "doorping_dm", *SMOKE, "--methods", "doorping,clean_dm", "--results", str(results)]) == 0
    doorping, clean = (read_record(results / f"doorping_dm/generated/{m}/smoke/seed-0.json") for m in ("doorping", "clean_dm"))
    for record in (doorping, clean):
        assert record.ok and set(record.metrics) == METRICS
        assert record.config["litbench"]["stages"][0]["model"]["init_args"]["backend"] == "dm"
    # DM: one trigger update per iteration (3 smoke iterations), none for the clean arm
    assert doorping.metrics["trigger_updates"] == 3 and clean.metrics["trigger_updates"] == 0
    assert any("distilled_doorping.png" in path for path in doorping.artifacts)
