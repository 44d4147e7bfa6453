"""The CLI contract end to end on the toy benchmark: records, resume, exit codes, stages, DDP, kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.cli import main
from leaderboard.records import RecordStore, read_record

FAST = ["--wandb", "disabled", "--profile", "smoke"]
TOY_SPECS = Path(__file__).resolve().parents[1] / "toy" / "specs"


def records(results: Path) -> dict[str, dict]:
    return {str(p.relative_to(results)): json.loads(p.read_text()) for p in RecordStore(results).paths()}


def test_run_records_every_run_and_a_rerun_skips_them(toy_env, tmp_path: Path, capsys, monkeypatch) -> None:
    stage_log = tmp_path / "stage.log"
    monkeypatch.setenv("TOY_STAGE_LOG", str(stage_log))
    results = tmp_path / "results"
    assert main(["run", "toy", "--methods", "linear,mean,finetuned", "--results", str(results), *FAST]) == 0
    first = records(results)
    assert sorted(first) == sorted(f"toy/linear/{m}/smoke/seed-{s}.json" for m in ("linear", "mean", "finetuned") for s in (0, 1))
    record = first["toy/linear/linear/smoke/seed-0.json"]
    assert record["status"] == "ok" and record["metrics"]["mse"] > 0
    assert record["cost"]["params"] == 9 and record["cost"]["flops"] > 0 and record["cost"]["fit_s"] > 0
    assert record["config"]["trainer"]["max_epochs"] == 2 and record["software"]["torch"]
    # On CPU the ceiling is the run's own matmul probe; utilisation is the achieved rate over it.
    cost = record["cost"]
    assert cost["achieved_gflops"] == pytest.approx(cost["flops"] / 64 * cost["train_samples_per_s"] / 1e9)
    assert cost["probe_gflops"] > 0 and cost["mfu"] == pytest.approx(cost["achieved_gflops"] / cost["probe_gflops"])
    mean_cost = first["toy/linear/mean/smoke/seed-0.json"]["cost"]
    assert mean_cost["flops"] is None and mean_cost["mfu"] is None and mean_cost["probe_gflops"] is None  # nothing trained
    # The two-stage method trained its first stage once and reused it for the second seed.
    assert stage_log.read_text() == "pretrain\n"
    stages = [first[f"toy/linear/finetuned/smoke/seed-{s}.json"]["stages"]["pretrain"] for s in (0, 1)]
    assert [s["cache_hit"] for s in stages] == [False, True] and stages[0]["key"] == stages[1]["key"]
    built, reused = (first[f"toy/linear/finetuned/smoke/seed-{s}.json"]["cost"] for s in (0, 1))
    assert built["stage_s"] > reused["stage_s"] >= 0  # training the stage is timed apart from fit and overhead
    assert built["run_s"] >= built["stage_s"] + built["fit_s"] + built["eval_s"]
    assert built["cpu_s"] > reused["cpu_s"] > 0  # the process CPU time of the run, stage training included
    # The stage's own training was metered, and the run that reused it reports the same cost.
    assert stages[0]["cost"] == stages[1]["cost"] and stages[0]["cost"]["fit_s"] > 0
    assert stages[0]["cost"]["train_samples_per_s"] > 0 and stages[0]["cost"]["flops"] > 0

    # The run itself is recorded too: its wall time, what ran and the stage built once, reused once.
    (suite_path,) = (results / "perf" / "suite").glob("toy-smoke-*.json")
    suite = json.loads(suite_path.read_text())
    assert (suite["ran"], suite["skipped"], suite["failed"], suite["workers"]) == (6, 0, 0, 1)
    assert (suite["stages_built"], suite["stages_reused"]) == (1, 1) and suite["wall_s"] >= built["run_s"]
    toy = suite["per_benchmark"]["toy"]  # the resolved worker count, not "profile"
    assert (toy["ran"], toy["workers"], toy["stages_built"], toy["stages_reused"]) == (6, 1, 1, 1)
    assert suite["wall_s"] >= toy["wall_s"] >= built["run_s"] and toy["run_s"] >= built["run_s"]

    capsys.readouterr()
    assert main(["run", "toy", "--methods", "linear,mean,finetuned", "--results", str(results), *FAST]) == 0
    out = capsys.readouterr().out
    assert "0 to run, 6 skipped" in out
    assert len(list((results / "perf" / "suite").glob("*.json"))) == 1  # nothing ran: no suite record
    assert records(results) == first  # untouched
    assert stage_log.read_text() == "pretrain\n"

    # A changed hyper-parameter is a different config: only those runs run again.
    assert main(["run", "toy", "--methods", "linear", "--set", "trainer.max_epochs=3", "--results", str(results), *FAST]) == 0
    assert "2 to run, 0 skipped" in capsys.readouterr().out


def test_failed_run_is_recorded_and_the_suite_goes_on(toy_env, tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    assert main(["run", "toy", "--methods", "broken,linear", "--seeds", "1", "--results", str(results), *FAST]) == 1
    broken = read_record(results / "toy/linear/broken/smoke/seed-0.json")
    assert broken.status == "failed" and broken.error["type"] == "ValueError"
    assert "toy failure on purpose" in broken.error["message"]
    assert "training_step" in broken.error["traceback_tail"]
    assert read_record(results / "toy/linear/linear/smoke/seed-0.json").ok
    assert "1 ok, 1 failed" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["run", "nosuch"], "unknown benchmark 'nosuch'"),
    (["run", "toy", "--methods", "nosuch"], "has no method 'nosuch'"),
    (["run", "toy", "--datasets", "from-file"], "toy/from-file: toy dataset 'from-file' needs"),
    (["run", "toy", "--suite", "nosuch"], "unknown suite 'nosuch'"),
    (["run", "toy", "--data-dir", "/no/such/dir"], "--data-dir '/no/such/dir' is not a folder"),
    (["run", "toy", "--profile", "huge"], "invalid choice: 'huge'"),
    (["show", "toy/linear/linear/smoke/seed-9"], "no record 'toy/linear/linear/smoke/seed-9'"),
])
def test_bad_input_is_one_line_and_exit_2_and_keeps_records(toy_env, tmp_path: Path, capsys, argv, message) -> None:
    results = tmp_path / "results"
    assert main(["run", "toy", "--methods", "mean", "--seeds", "1", "--results", str(results), *FAST]) == 0
    before = records(results)
    capsys.readouterr()
    assert main([*argv, "--results", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("litbench: error:") and message in err and "\n" not in err
    assert records(results) == before


def test_malformed_spec_file_is_exit_2(toy_env, tmp_path: Path, monkeypatch, capsys) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "bad.yaml").write_text("name: bad\nmethods: [unclosed\n")
    monkeypatch.setenv("LITBENCH_SPECS_DIR", str(specs))
    assert main(["run", "bad"]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.yaml: malformed YAML at line 3" in err and "\n" not in err


def test_suite_show_and_fit(toy_env, tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    assert main(["run", "--suite", "smoke", "--results", str(results), "--wandb", "disabled"]) == 0
    assert sorted(records(results)) == sorted(f"toy/linear/{m}/smoke/seed-{s}.json" for m in ("linear", "mean") for s in (0, 1))
    capsys.readouterr()
    assert main(["show", "linear/smoke/seed-1", "--results", str(results), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["run_id"] == "toy/linear/linear/smoke/seed-1"
    # A record's config is a LightningCLI config: `fit` reproduces the run's metric exactly.
    import sys
    import warnings

    with warnings.catch_warnings(record=True) as caught:  # litbench's own argv is not LightningCLI's
        warnings.simplefilter("always")
        argv = sys.argv
        sys.argv = ["litbench", "fit", "--config", "x"]
        try:
            assert main(["fit", "--config", str(results / "toy/linear/linear/smoke/seed-1.json")]) == 0
        finally:
            sys.argv = argv
    assert not [w for w in caught if "args parameter" in str(w.message)]
    fitted = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert fitted["test/mse"] == pytest.approx(shown["metrics"]["mse"], rel=1e-5)


@pytest.mark.slow
def test_workers_give_the_same_records_as_sequential(toy_env, tmp_path: Path) -> None:
    sequential, parallel = tmp_path / "seq", tmp_path / "par"
    assert main(["run", "toy", "--methods", "linear,mean", "--results", str(sequential), *FAST]) == 0
    assert main(["run", "toy", "--methods", "linear,mean", "--results", str(parallel), "--workers", "2", *FAST]) == 0
    for name, record in records(sequential).items():
        assert records(parallel)[name]["metrics"]["mse"] == pytest.approx(record["metrics"]["mse"], rel=1e-6)


@pytest.mark.slow
def test_a_profile_sets_the_default_workers_and_stage_builders_go_first(toy_env, tmp_path: Path, monkeypatch) -> None:
    from benchmarks.launch import LaunchOptions, Launcher, plan_runs, stage_builders_first
    from benchmarks.spec import load_all_specs

    specs = load_all_specs()
    plans = plan_runs(specs, benchmarks=["toy"], profile="full", methods=["linear", "finetuned"])
    order = [(plan.method, plan.seed) for plan in stage_builders_first(plans)]
    # The one run that builds the shared (seed-independent) stage first, the rest in plan order.
    assert order == [("finetuned", 0), ("linear", 0), ("linear", 1), ("finetuned", 1)]
    assert Launcher(specs, LaunchOptions(results_dir=tmp_path, cache_dir=tmp_path)).workers_for(plans[0]) == 2
    assert Launcher(specs, LaunchOptions(results_dir=tmp_path, cache_dir=tmp_path, workers=1)).workers_for(plans[0]) == 1

    stage_log = tmp_path / "stage.log"
    monkeypatch.setenv("TOY_STAGE_LOG", str(stage_log))
    results = tmp_path / "results"
    assert main(["run", "toy", "--methods", "linear,finetuned", "--results", str(results),
                 "--wandb", "disabled", "--profile", "full"]) == 0
    # Worker processes (each run logs to its own file), and the stage was still built once.
    assert len(list((results / "logs").glob("toy__linear__*.log"))) == 4
    assert stage_log.read_text() == "pretrain\n"
    assert all(record["status"] == "ok" for record in records(results).values())


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_on_cpu_and_two_torchrun_nodes_give_the_same_result(toy_env, tmp_path: Path) -> None:
    single_node, two_nodes = tmp_path / "single", tmp_path / "nodes"
    common = ["run", "toy", "--methods", "linear", "--seeds", "1", "--strategy", "ddp", "--accelerator", "cpu", *FAST]
    done = subprocess.run([sys.executable, "-m", "benchmarks", *common, "--devices", "2", "--results", str(single_node)],
                          env=toy_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    # two "nodes" on 127.0.0.1, one process each, launched by torchrun as a cluster without SLURM would
    port = free_port()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                               "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
                               "-m", "benchmarks", *common, "--num-nodes", "2", "--devices", "1",
                               "--results", str(two_nodes)],
                              env=toy_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    outputs = [node.communicate(timeout=400)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(output[-3000:] for output in outputs)
    for seed in (0,):
        one = read_record(single_node / f"toy/linear/linear/smoke/seed-{seed}.json")
        two = read_record(two_nodes / f"toy/linear/linear/smoke/seed-{seed}.json")
        assert one.hardware["world_size"] == two.hardware["world_size"] == 2
        assert two.hardware["num_nodes"] == 2 and two.config["trainer"]["num_nodes"] == 2
        # the same two ranks see the same shards and average the same gradients: equal to float precision
        assert two.metrics["mse"] == pytest.approx(one.metrics["mse"], rel=1e-5)
    assert not any(p.name.endswith(".failed.json") for p in two_nodes.rglob("*.json"))  # rank 1 wrote nothing


@pytest.mark.slow
def test_sigkill_mid_suite_loses_no_finished_record(toy_env, tmp_path: Path) -> None:
    results = tmp_path / "results"
    argv = [sys.executable, "-m", "benchmarks", "run", "toy", "--methods", "linear", "--seeds", "6",
            "--set", "trainer.max_epochs=150", "--results", str(results), *FAST]
    process = subprocess.Popen(argv, env=toy_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(RecordStore(results).paths()) < 2:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = records(results)
    assert 2 <= len(finished) < 6, "the suite should have been killed part-way"
    assert all(r["status"] == "ok" for r in finished.values())  # every file readable, none partial
    done = subprocess.run(argv, env=toy_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{6 - len(finished)} to run, {len(finished)} skipped" in done.stdout.replace("\n", " ")
    after = records(results)
    assert len(after) == 6
    assert all(after[name] == record for name, record in finished.items())


def test_leaderboard_command_writes_the_four_files_with_a_verdict(toy_env, tmp_path: Path, capsys) -> None:
    results, out = tmp_path / "results", tmp_path / "board"
    assert main(["run", "toy", "--methods", "linear,mean", "--results", str(results), *FAST]) == 0
    assert main(["leaderboard", "--results", str(results), "--out", str(out), "--wandb", "disabled"]) == 0
    assert {p.name for p in out.iterdir()} >= {"LEADERBOARD.md", "index.html", "results.csv", "claims.csv"}
    claims = (out / "claims.csv").read_text().splitlines()
    assert claims[0].startswith("benchmark,dataset,profile,claim,metric,method,baseline,n,diff_mean,ci_low,ci_high,verdict")
    row = dict(zip(claims[0].split(","), claims[1].split(",")))
    assert (row["claim"], row["n"], row["verdict"]) == ("beats-mean", "2", "reproduced")
    assert len((out / "results.csv").read_text().splitlines()) == 1 + 4


def test_wandb_offline_run_carries_name_config_tags_and_metrics(toy_env, tmp_path: Path) -> None:
    results = tmp_path / "results"
    assert main(["run", "toy", "--methods", "linear", "--seeds", "1", "--profile", "smoke", "--wandb", "offline",
                 "--results", str(results)]) == 0
    (run_dir,) = (results / "wandb").glob("offline-run-*")
    inspected = subprocess.run(["wandb", "leet", "inspect", "--summary", "--json", str(run_dir)],
                               capture_output=True, text=True, timeout=120)
    summary = json.loads(inspected.stdout)
    record = read_record(results / "toy/linear/linear/smoke/seed-0.json")
    assert summary["name"] == "linear/linear/seed-0" and summary["project"] == "litbench"
    assert set(summary["tags"]) == {"toy", "linear", "proposed", "smoke"}
    assert summary["config"]["litbench"]["benchmark"] == "toy"
    assert summary["summary"]["test/mse"] == pytest.approx(record.metrics["mse"])
    assert summary["summary"]["cost/params"] == 9


@pytest.mark.slow
def test_slurm_launcher_through_submitit_local_executor(toy_env, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LITBENCH_SLURM_CLUSTER", "local")
    results = tmp_path / "results"
    assert main(["run", "toy", "--methods", "linear,broken", "--seeds", "1", "--launcher", "slurm",
                 "--results", str(results), *FAST]) == 1
    assert read_record(results / "toy/linear/linear/smoke/seed-0.json").ok
    assert read_record(results / "toy/linear/broken/smoke/seed-0.json").error["type"] == "ValueError"
    assert len(list((results / "slurm").glob("*_submitted.pkl"))) == 2


def test_profile_include_methods_selects_and_methods_flag_wins(toy_env) -> None:
    from benchmarks.launch import plan_runs
    from benchmarks.spec import load_all_specs

    specs = load_all_specs()
    planned = {plan.method for plan in plan_runs(specs, benchmarks=["toy"], profile="cpu")}
    assert planned == {"linear", "mean"}
    assert {p.method for p in plan_runs(specs, benchmarks=["toy"], profile="cpu", methods=["broken"])} == {"broken"}
    assert {p.method for p in plan_runs(specs, benchmarks=["toy"], profile="smoke")} == {"linear", "finetuned", "mean", "broken"}


def test_methods_flag_spans_several_benchmarks(toy_env, tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    assert main(["run", "toy", "toy2", "--methods", "mean", "--results", str(results), *FAST]) == 0
    assert sorted(records(results)) == ["toy/linear/mean/smoke/seed-0.json", "toy/linear/mean/smoke/seed-1.json"]
    assert main(["run", "toy", "toy2", "--methods", "nosuch", "--results", str(results), *FAST]) == 2
    assert "nothing to run: no selected benchmark has the methods nosuch" in capsys.readouterr().err


def test_corrupt_record_stops_the_run_and_is_kept(toy_env, tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    assert main(["run", "toy", "--methods", "mean", "--seeds", "1", "--results", str(results), *FAST]) == 0
    path = results / "toy/linear/mean/smoke/seed-0.json"
    path.write_text('{"schema": "litbench.run-record/1", "trunc')
    capsys.readouterr()
    assert main(["run", "toy", "--methods", "mean", "--seeds", "1", "--results", str(results), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert "seed-0.json: not valid JSON" in err and "--force" in err and "\n" not in err
    assert path.read_text() == '{"schema": "litbench.run-record/1", "trunc'
    assert main(["show", "toy/linear/mean/smoke/seed-0", "--results", str(results)]) == 2
    # --force is the documented way out: the run is redone and the record is whole again.
    assert main(["run", "toy", "--methods", "mean", "--seeds", "1", "--force", "--results", str(results), *FAST]) == 0
    assert read_record(path).ok


def test_leaderboard_writes_what_it_can_then_exits_2_on_a_corrupt_record(toy_env, tmp_path: Path, capsys) -> None:
    results, out = tmp_path / "results", tmp_path / "board"
    assert main(["run", "toy", "--methods", "mean", "--seeds", "2", "--results", str(results), *FAST]) == 0
    assert main(["leaderboard", "--results", str(results), "--out", str(out), "--wandb", "disabled"]) == 0
    path = results / "toy/linear/mean/smoke/seed-0.json"
    path.write_text("{not json")
    capsys.readouterr()
    assert main(["leaderboard", "--results", str(results), "--out", str(out), "--wandb", "disabled"]) == 2
    err = capsys.readouterr().err.strip()
    assert "seed-0.json: not valid JSON" in err and "--force" in err and "\n" not in err
    assert path.read_text() == "{not json"  # kept for the user to inspect
    board = (out / "LEADERBOARD.md").read_text()
    assert "seed-0.json" in board  # the page lists the problem, and the readable record is still shown
    assert (out / "results.csv").read_text().count("\ntoy,") == 1


def test_run_artifacts_are_published_next_to_the_record_and_survive_a_failed_rerun(toy_env, tmp_path: Path) -> None:
    results, cache = tmp_path / "results", tmp_path / "cache"
    common = ["run", "toy", "--methods", "linear", "--seeds", "1", "--results", str(results), "--cache-dir", str(cache),
              "--set", "model.init_args.write_artifact=true", *FAST]
    assert main(common) == 0
    record = read_record(results / "toy/linear/linear/smoke/seed-0.json")
    assert record.artifacts == ["toy/linear/linear/smoke/seed-0.artifacts/weights.txt"]
    written = (results / record.artifacts[0]).read_text()
    assert len(written.split()) == 8  # one weight per toy feature

    assert main([*common, "--set", "model.init_args.fail_in_test=true"]) == 1
    assert read_record(results / "toy/linear/linear/smoke/seed-0.json").artifacts == record.artifacts
    assert (results / record.artifacts[0]).read_text() == written
    assert not any((cache / "artifacts-staging").iterdir())  # nothing staged is left behind
    assert len(RecordStore(results).paths()) == 1  # the artifacts folder is not mistaken for records


@pytest.mark.slow
def test_a_run_past_its_timeout_is_recorded_failed_and_the_suite_goes_on(toy_env, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TOY_SLEEP_S", "600")  # every linear training step sleeps; the mean baseline does not train
    results = tmp_path / "results"
    argv = ["run", "toy", "--methods", "linear,mean", "--seeds", "1", "--results", str(results), "--timeout", "60", *FAST]
    assert main(argv) == 1  # the 600 s training step was cut at 60 s, not waited for
    failed = read_record(results / "toy/linear/linear/smoke/seed-0.json")
    assert failed.status == "failed" and failed.error["type"] == "Timeout"
    assert "timed out after 60 s" in failed.error["message"]
    assert read_record(results / "toy/linear/mean/smoke/seed-0.json").ok


@pytest.mark.slow
def test_a_run_killed_like_by_the_oom_killer_is_recorded_failed(toy_env, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TOY_SIGKILL_SELF", "1")
    results = tmp_path / "results"
    argv = ["run", "toy", "--methods", "linear,mean", "--seeds", "1", "--results", str(results), "--timeout", "300", *FAST]
    assert main(argv) == 1
    failed = read_record(results / "toy/linear/linear/smoke/seed-0.json")
    assert failed.status == "failed" and "SIGKILL" in failed.error["message"]
    assert read_record(results / "toy/linear/mean/smoke/seed-0.json").ok


@pytest.mark.parametrize("value", ["0", "-3", "soon"])
def test_timeout_must_be_positive_seconds(value: str) -> None:
    assert main(["run", "toy", "--timeout", value]) == 2


def test_slurm_parameters_become_the_sbatch_lines_lightning_needs(toy_env) -> None:
    import submitit
    from submitit.slurm.slurm import _make_sbatch_string

    from benchmarks.launch import slurm_parameters
    from benchmarks.resolve import resolve_run
    from benchmarks.spec import load_all_specs

    plan = resolve_run(load_all_specs()["toy"], method="linear", dataset="linear", profile="smoke", seed=0,
                       hardware={"accelerator": "gpu", "devices": 4, "num_nodes": 2, "strategy": "ddp"})
    generic = slurm_parameters(plan, {"partition": "gpu", "account": "proj", "time_min": 30})
    # the names submitit's AutoExecutor translates for SLURM (timeout_min -> time, ...)
    names = submitit.SlurmExecutor._equivalence_dict()
    sbatch_args = {names.get(key, key.removeprefix("slurm_")): value for key, value in generic.items()}
    script = _make_sbatch_string("python -m benchmarks.runner job.json", "/tmp/litbench-slurm", **sbatch_args)
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu", "--account=proj",
                 "--time=30", "--job-name=toy/linear/linear/smoke/seed-0"):
        assert f"#SBATCH {line}\n" in script
    assert slurm_parameters(plan, {"gpus_per_node": 8})["gpus_per_node"] == 8


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_killing_a_suite_also_stops_its_running_worker(toy_env, tmp_path: Path, monkeypatch, how) -> None:
    import psutil

    monkeypatch.setenv("TOY_SLEEP_S", "600")  # the run would train for ten minutes
    argv = [sys.executable, "-m", "benchmarks", "run", "toy", "--methods", "linear", "--seeds", "1", "--timeout", "900",
            "--results", str(tmp_path / "results"), *FAST]
    suite = subprocess.Popen(argv, env={**toy_env, "TOY_SLEEP_S": "600"}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    def command_line(process: psutil.Process) -> str:
        try:
            return " ".join(process.cmdline())
        except psutil.NoSuchProcess:  # a short-lived child (e.g. git) that exited, or is a zombie, meanwhile
            return ""

    deadline = time.time() + 120
    workers: list = []
    while time.time() < deadline and not workers:
        workers = [child for child in psutil.Process(suite.pid).children(recursive=True)
                   if "benchmarks.runner" in command_line(child)]
        time.sleep(0.2)
    assert workers, "the run should be executing in a worker process"
    time.sleep(2)  # let the worker get past its start-up
    os.kill(suite.pid, how)
    suite.wait(timeout=60)
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, "a killed suite must not leave its run training as an orphan"


def test_a_broken_spec_stops_only_its_own_benchmark(toy_env, tmp_path: Path, monkeypatch, capsys) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    for name in ("toy.yaml", "toy2.yaml"):
        (specs / name).write_text((TOY_SPECS / name).read_text())
    (specs / "toy2.yaml").write_text("name: toy2\nmethods: [unclosed\n")
    monkeypatch.setenv("LITBENCH_SPECS_DIR", str(specs))
    results = tmp_path / "results"
    # Every benchmark selected: toy runs, toy2 is reported in one line, exit 2.
    assert main(["run", "--methods", "mean", "--seeds", "1", "--results", str(results), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert "toy2.yaml" in err and "the other benchmarks ran" in err and "\n" not in err
    assert sorted(records(results)) == ["toy/linear/mean/smoke/seed-0.json"]
    # Both named: the good one runs, the broken one is reported.
    assert main(["run", "toy", "toy2", "--methods", "mean", "--seeds", "1", "--force", "--results", str(results), *FAST]) == 2
    assert "toy2.yaml" in capsys.readouterr().err
    assert sorted(records(results)) == ["toy/linear/mean/smoke/seed-0.json"]
    # Only the good one named: the broken file is none of its business.
    assert main(["run", "toy", "--methods", "mean", "--seeds", "1", "--results", str(results), *FAST]) == 0
    # Only the broken one named: a usage error, nothing run.
    assert main(["run", "toy2", "--results", str(results), *FAST]) == 2
    assert "toy2.yaml" in capsys.readouterr().err


def test_leaderboard_builds_past_a_broken_spec_and_exits_2(toy_env, tmp_path: Path, monkeypatch, capsys) -> None:
    results, out = tmp_path / "results", tmp_path / "board"
    assert main(["run", "toy", "--methods", "linear,mean", "--seeds", "2", "--results", str(results), *FAST]) == 0
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "toy.yaml").write_text("name: toy\nclaims: {unclosed\n")
    monkeypatch.setenv("LITBENCH_SPECS_DIR", str(specs))
    capsys.readouterr()
    assert main(["leaderboard", "--results", str(results), "--out", str(out), "--wandb", "disabled"]) == 2
    assert "toy.yaml" in capsys.readouterr().err
    # The claim is still judged, from the spec snapshot that every record carries.
    assert "beats-mean" in (out / "claims.csv").read_text()


def test_a_worker_pool_starts_the_longest_expected_runs_first(toy_env, tmp_path: Path) -> None:
    """Stage builders still go first; then, with every run's time known from its previous record
    (a missing one takes its method's median), the longest first, so no long run starts last."""
    from benchmarks.launch import expected_seconds, plan_runs, stage_builders_first
    from benchmarks.spec import load_all_specs
    from leaderboard.records import RecordStore, RunRecord

    specs = load_all_specs()
    plans = plan_runs(specs, benchmarks=["toy"], profile="full", methods=["linear", "finetuned"])
    store = RecordStore(tmp_path)
    seconds = {("linear", 0): 5.0, ("linear", 1): 50.0, ("finetuned", 0): 1.0}  # finetuned seed 1: no record
    for plan in plans:
        if (plan.method, plan.seed) in seconds:
            store.write(RunRecord(benchmark=plan.benchmark, method=plan.method, role="proposed", dataset=plan.dataset,
                                  profile=plan.profile, seed=plan.seed, status="failed", config={}, config_hash="old",
                                  cost={"run_s": seconds[(plan.method, plan.seed)]}))
    expected = expected_seconds(plans, store)
    assert sorted(expected.values()) == [1.0, 1.0, 5.0, 50.0]  # finetuned seed 1 takes finetuned's median
    order = [(plan.method, plan.seed) for plan in stage_builders_first(plans, expected)]
    assert order == [("finetuned", 0), ("linear", 1), ("linear", 0), ("finetuned", 1)]
    # Nothing known about a method: the plan order (after the stage builders), as before.
    assert expected_seconds(plans, RecordStore(tmp_path / "empty")) == {}
