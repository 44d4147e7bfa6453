"""litbench perf parity: the hand-written loop reproduces Lightning's losses step for step, and the
measurement lands in a perf record (times are recorded, never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.cli import main
from benchmarks.perf.parity import _optimizers


def test_parity_on_the_toy_benchmark_gives_equal_losses_and_a_perf_record(toy_env, tmp_path: Path) -> None:
    assert main(["perf", "parity", "toy", "linear", "--epochs", "2", "--repeats", "2", "--results", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "perf/parity/toy-linear-linear-smoke.json").read_text())
    assert record["schema"] == "litbench.perf-record/1" and record["kind"] == "parity"
    # 128 training points, batch 64 -> 2 shuffled steps per epoch, 2 epochs
    assert record["steps"] == 4 and record["epochs"] == 2
    assert record["losses_equal_5_decimals"] and record["max_loss_diff"] < 5e-6
    assert len(record["lightning_runs"]) == len(record["plain_runs"]) == 2
    # one paired ratio per repeat, each run's first epoch left out: 2 repeats x 1 timed epoch a side
    lightning, plain = record["lightning_runs"], record["plain_runs"]
    pair_ratios = [lightning[0][1] / plain[0][1], lightning[1][1] / plain[1][1]]
    assert record["pair_ratios"] == pytest.approx(pair_ratios)
    assert record["ratio"] == pytest.approx((pair_ratios[0] * pair_ratios[1]) ** 0.5)  # their geometric mean
    from benchmarks.perf.parity import goal_verdict

    low, high = record["ratio_ci"]
    assert low <= record["ratio"] <= high and record["goal"] == goal_verdict((low, high))
    # the same epochs in CPU seconds: positive, one per epoch, paired the same way
    lightning_cpu, plain_cpu = record["lightning_cpu_runs"], record["plain_cpu_runs"]
    assert [len(run) for run in lightning_cpu + plain_cpu] == [2] * 4 and min(map(min, lightning_cpu + plain_cpu)) > 0
    expected = (lightning_cpu[0][1] / plain_cpu[0][1] * lightning_cpu[1][1] / plain_cpu[1][1]) ** 0.5
    assert record["cpu_ratio"] == pytest.approx(expected)
    assert record["cpu_goal"] == goal_verdict(tuple(record["cpu_ratio_ci"]))
    assert record["software"]["torch"] and record["hardware"]["cpu"]


def test_the_parity_goal_is_judged_from_the_paired_ratio_interval() -> None:
    from benchmarks.perf.parity import goal_verdict, paired_ratio

    plain = [1.00, 1.01, 0.99, 1.02, 0.98, 1.00]
    ratio, same = paired_ratio([1.00, 1.01, 0.99, 1.00, 1.01, 0.99], plain)
    assert ratio == pytest.approx(1.0, abs=0.01) and same[0] < 1.0 < same[1] and same[1] - same[0] < 0.05
    assert goal_verdict(same) == "met"
    ratio, slow = paired_ratio([1.20, 1.22, 1.18, 1.21, 1.19, 1.20], plain)
    assert 1.1 < slow[0] < ratio < slow[1] < 1.25 and goal_verdict(slow) == "not met"
    ratio, noisy = paired_ratio([0.8, 1.3, 1.0, 1.25, 0.85, 1.1], plain)  # ±20%: the interval spans 1.05
    assert noisy[0] < 1.05 < noisy[1] and goal_verdict(noisy) == "inconclusive"
    # The machine slows down 2x half-way and both sides of every pair with it: pooled epochs would
    # span 1-2 s a side, but each pair's ratio is 1.02, and so is the interval.
    drifting_plain = [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    ratio, drift = paired_ratio([1.02 * s for s in drifting_plain], drifting_plain)
    assert ratio == pytest.approx(1.02) and drift == pytest.approx((1.02, 1.02)) and goal_verdict(drift) == "met"
    assert paired_ratio([1.1], [1.0]) == (pytest.approx(1.1), None) and goal_verdict(None) == "inconclusive"
    assert paired_ratio([1.0, 1.1], plain[:2]) == paired_ratio([1.0, 1.1], plain[:2])  # seeded
    with pytest.raises(ValueError, match="as many Lightning as plain"):
        paired_ratio([1.0, 1.1], plain)


def test_optimizer_forms_are_read_like_lightning_reads_them() -> None:
    import torch

    class Module:
        def __init__(self, returned):
            self.returned = returned

        def configure_optimizers(self):
            return self.returned

    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    assert _optimizers(Module(optimizer)) == (optimizer, None, "epoch")
    assert _optimizers(Module({"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}})) \
        == (optimizer, scheduler, "step")
    assert _optimizers(Module(([optimizer], [scheduler]))) == (optimizer, scheduler, "epoch")


def test_perf_parity_rejects_an_unknown_benchmark(toy_env) -> None:
    assert main(["perf", "parity", "nope", "linear"]) == 2


def test_parity_records_show_on_the_leaderboard_and_corrupt_ones_are_problems(toy_env, tmp_path: Path) -> None:
    from leaderboard.build import build_leaderboard

    assert main(["perf", "parity", "toy", "linear", "--epochs", "1", "--repeats", "1", "--results", str(tmp_path)]) == 0
    (tmp_path / "perf/parity/broken.json").write_text("{")
    (tmp_path / "perf/parity/old.json").write_text(json.dumps({"schema": "litbench.perf-record/0", "benchmark": "toy"}))
    record_cpu_ratio = f'{json.loads((tmp_path / "perf/parity/toy-linear-linear-smoke.json").read_text())["cpu_ratio"]:.3f}'
    paths = build_leaderboard(tmp_path, tmp_path / "out")
    markdown = paths["markdown"].read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| toy | linear | linear | smoke |"))
    # one epoch a side: no interval, so neither goal can be judged
    assert [cell.strip() for cell in row.split("|")[8:12]] == ["inconclusive", record_cpu_ratio, "inconclusive", "yes"]
    assert "broken.json: unreadable perf record" in markdown
    assert "old.json: unreadable perf record (ValueError)" in markdown  # a record of another schema is not read
    assert "Lightning vs a hand-written loop" in paths["html"].read_text()


def test_suite_records_show_their_wall_time_on_the_leaderboard(tmp_path: Path) -> None:
    from benchmarks.perf.records import write_perf_record
    from leaderboard.build import build_leaderboard

    write_perf_record(tmp_path, kind="suite", name="toy-cpu-1", payload={
        "benchmarks": ["toy"], "profile": "cpu", "ran": 6, "failed": 1, "skipped": 2, "workers": 2,
        "stages_built": 3, "stages_reused": 15, "wall_s": 743.04, "load_before": [0.4, 0.9, 1.0], "load_after": [2.1, 2.0, 1.5]})
    markdown = build_leaderboard(tmp_path, tmp_path / "out")["markdown"].read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| toy | cpu |"))
    assert [cell.strip() for cell in row.split("|")[3:9]] == ["12 min 23.0 s", "6 / 2 / 1", "2", "3 / 15", "—",
                                                             "0.4 → 2.1"]


def test_suite_tally_splits_a_suite_run_per_benchmark() -> None:
    """Per benchmark: the span from its first run's start to its last run's end (parallel workers
    overlap, so the span is below the summed run seconds), its counts and its resolved worker count."""
    from benchmarks.perf.suite import SuiteTally

    now = [100.0]
    tally = SuiteTally(profile="cpu", clock=lambda: now[0])
    for benchmark, workers, skipped in (("a", 1, False), ("a", 1, True), ("b", 2, False), ("b", 2, False)):
        tally.plan(benchmark, workers=workers, skipped=skipped)
    now[0] = 110.0
    tally.finished("a", ok=True, seconds=10.0, stage_hits=[False])
    now[0] = 140.0  # b's two runs ran side by side: 25 s and 30 s, both ending here
    tally.finished("b", ok=True, seconds=30.0, stage_hits=[False])
    tally.finished("b", ok=False, seconds=25.0, stage_hits=[True])
    payload = tally.payload()
    assert payload["per_benchmark"]["a"] == {"ran": 1, "failed": 0, "skipped": 1, "workers": 1, "wall_s": 10.0,
                                             "run_s": 10.0, "stages_built": 1, "stages_reused": 0}
    assert payload["per_benchmark"]["b"] == {"ran": 2, "failed": 1, "skipped": 0, "workers": 2, "wall_s": 30.0,
                                             "run_s": 55.0, "stages_built": 1, "stages_reused": 1}
    assert (payload["ran"], payload["failed"], payload["skipped"], payload["workers"], payload["wall_s"]) == (3, 1, 1, "mixed", 40.0)
    assert (payload["stages_built"], payload["stages_reused"]) == (2, 1)


def test_a_multi_benchmark_suite_record_shows_a_row_per_benchmark_and_the_total(tmp_path: Path) -> None:
    from benchmarks.perf.records import write_perf_record
    from leaderboard.build import build_leaderboard

    part = {"ran": 3, "failed": 0, "skipped": 0, "workers": 1, "stages_built": 0, "stages_reused": 0}
    write_perf_record(tmp_path, kind="suite", name="2-benchmarks-smoke-1", payload={
        "benchmarks": ["a", "b"], "profile": "smoke", "ran": 6, "failed": 0, "skipped": 0, "workers": 1,
        "stages_built": 0, "stages_reused": 0, "wall_s": 95.0, "load_before": [0.1], "load_after": [1.0],
        "per_benchmark": {"a": {**part, "wall_s": 30.0, "run_s": 29.0}, "b": {**part, "wall_s": 61.0, "run_s": 60.0}}})
    (tmp_path / "perf" / "suite" / "broken.json").write_text("{not json")
    markdown = build_leaderboard(tmp_path, tmp_path / "out")["markdown"].read_text()
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[3:8]]
            for line in markdown.splitlines() if "| smoke |" in line}
    assert rows["a"] == ["0 min 30.0 s", "3 / 0 / 0", "1", "0 / 0", "a run of 2 (1 min 35.0 s)"]
    assert rows["b"][0] == "1 min 01.0 s" and rows["all 2"][:2] == ["1 min 35.0 s", "6 / 0 / 0"]
    assert "broken.json: unreadable perf record (JSONDecodeError); delete it or rerun the `litbench run`" in markdown


def test_device_check_smoke_step_runs_bf16_autocast_and_prints_the_rates_it_recorded(toy_env, tmp_path: Path, capsys) -> None:
    """The device check's smoke-bf16 step, restricted to one benchmark, on CPU (bf16 autocast works
    there too): runs recorded at bf16-mixed, and the printed table is the records' samples/s."""
    from benchmarks.perf.gpu_check import main as gpu_check_main
    from leaderboard.records import RecordStore

    # exit 1: the toy benchmark's `broken` method fails on purpose; the others are recorded
    assert gpu_check_main(["toy", "--only", "smoke-bf16", "--accelerator", "cpu", "--results", str(tmp_path)]) == 1
    assert {record.benchmark for record in RecordStore(tmp_path).iter_records()} == {"toy"}
    records = [record for record in RecordStore(tmp_path).iter_records() if record.method != "broken"]
    assert records and all(record.status == "ok" and record.config["trainer"]["precision"] == "bf16-mixed"
                           for record in records)
    printed = capsys.readouterr().out.splitlines()
    trained = next(record for record in records if record.cost.get("train_samples_per_s"))
    rates = [record.cost["train_samples_per_s"] for record in records if record.method == trained.method]
    line = next(line for line in printed if line.split()[:3] == ["smoke-bf16", trained.benchmark, trained.method])
    assert line.split()[6] == f"{sum(rates) / len(rates):.1f}"  # the mean of that method's records
    assert line.split()[4:6] == [str(len(rates)), "0"]  # this method's runs: all ok, none failed
    # No GPU peak on CPU: the ceiling is the run's matmul probe.
    assert trained.cost["mfu"] == pytest.approx(trained.cost["achieved_gflops"] / trained.cost["probe_gflops"])




