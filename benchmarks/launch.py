"""Plan and schedule many runs: in-process, a local pool of worker processes, or SLURM (submitit).

Every run is skipped when its record exists with the same config hash and status ok (``force``
reruns). Runs that need their own process — DDP (Lightning re-executes the current command once per
rank), ``--workers N`` and SLURM — are executed as ``python -m benchmarks.runner JOB.json``; a
worker that dies without writing a record (killed, out of memory, segfault) is recorded as failed
with the tail of its log, and the suite carries on. With ``timeout_s`` every run gets its own process
and one that runs past it is killed (with its DDP ranks) and recorded as failed.

Multi-node without SLURM: start the same ``litbench run ... --num-nodes N --devices D`` on every node
under ``torchrun --nnodes N --nproc-per-node D --node-rank K --master-addr HOST --master-port P``.
Every rank walks the same plan list; each run's subprocess inherits the rank's environment (Lightning
picks it up as a TorchElastic environment) on a fresh per-run port, and only global rank 0 writes.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from benchmarks.resolve import RunPlan, check_stage_sets, resolve_run
from benchmarks.spec import BenchmarkSpec, SpecError
from leaderboard.records import STATUS_FAILED, CorruptRecordError, RecordStore, RunRecord, failed_path, read_record, utc_now


class DataError(SpecError):
    """A planned dataset that is missing or unreadable (reported before any run starts)."""


@dataclass
class LaunchOptions:
    results_dir: Path
    cache_dir: Path
    launcher: str = "local"
    workers: int | None = None  # parallel run processes; None: each benchmark profile's `workers` (default 1)
    force: bool = False
    wandb_mode: str = "offline"
    wandb_project: str = "litbench"
    slurm: dict[str, Any] = field(default_factory=dict)
    timeout_s: float | None = None  # per run; a run past it is killed and recorded as failed


def _check_importable(class_path: str, where: str) -> None:
    module_name, _, attribute = class_path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(f"{where}: cannot import {module_name!r} for class_path {class_path!r} ({exc})") from None
    if not hasattr(module, attribute):
        raise SpecError(f"{where}: {module_name!r} has no {attribute!r} (class_path {class_path!r})")


def plan_runs(specs: dict[str, BenchmarkSpec], *, benchmarks: list[str], profile: str, methods: list[str] | None = None,
              datasets: list[str] | None = None, seeds: int | None = None, sets: list[str] | tuple[str, ...] = (),
              hardware: dict[str, Any] | None = None, data_dir: str | None = None,
              cache_dir: str | None = None, evaluate_on: str = "test") -> list[RunPlan]:
    """Every (benchmark, dataset, method, seed) selected, resolved and validated, before anything runs."""
    unknown = [name for name in benchmarks if name not in specs]
    if unknown:
        raise SpecError(f"unknown benchmark {unknown[0]!r} (known: {', '.join(sorted(specs)) or 'none'}); "
                        "`litbench list` shows them")
    plans: list[RunPlan] = []
    for name in benchmarks:
        spec = specs[name]
        if profile not in spec.profiles:
            raise SpecError(f"benchmark {name!r} has no profile {profile!r} (it has: {', '.join(spec.profiles)})")
        chosen_methods = methods or spec.profiles[profile].include_methods or list(spec.methods)
        missing = [m for m in chosen_methods if m not in spec.methods]
        if missing:
            raise SpecError(f"benchmark {name!r} has no method {missing[0]!r} (it has: {', '.join(spec.methods)})")
        _check_importable(spec.data.class_path, f"{spec.path}: data")
        for method in chosen_methods:
            _check_importable(spec.methods[method].class_path, f"{spec.path}: methods.{method}")
            for stage in spec.methods[method].stages:
                _check_importable(stage.class_path, f"{spec.path}: methods.{method}.stages.{stage.name}")
        seed_count = seeds or spec.profiles[profile].seeds
        for dataset in datasets or spec.datasets_for(profile):
            for method in chosen_methods:
                for seed in range(seed_count):
                    plans.append(resolve_run(spec, method=method, dataset=dataset, profile=profile, seed=seed,
                                             hardware=hardware, sets=sets, data_dir=data_dir, cache_dir=cache_dir,
                                             evaluate_on=evaluate_on))
    check_stage_sets(plans, sets)
    return plans


def failure_record(plan: RunPlan, *, error_type: str, message: str, traceback_tail: str,
                   spec: dict[str, Any] | None = None) -> RunRecord:
    """The record of a run that failed outside its own process (a crash, a lost SLURM job, a rank)."""
    return RunRecord(benchmark=plan.benchmark, method=plan.method, role=plan.config["litbench"]["role"],
                     dataset=plan.dataset, profile=plan.profile, seed=plan.seed, status=STATUS_FAILED,
                     config=plan.config, config_hash=plan.config_hash, spec=dict(spec or {}),
                     error={"type": error_type, "message": message, "traceback_tail": traceback_tail},
                     finished_at=utc_now())


def needs_own_process(plan: RunPlan) -> bool:
    """DDP re-executes the current command per rank, so a multi-process run must not be the suite."""
    trainer = plan.config["trainer"]
    devices = str(trainer.get("devices", 1))
    if devices == "auto":  # Lightning's "auto" takes every visible GPU
        import torch

        multi_device = trainer.get("accelerator") != "cpu" and torch.cuda.device_count() > 1
    else:
        multi_device = devices not in ("1", "[0]")
    return multi_device or int(trainer.get("num_nodes", 1)) > 1 or str(trainer.get("strategy", "auto")).startswith("ddp")


def _worker_env(workers: int) -> dict[str, str]:
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    return {**os.environ, "LITBENCH_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}


def stage_builders_first(plans: list[RunPlan], expected_s: dict[str, float] | None = None) -> list[RunPlan]:
    """Order plans for a worker pool: first one run per distinct stage, then the rest; within each
    group the longest expected runs first (``expected_s``: run id -> seconds), else plan order.

    A run that needs a stage another worker is building waits on the stage's lock with its core
    idle; putting the builders first lets the workers build different stages (e.g. one teacher
    per seed) at the same time, and the runs that reuse them find them cached. Longest first: a
    long run started last keeps one worker busy while the others have nothing left to do.
    """
    from benchmarks.resolve import stage_config
    from leaderboard.records import config_hash

    builders, rest, seen = [], [], set()
    for plan in plans:
        keys = {(stage["name"], config_hash(stage_config(plan.config, stage)))
                for stage in plan.config["litbench"]["stages"]}
        if keys - seen:
            seen |= keys
            builders.append(plan)
        else:
            rest.append(plan)
    if expected_s:
        def longest_first(group: list[RunPlan]) -> list[RunPlan]:
            return sorted(group, key=lambda plan: -expected_s.get(plan.run_id, 0.0))  # stable: ties keep plan order
        builders, rest = longest_first(builders), longest_first(rest)
    return builders + rest


def expected_seconds(plans: list[RunPlan], store: RecordStore) -> dict[str, float]:
    """Each run's expected run time: its previous record's ``cost.run_s`` (a rerun, a config
    change), else the median of its method's known runs; empty unless every run gets a value
    (then the order is the plan's)."""
    known: dict[str, float] = {}
    for plan in plans:
        try:
            record = store.load(plan.run_id)
        except CorruptRecordError:  # reported (and never overwritten) where the run is planned
            record = None
        seconds = (record.cost or {}).get("run_s") if record is not None else None
        if isinstance(seconds, (int, float)) and seconds > 0:
            known[plan.run_id] = float(seconds)
    by_method: dict[tuple[str, str], list[float]] = {}
    for plan in plans:
        if plan.run_id in known:
            by_method.setdefault((plan.benchmark, plan.method), []).append(known[plan.run_id])
    expected = dict(known)
    for plan in plans:
        if plan.run_id not in expected and (plan.benchmark, plan.method) in by_method:
            expected[plan.run_id] = float(statistics.median(by_method[(plan.benchmark, plan.method)]))
    return expected if len(expected) == len(plans) else {}


def external_launch_rank() -> int | None:
    """The global rank when the suite itself runs under torchrun (multi-node without SLURM), else None.

    Every rank then runs the same suite in the same order; each run's subprocess inherits the rank's
    environment, so Lightning's TorchElasticEnvironment joins the ranks of one run together.
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and "SLURM_PROCID" not in os.environ:
        return int(os.environ["RANK"])
    return None


def slurm_parameters(plan: RunPlan, slurm: dict[str, Any]) -> dict[str, Any]:
    """submitit parameters of one run: nodes = ``num_nodes``, tasks per node = ``devices`` (one
    process per device, what Lightning's SLURMEnvironment expects), GPUs per node, time, partition, account."""
    trainer = plan.config["trainer"]
    devices = trainer.get("devices", 1)
    tasks = int(devices) if str(devices).isdigit() else 1
    parameters: dict[str, Any] = {"nodes": int(trainer.get("num_nodes", 1)), "tasks_per_node": tasks,
                                  "timeout_min": int(slurm.get("time_min") or 60), "name": plan.run_id}
    if slurm.get("gpus_per_node") is not None:
        parameters["gpus_per_node"] = int(slurm["gpus_per_node"])
    elif trainer.get("accelerator") == "gpu":
        parameters["gpus_per_node"] = tasks
    if slurm.get("partition"):
        parameters["slurm_partition"] = slurm["partition"]
    if slurm.get("account"):
        parameters["slurm_account"] = slurm["account"]
    return parameters


class Launcher:
    """Runs plans and reports each outcome through ``on_result(plan, record | None, seconds)``."""

    def __init__(self, specs: dict[str, BenchmarkSpec], options: LaunchOptions) -> None:
        self.specs = specs
        self.options = options
        self.store = RecordStore(options.results_dir)
        self.rank = external_launch_rank()
        self.is_writer = self.rank in (None, 0)  # under torchrun only global rank 0 writes records

    # -- one run ------------------------------------------------------------------------------
    def _job_file(self, plan: RunPlan) -> Path:
        from benchmarks.runner import write_job

        suffix = "" if self.rank is None else f".rank{self.rank}"  # ranks must not share a half-written file
        return write_job(self.options.cache_dir / "jobs" / f"{plan.run_id.replace('/', '__')}{suffix}.json", config=plan.config,
                         results_dir=self.options.results_dir, cache_dir=self.options.cache_dir,
                         wandb_mode=self.options.wandb_mode, wandb_project=self.options.wandb_project,
                         spec_snapshot=self.specs[plan.benchmark].snapshot())

    def _record_written_since(self, plan: RunPlan, started_at: str) -> RunRecord | None:
        path = self.store.path_for(plan.run_id)
        for candidate in (path, failed_path(path)):
            try:
                record = read_record(candidate)
            except (FileNotFoundError, CorruptRecordError):
                continue
            if record.config_hash == plan.config_hash and record.started_at >= started_at:
                return record
        return None

    def _record_crash(self, plan: RunPlan, reason: str, log_tail: str, *, error_type: str = "WorkerCrashed") -> RunRecord:
        record = failure_record(plan, error_type=error_type, message=reason, traceback_tail=log_tail,
                                spec=self.specs[plan.benchmark].snapshot())
        self.store.write(record)
        return record

    def workers_for(self, plan: RunPlan) -> int:
        """Parallel run processes for this plan's benchmark: ``--workers``, else its profile's ``workers``."""
        if self.options.workers is not None:
            return self.options.workers
        profile = self.specs[plan.benchmark].profiles.get(plan.profile)
        return profile.workers if profile is not None else 1

    def _run_env(self, plan: RunPlan) -> dict[str, str]:
        env = _worker_env(self.workers_for(plan))
        env["LITBENCH_PARENT_PID"] = str(os.getpid())  # the worker dies with the suite (runner.die_with_parent)
        if self.rank is not None:
            # Each run gets its own rendezvous: torchrun's agent store still holds the previous run's
            # addresses, so runs after the first would connect to ranks that have exited. The port is
            # derived from the run id, so every rank picks the same one without talking.
            offset = 1 + int(hashlib.sha1(plan.run_id.encode()).hexdigest(), 16) % 2000
            env.update(TORCHELASTIC_USE_AGENT_STORE="False", MASTER_PORT=str(int(env.get("MASTER_PORT", 29500)) + offset))
        return env

    def _unwritten_failure(self, plan: RunPlan, reason: str) -> RunRecord:
        return failure_record(plan, error_type="NotRankZero", message=reason, traceback_tail="")

    def _run_in_process(self, plan: RunPlan) -> RunRecord:
        from benchmarks.runner import execute_run

        return execute_run(plan.config, results_dir=self.options.results_dir, cache_dir=self.options.cache_dir,
                           wandb_mode=self.options.wandb_mode, wandb_project=self.options.wandb_project,
                           spec_snapshot=self.specs[plan.benchmark].snapshot())

    def _run_subprocess(self, plan: RunPlan) -> RunRecord:
        job = self._job_file(plan)
        suffix = "" if self.rank is None else f".rank{self.rank}"
        log_path = self.options.results_dir / "logs" / f"{plan.run_id.replace('/', '__')}{suffix}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started_at = utc_now()
        timed_out = False
        with open(log_path, "w") as log:
            # its own session, so a timeout kills the whole process group (DDP ranks included)
            process = subprocess.Popen([sys.executable, "-m", "benchmarks.runner", str(job)], stdout=log,
                                       stderr=subprocess.STDOUT, env=self._run_env(plan),
                                       start_new_session=True)
            try:
                process.wait(timeout=self.options.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            except BaseException:  # Ctrl-C / SIGTERM of the suite: the run's process group goes too
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                raise
        record = self._record_written_since(plan, started_at)
        if record is not None and not timed_out:
            return record
        if not self.is_writer:  # rank 0 records the outcome; this rank only reports what it saw
            return self._unwritten_failure(plan, f"rank {self.rank}: worker exited with code {process.returncode}; "
                                                 f"rank 0 writes the record; log: {log_path}")
        tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-25:])
        if timed_out:
            return self._record_crash(plan, f"timed out after {self.options.timeout_s:g} s (--timeout); log: {log_path}",
                                      tail, error_type="Timeout")
        reason = f"worker exited with code {process.returncode} without a record"
        if process.returncode == -signal.SIGKILL:
            reason += " (SIGKILL: often the kernel's out-of-memory killer)"
        return self._record_crash(plan, f"{reason}; log: {log_path}", tail)

    def _run_slurm(self, plans: list[RunPlan], report: Callable[[RunPlan, RunRecord, float], None]) -> None:
        """Submit every run as its own SLURM job (submitit), then collect them as they finish.

        ``--devices`` maps to tasks per node and ``--num-nodes`` to nodes, which is what Lightning's
        SLURMEnvironment reads for multi-node DDP. ``$LITBENCH_SLURM_CLUSTER=local`` runs the jobs
        through submitit's local executor (tests, or a machine without SLURM).
        """
        import submitit

        from benchmarks.runner import run_job_file

        slurm = self.options.slurm
        executor = submitit.AutoExecutor(folder=str(self.options.results_dir / "slurm"),
                                         cluster=slurm.get("cluster") or os.environ.get("LITBENCH_SLURM_CLUSTER"))
        submitted = []
        for plan in plans:
            parameters = slurm_parameters(plan, slurm)
            executor.update_parameters(**parameters)
            started_at = utc_now()
            job = executor.submit(run_job_file, str(self._job_file(plan)))
            submitted.append((plan, job, started_at, time.perf_counter()))
        for plan, job, started_at, started in submitted:
            try:
                job.result()
                reason = f"SLURM job {job.job_id} wrote no record"
            except Exception as exc:  # noqa: BLE001 - a lost job is a failed run, not a failed suite
                reason = f"SLURM job {job.job_id}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            record = self._record_written_since(plan, started_at) or self._record_crash(plan, reason, "")
            report(plan, record, time.perf_counter() - started)

    # -- many runs ----------------------------------------------------------------------------
    def preflight(self, plans: list[RunPlan]) -> dict[str, str]:
        """Check that each planned dataset can be read before any run starts.

        A missing or unreadable dataset is bad input (exit 2, one line), not N failed runs; it
        stops only the runs that need it. ``prepare_data`` is where datamodules look for (or
        download) their files and check that they are whole. Returns ``{run_id: one-line problem}``
        of the plans whose data failed.
        """
        from lightning.pytorch.cli import instantiate_class

        from leaderboard.records import config_hash

        problems_by_data: dict[str, str | None] = {}
        bad: dict[str, str] = {}
        for plan in plans:
            key = config_hash(plan.config["data"])
            if key not in problems_by_data:
                try:
                    instantiate_class((), plan.config["data"]).prepare_data()
                    problems_by_data[key] = None
                except (FileNotFoundError, ValueError) as exc:
                    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    problems_by_data[key] = f"{plan.benchmark}/{plan.dataset}: {message}"
            if problems_by_data[key] is not None:
                bad[plan.run_id] = problems_by_data[key]
        return bad

    def pending(self, plans: list[RunPlan]) -> tuple[list[RunPlan], list[RunPlan]]:
        """Split plans into (to run, skipped because an ok record with the same hash exists)."""
        if self.options.force:
            return list(plans), []
        todo, skipped = [], []
        for plan in plans:
            existing = self.store.load(plan.run_id)  # a corrupt record raises: never overwritten silently
            done = existing is not None and existing.ok and existing.config_hash == plan.config_hash
            (skipped if done else todo).append(plan)
        return todo, skipped

    def run(self, plans: list[RunPlan], report: Callable[[RunPlan, RunRecord, float], None]) -> None:
        if self.options.launcher == "slurm":
            self._run_slurm(plans, report)
            return

        # Consecutive plans of one benchmark share a worker count (its profile's, unless --workers).
        groups: list[tuple[int, list[RunPlan]]] = []
        for plan in plans:
            workers = self.workers_for(plan)
            if groups and groups[-1][1][-1].benchmark == plan.benchmark and groups[-1][0] == workers:
                groups[-1][1].append(plan)
            else:
                groups.append((workers, [plan]))
        for workers, group in groups:
            self._run_group(group, workers, report)

    def _run_group(self, plans: list[RunPlan], workers: int,
                   report: Callable[[RunPlan, RunRecord, float], None]) -> None:
        def one(plan: RunPlan) -> tuple[RunPlan, RunRecord, float]:
            started = time.perf_counter()
            own_process = (workers > 1 or self.options.timeout_s is not None or self.rank is not None
                           or needs_own_process(plan))
            record = self._run_subprocess(plan) if own_process else self._run_in_process(plan)
            return plan, record, time.perf_counter() - started

        if workers <= 1:
            for plan in plans:
                report(*one(plan))
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            order = stage_builders_first(plans, expected_seconds(plans, self.store))
            for future in as_completed([pool.submit(one, plan) for plan in order]):
                report(*future.result())
