"""`litbench verify` on the toy benchmark's smoke profile: a changed record is reported as changed,
an identical one as identical, the committed folder stays byte-identical, bad input exits 2."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from benchmarks.cli import main
from benchmarks.verify import metric_differences, stratified_sample
from leaderboard.records import RunRecord, read_verification

FAST = ["--wandb", "disabled", "--profile", "smoke"]


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and "verify" not in p.relative_to(root).parts}


@pytest.fixture
def committed(toy_env, tmp_path: Path) -> Path:
    """Two smoke records of the toy's mean baseline (deterministic: the mean of fixed data)."""
    results = tmp_path / "results"
    assert main(["run", "toy", "--methods", "mean", "--results", str(results), *FAST]) == 0
    return results


def edit_record(path: Path, change) -> None:
    payload = json.loads(path.read_text())
    change(payload)
    path.write_text(json.dumps(payload, indent=2))


def test_verify_reports_a_changed_record_as_changed_and_leaves_the_records_alone(committed: Path, capsys) -> None:
    seed1 = committed / "toy/linear/mean/smoke/seed-1.json"
    original_mse = json.loads(seed1.read_text())["metrics"]["mse"]
    edit_record(seed1, lambda payload: payload["metrics"].update(mse=original_mse + 0.25))
    before = digest(committed)

    assert main(["verify", "toy", "--profile", "smoke", "--all", "--results", str(committed)]) == 0

    assert digest(committed) == before  # the committed records (the edited one too) are untouched
    (path,) = (committed / "verify" / "toy").glob("smoke-*.json")
    verification = read_verification(path)
    runs = {run["run_id"]: run for run in verification.runs}
    assert runs["toy/linear/mean/smoke/seed-0"]["identical"] is True
    assert runs["toy/linear/mean/smoke/seed-0"]["max_abs_diff"] == {"mse": 0.0}
    changed = runs["toy/linear/mean/smoke/seed-1"]
    assert changed["identical"] is False
    assert changed["max_abs_diff"]["mse"] == pytest.approx(0.25)
    assert changed["rerun"]["metrics"]["mse"] == pytest.approx(original_mse)
    assert verification.spread["mse"] == pytest.approx(0.25)
    # both machines are named: the re-run's from this process, the originals' from their records
    assert verification.machine["hardware"]["cores"] and verification.machine["software"]["torch"]
    assert verification.original_machines[0]["runs"] == 2
    assert isinstance(changed["code_changed_files"], int)  # files the run executes changed since its commit
    assert "1 / 2" in capsys.readouterr().out  # one of two bit-identical in the printed table


def test_verify_judges_claims_with_the_reruns_in_place(toy_env, tmp_path: Path) -> None:
    results = tmp_path / "results"
    assert main(["run", "toy", "--methods", "linear,mean", "--results", str(results), *FAST]) == 0
    # an original that made the linear model look worse than the mean on one seed: the claim's
    # verdict from the committed records differs from the one with its honest re-run
    edit_record(results / "toy/linear/linear/smoke/seed-0.json", lambda payload: payload["metrics"].update(mse=50.0))
    assert main(["verify", "toy", "--profile", "smoke", "--all", "--results", str(results), "--twice"]) == 0
    (path,) = (results / "verify" / "toy").glob("smoke-*.json")
    verification = read_verification(path)
    (claim,) = verification.claims
    assert claim["claim"] == "beats-mean" and claim["verdict_original"] != claim["verdict_rerun"]
    rerun_mse = next(run["rerun"]["metrics"]["mse"] for run in verification.runs
                     if run["run_id"] == "toy/linear/linear/smoke/seed-0")
    assert claim["equal"] is False and claim["spread"] == pytest.approx(50.0 - rerun_mse)
    # --twice: a second run here of the same config; mse is deterministic on one machine
    assert all(run["twice"]["max_abs_diff"]["mse"] == 0.0 for run in verification.runs)


def test_stages_are_rebuilt_unless_a_cache_is_given(toy_env, tmp_path: Path) -> None:
    results = tmp_path / "results"
    assert main(["run", "toy", "--methods", "finetuned", "--seeds", "1", "--results", str(results), *FAST]) == 0
    reused = {}
    for label, extra in (("fresh", []), ("cache", ["--cache-dir", str(results / "cache")])):
        assert main(["verify", "toy", "--profile", "smoke", "--all", "--results", str(results), *extra]) == 0
        newest = max((results / "verify" / "toy").glob("smoke-*.json"), key=lambda path: read_verification(path).created_at)
        (run,) = read_verification(newest).runs
        reused[label] = run["rerun"]["stages_reused"]
        for path in (results / "verify" / "toy").glob("*.json"):
            path.unlink()  # one verification per second; keep the next one apart
    assert reused == {"fresh": [], "cache": ["pretrain"]}


