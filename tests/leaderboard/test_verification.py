"""Verification records on the leaderboard: the latest per benchmark as a table, claim notes when
the re-run spread exceeds the detectable effect, a corrupt record as a problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leaderboard.build import build_leaderboard
from leaderboard.records import CorruptRecordError, VerificationRecord, verification_path, write_json_atomic

SPEC = {"metrics": {"primary": "acc", "higher_is_better": {"acc": True}},
        "claims": [{"id": "beats-km", "text": "beats k-means", "metric": "acc", "method": "ours", "baseline": "km"}]}
MACHINE = {"hardware": {"cpu": "Other CPU", "cores": 8, "gpu_names": []}, "software": {"torch": "2.14.1"},
           "torch_threads": 1}


def verification(*, created_at: str, spread: float, identical: bool) -> VerificationRecord:
    run = {"run_id": "b/Cora/ours/cpu/seed-0", "method": "ours", "dataset": "Cora", "seed": 0, "config_hash": "h",
           "code_changed_files": 0, "status": "ok", "error": None, "identical": identical, "max_abs_diff": {"acc": 0.0 if identical else spread},
           "original": {"metrics": {}, "finished_at": "", "git_sha": None}, "rerun": {"metrics": {}, "run_s": 1.0, "stages_reused": []},
           "twice": {"identical": True, "max_abs_diff": {"acc": 0.0}}}
    claim = {"claim": "beats-km", "dataset": "Cora", "profile": "cpu", "metric": "acc", "verdict_original": "reproduced",
             "verdict_rerun": "reproduced", "equal": True, "detectable": 0.01, "spread": spread}
    return VerificationRecord(benchmark="b", profile="cpu", created_at=created_at, command="litbench verify b",
                              sample={"per_benchmark": 2, "seed": 0, "twice": True}, machine=MACHINE,
                              original_machines=[{"hardware": {"cpu": "Test CPU", "cores": 2}, "software": {"torch": "2.14.1"},
                                                  "runs": 1}],
                              runs=[run], skipped=[], spread={"acc": spread}, claims=[claim], timed_metrics=[])


@pytest.fixture
def board(results_dir: Path, write_run) -> Path:
    # paired improvements 0.10, 0.12, 0.11: detectable (half-width) about 0.025
    for seed, (ours, km) in enumerate([(0.80, 0.70), (0.82, 0.70), (0.81, 0.70)]):
        write_run(benchmark="b", method="ours", role="proposed", seed=seed, metrics={"acc": ours}, spec=SPEC)
        write_run(benchmark="b", method="km", role="baseline", seed=seed, metrics={"acc": km}, spec=SPEC)
    return results_dir


def write(results_dir: Path, record: VerificationRecord, stamp: str) -> None:
    write_json_atomic(verification_path(results_dir, benchmark=record.benchmark, profile=record.profile, stamp=stamp),
                      record.to_dict())


def test_latest_verification_is_shown_and_a_large_spread_is_noted_on_the_claim(board: Path, tmp_path: Path) -> None:
    write(board, verification(created_at="2026-12-01T00:00:00+00:00", spread=0.0, identical=True), "20261201T000000")
    write(board, verification(created_at="2026-12-02T00:00:00+00:00", spread=0.2, identical=False), "20261202T000000")
    paths = build_leaderboard(board, tmp_path / "out", specs={"b": SPEC})
    markdown = paths["markdown"].read_text()
    section = markdown[markdown.index("Verification (committed records re-run)"):]
    rows = [line for line in section.splitlines() if line.startswith("| b |")]
    assert len(rows) == 1  # the latest only
    assert "| 0 / 1 |" in rows[0] and "acc 0.2 (b/Cora/ours/cpu/seed-0)" in rows[0] and "Other CPU, 8 cores" in rows[0]
    assert "Test CPU, 2 cores" in rows[0] and "1 / 1 identical" in rows[0] and "changed code" not in rows[0]
    claim_line = next(line for line in markdown.splitlines() if line.startswith("| beats-km"))
    assert "re-run spread 0.2 > detectable 0.025" in claim_line
    assert "re-run spread 0.2 &gt; detectable" in paths["html"].read_text()


def test_a_spread_within_the_detectable_effect_adds_no_note(board: Path, tmp_path: Path) -> None:
    write(board, verification(created_at="2026-12-02T00:00:00+00:00", spread=0.001, identical=False), "20261202T000000")
    markdown = build_leaderboard(board, tmp_path / "out", specs={"b": SPEC})["markdown"].read_text()
    claim_line = next(line for line in markdown.splitlines() if line.startswith("| beats-km"))
    assert "re-run spread" not in claim_line and "Verification (committed records re-run)" in markdown


def test_a_corrupt_verification_record_is_a_problem_not_a_crash(board: Path, tmp_path: Path) -> None:
    path = verification_path(board, benchmark="b", profile="cpu", stamp="20261202T000000")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"schema": "litbench.verification-record/1", "benchmark": "b"}))
    markdown = build_leaderboard(board, tmp_path / "out", specs={"b": SPEC})["markdown"].read_text()
    assert "verification fields differ from the schema" in markdown
    assert "Verification (committed records re-run)" not in markdown


def test_timed_metrics_and_changed_code_are_told_apart() -> None:
    from leaderboard.verification import verification_row

    record = verification(created_at="t", spread=0.0, identical=True)
    record.runs[0]["max_abs_diff"]["throughput"] = 40.0  # images/s: measured, not computed
    record.runs[0]["code_changed_files"] = 3
    record.timed_metrics = ["throughput"]
    row = verification_row(record)
    assert row[2] == "1" and row[4] == "0" and row[7] == "1 on changed code"


def test_the_schema_round_trips_and_rejects_wrong_types() -> None:
    record = verification(created_at="t", spread=0.1, identical=False)
    assert VerificationRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    with pytest.raises(CorruptRecordError, match="field 'runs' must be list"):
        VerificationRecord.from_dict({**record.to_dict(), "runs": {}})
