"""`litbench run --dry-run`: what would run, be skipped or cannot run, and nothing runs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from benchmarks.cli import main
from benchmarks.dry_run import CANNOT_RUN, SKIPPED, WILL_RUN, plan_rows
from leaderboard.records import RecordStore

FAST = ["--wandb", "disabled", "--profile", "smoke"]


def test_a_dry_run_writes_nothing_and_counts_what_an_existing_record_skips(toy_env, tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    assert main(["run", "toy", "--methods", "linear", "--seeds", "1", "--results", str(results), *FAST]) == 0
    before = sorted(p.read_bytes() for p in RecordStore(results).paths())
    capsys.readouterr()
    assert main(["run", "toy", "--methods", "linear,mean", "--results", str(results), "--dry-run", *FAST]) == 0
    out = capsys.readouterr().out
    # linear seed 0 has an ok record (skipped); linear seed 1 and both mean seeds would run.
    assert "3 runs would run, 1 skipped" in out and "0 cannot run; nothing ran" in out
    assert sorted(p.read_bytes() for p in RecordStore(results).paths()) == before


def test_rows_group_seeds_per_method_and_name_each_data_problem() -> None:
    def plan(method: str, dataset: str, seed: int) -> SimpleNamespace:
        return SimpleNamespace(benchmark="b", dataset=dataset, method=method, run_id=f"b/{dataset}/{method}/full/seed-{seed}")

    plans = [plan("m", "ok", 0), plan("m", "ok", 1), plan("m", "gone", 0), plan("n", "gone", 0)]
    rows = plan_rows(plans, skipped_ids={"b/ok/m/full/seed-1"},
                     bad_data={"b/gone/m/full/seed-0": "b/gone: need x", "b/gone/n/full/seed-0": "b/gone: need x"})
    assert [(r["dataset"], r["method"], r[WILL_RUN], r[SKIPPED], r[CANNOT_RUN], r["problem"]) for r in rows] == [
        ("ok", "m", 1, 1, 0, ""), ("gone", "m", 0, 0, 1, "b/gone: need x"), ("gone", "n", 0, 0, 1, "b/gone: need x")]


def test_a_dry_run_of_the_full_suite_names_the_missing_dataset_and_its_fix(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "data"
    empty.mkdir()
    assert main(["run", "lrpet", "--profile", "full", "--methods", "dense", "--data-dir", str(empty),
                 "--results", str(tmp_path / "results"), "--wandb", "disabled", "--dry-run"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "cannot run: lrpet/cifar10: dataset cifar10: need cifar-10-batches-py" in out
    assert "0 runs would run, 0 skipped (an ok record with the same config exists), 3 cannot run" in out
    assert not (tmp_path / "results").exists() or not list(RecordStore(tmp_path / "results").paths())