def test_a_record_whose_config_no_longer_matches_its_hash_is_skipped(committed: Path) -> None:
    edit_record(committed / "toy/linear/mean/smoke/seed-0.json",
                lambda payload: payload["config"]["trainer"].update(max_epochs=7))
    assert main(["verify", "toy", "--profile", "smoke", "--all", "--results", str(committed)]) == 0
    (path,) = (committed / "verify" / "toy").glob("smoke-*.json")
    verification = read_verification(path)
    assert [run["run_id"] for run in verification.runs] == ["toy/linear/mean/smoke/seed-1"]
    assert verification.skipped[0]["run_id"] == "toy/linear/mean/smoke/seed-0"
    assert "hashes to" in verification.skipped[0]["reason"]


def test_a_committed_record_changed_by_another_process_withholds_that_verification(committed: Path, capsys,
                                                                                  monkeypatch) -> None:
    import benchmarks.runner

    target = committed / "toy/linear/mean/smoke/seed-0.json"
    execute_run = benchmarks.runner.execute_run

    def execute_while_someone_writes(config, **kwargs):
        target.write_text(target.read_text() + " ")
        return execute_run(config, **kwargs)

    monkeypatch.setattr(benchmarks.runner, "execute_run", execute_while_someone_writes)
    assert main(["verify", "toy", "--profile", "smoke", "--all", "--results", str(committed)]) == 1
    err = capsys.readouterr().err
    assert "seed-0.json changed while verify re-ran toy" in err and "not written" in err
    assert not (committed / "verify").exists()


@pytest.mark.parametrize("argv, message", [
    (["verify", "nosuch", "--profile", "smoke"], "unknown benchmark 'nosuch'"),
    (["verify", "toy2", "--profile", "smoke"], "no ok records of 'toy2' in profile 'smoke'"),
    (["verify", "toy", "--profile", "cpu"], "no ok records of 'toy' in profile 'cpu'"),
    (["verify", "toy", "--profile", "smoke", "--sample", "0"], "--sample must be at least 1"),
])
def test_bad_input_is_one_line_and_exit_2(committed: Path, capsys, argv: list[str], message: str) -> None:
    before = digest(committed)
    assert main([*argv, "--results", str(committed)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("litbench: error: ") and message in err and "\n" not in err
    assert digest(committed) == before and not (committed / "verify").exists()


def test_no_results_folder_is_a_usage_error(toy_env, tmp_path: Path, capsys) -> None:
    assert main(["verify", "toy", "--profile", "smoke", "--results", str(tmp_path / "none")]) == 2
    assert "no results folder" in capsys.readouterr().err


def _record(method: str, seed: int, dataset: str = "d") -> RunRecord:
    return RunRecord(benchmark="b", method=method, role="baseline", dataset=dataset, profile="cpu", seed=seed,
                     status="ok", config={}, config_hash="h")


def test_the_sample_is_seeded_and_takes_methods_in_turn() -> None:
    records = [_record(method, seed) for method in ("a", "b", "c") for seed in range(3)]
    first = stratified_sample(records, per_benchmark=3, seed=0)
    assert sorted(record.method for record in first) == ["a", "b", "c"]  # one per method before any second
    assert [r.run_id for r in first] == [r.run_id for r in stratified_sample(records, per_benchmark=3, seed=0)]
    assert len(stratified_sample(records, per_benchmark=None, seed=0)) == 9
    assert len(stratified_sample(records, per_benchmark=5, seed=0)) == 5


def test_metric_differences() -> None:
    assert metric_differences({"acc": 0.5}, {"acc": 0.5}) == (True, {"acc": 0.0})
    assert metric_differences({"acc": 0.5}, {"acc": 0.25}) == (False, {"acc": 0.25})
    assert metric_differences({"acc": 0.5, "nmi": 0.1}, {"acc": 0.5}) == (False, {"acc": 0.0, "nmi": None})
    assert metric_differences({"acc": None}, {"acc": None}) == (True, {"acc": 0.0})
    # a wall-clock measurement differs run to run; it is reported, not held against identity
    assert metric_differences({"top1": 0.5, "throughput": 100.0}, {"top1": 0.5, "throughput": 120.0}) == (
        True, {"throughput": 20.0, "top1": 0.0})