def test_openmp_waits_passively_unless_the_user_says_otherwise() -> None:
    import os
    import subprocess
    import sys

    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    # importing the harness changes nothing; the command line's process set-up does
    imported = [sys.executable, "-c", "import benchmarks.cli, os; print(os.environ.get('OMP_WAIT_POLICY'))"]
    assert subprocess.run(imported, capture_output=True, text=True, env=env).stdout.strip() == "None"
    probe = [sys.executable, "-c", "from benchmarks.process import configure_process; import os; "
                                   "configure_process(); print(os.environ['OMP_WAIT_POLICY'])"]
    assert subprocess.run(probe, capture_output=True, text=True, env=env).stdout.strip() == "PASSIVE"
    assert subprocess.run(probe, capture_output=True, text=True, env={**env, "OMP_WAIT_POLICY": "ACTIVE"}).stdout.strip() == "ACTIVE"


def test_parity_records_from_before_cpu_time_show_a_dash() -> None:
    from leaderboard.perf_tables import PARITY_HEADER, _parity_row

    old = {"benchmark": "emo", "method": "emo_1m", "dataset": "cifar10-jpg", "profile": "cpu", "lightning_epoch_s": 2.05,
           "plain_epoch_s": 2.0, "ratio": 1.025, "ratio_ci": [0.87, 1.12], "goal": "inconclusive",
           "losses_equal_5_decimals": True, "steps": 48, "measured_at": "2026-12-02T14:00:00"}
    row = dict(zip(PARITY_HEADER, _parity_row(old)))
    assert row["ratio [95% CI]"] == "1.025 [0.870, 1.120]" and row["CPU-time ratio [95% CI]"] == "—"
    assert row["CPU-time goal"] == "—"


def test_parity_pairs_run_in_counterbalanced_order(monkeypatch) -> None:
    from benchmarks.perf import parity

    calls = []

    def fake_fit(side: str):
        def fit(config, *, epochs):
            calls.append(side)
            return parity.LoopResult(losses=[0.5] * epochs, epoch_seconds=[1.0] * epochs, epoch_cpu_seconds=[1.0] * epochs)
        return fit

    monkeypatch.setattr(parity, "lightning_fit", fake_fit("L"))
    monkeypatch.setattr(parity, "plain_fit", fake_fit("P"))
    result = parity.compare({}, epochs=2, repeats=4)
    assert calls == ["L", "P", "P", "L", "L", "P", "P", "L"]  # a linear drift cancels over two pairs
    assert result.pair_ratios == [1.0] * 4 and result.ratio == pytest.approx(1.0)


def _git_repo_with_two_versions(root: Path, module: str, before: str, after: str) -> str:
    """A git repository holding ``module``.py: ``before`` committed, ``after`` in the work tree; returns the commit."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (root / f"{module}.py").write_text(before)
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "before")
    (root / f"{module}.py").write_text(after)
    return git("rev-parse", "HEAD")





def test_perf_step_times_the_methods_own_step_counts_its_flops_and_shows_on_the_leaderboard(
        toy_env, tmp_path: Path, monkeypatch, capsys) -> None:
    """The toy step sleeps 40 ms inside training_step, so the clock must read >= 40 ms per step; its
    FLOPs are the 8 -> 1 linear layer's: forward addmm 2 x 64 x 8 and the weight gradient 2 x 64 x 8
    (the input needs no gradient), 2,048 per step of 64 samples."""
    from leaderboard.build import build_leaderboard

    monkeypatch.setenv("TOY_SLEEP_S", "0.04")
    assert main(["perf", "step", "toy", "linear", "--profile", "smoke", "--modes", "eager", "--warmup", "1",
                 "--steps", "3", "--profiled-steps", "1", "--top", "3", "--results", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "perf/step/toy-linear-linear-smoke.json").read_text())
    eager = record["modes"]["eager"]
    assert list(record["modes"]) == ["eager"] and record["compile_speedup"] is None
    assert eager["steps"] == 3 and eager["samples"] == 3 * 64 and eager["ms_per_step"] >= 40.0
    assert eager["flops_per_step"] == 2 * (2 * 64 * 8)
    assert eager["achieved_gflops"] == pytest.approx(2048 * 3 / eager["seconds"] / 1e9)
    assert 1 <= len(eager["top_ops"]) <= 3 and all("#" not in name for name, _ in eager["top_ops"])
    assert record["probe_gflops"] > 0 and "ms/step" in capsys.readouterr().out
    markdown = build_leaderboard(tmp_path, tmp_path / "out")["markdown"].read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| toy | linear | smoke |"))
    assert row.split("|")[5].strip() == f"{eager['ms_per_step']:.1f}" and row.split("|")[6].strip() == "—"


@pytest.mark.parametrize(("argv", "message"), [
    (["toy", "finetuned"], "trains on top of its stage(s) pretrain"),
    (["toy", "finetuned", "--stage", "nope"], "has no stage 'nope' (stages: pretrain)"),
    (["toy", "linear", "--modes", "jit"], "--modes 'jit'"),
])
def test_perf_step_bad_input_is_one_line_and_exit_2(toy_env, tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    assert main(["perf", "step", *argv, "--profile", "smoke", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and not (tmp_path / "perf").exists()


def test_perf_step_measures_a_stage(toy_env, tmp_path: Path) -> None:
    assert main(["perf", "step", "toy", "finetuned", "--stage", "pretrain", "--profile", "smoke", "--modes", "eager",
                 "--warmup", "1", "--steps", "2", "--profiled-steps", "0", "--results", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "perf/step/toy-finetuned-pretrain-linear-smoke.json").read_text())
    assert record["measured"] == "finetuned (stage pretrain)" and record["modes"]["eager"]["steps"] == 2
    assert record["modes"]["eager"]["top_ops"] == []  # no profiled steps, no operator list


def test_perf_step_compiled_mode_reuses_the_eager_flop_count(toy_env, tmp_path: Path) -> None:
    assert main(["perf", "step", "toy", "linear", "--profile", "smoke", "--warmup", "2", "--steps", "2",
                 "--profiled-steps", "1", "--results", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "perf/step/toy-linear-linear-smoke.json").read_text())
    eager, compiled = record["modes"]["eager"], record["modes"]["compiled"]
    assert compiled["flops_per_step"] == eager["flops_per_step"] == 2048 and compiled["steps"] == 2
    assert record["compile_speedup"] == pytest.approx(eager["ms_per_step"] / compiled["ms_per_step"])
    annotations = ("dynamo_timed", "Torch-Compiled Region", "TorchDynamo Cache Lookup", "CompiledFunction", "#")
    assert not any(text in name for name, _ in compiled["top_ops"] for text in annotations)
