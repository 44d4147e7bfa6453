"""CPU thread settings compared on one real run: how the intra-op thread count, OpenMP's wait
policy and glibc's handling of freed memory (``benchmarks.keep_freed_host_memory``) change a run's
wall time on this machine.

Why it exists: on the 2-core development machine, shared with other jobs, RELIANT's cpu-profile
students took 250-1100 s per run with 2 intra-op threads (OpenMP's default wait policy spins at
every barrier, so two spinning threads on an oversubscribed machine mostly wait for each other),
and 7-20 s with 1 thread or with ``OMP_WAIT_POLICY=PASSIVE``. litbench now defaults to
``OMP_WAIT_POLICY=PASSIVE`` (``benchmarks/__init__.py``); this command measures what that buys
and whether it costs anything on an idle machine.

Every setting runs the same resolved run (``litbench run ... --force``) in a fresh subprocess
(the wait policy is read once, when libgomp loads), the settings alternate ``repeats`` times so
drifts of the machine's load hit all of them, and the record keeps every run's ``cost.run_s`` and
``cost.fit_s`` from the run records, with the load average before and after.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from leaderboard.records import read_record, record_path


def thread_settings(threads: int) -> dict[str, dict[str, str]]:
    """Setting name -> environment: one thread, and ``threads`` threads under each wait policy, with
    glibc's malloc; last, the passive default with freed host memory kept in the heap
    (``LITBENCH_MALLOC=kept``, see ``benchmarks.keep_freed_host_memory``)."""
    many = {"LITBENCH_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads), "LITBENCH_MALLOC": "default"}
    return {"1 thread": {"LITBENCH_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
                         "LITBENCH_MALLOC": "default"},
            f"{threads} threads, OpenMP active wait": {**many, "OMP_WAIT_POLICY": "ACTIVE"},
            f"{threads} threads, OpenMP passive wait": {**many, "OMP_WAIT_POLICY": "PASSIVE"},
            f"{threads} threads, passive wait, heap kept": {**many, "OMP_WAIT_POLICY": "PASSIVE",
                                                            "LITBENCH_MALLOC": "kept"}}


def run_once(run_args: list[str], *, run_id: str, env: dict[str, str], results: Path, timeout: float) -> dict[str, float]:
    """One ``litbench run`` in a subprocess; the run's costs from its record."""
    command = [sys.executable, "-m", "benchmarks", "run", *run_args, "--force", "--wandb", "disabled",
               "--results", str(results)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **env})
    path = record_path(results, run_id)
    record = read_record(path) if path.is_file() else None
    if done.returncode != 0 or record is None or not record.ok:
        raise RuntimeError(f"the measured run failed (exit {done.returncode}): {(done.stdout + done.stderr)[-400:]}")
    return {"run_s": float(record.cost["run_s"]), "fit_s": float(record.cost.get("fit_s") or 0.0)}


def compare_thread_settings(run_args: list[str], *, run_id: str, threads: int = 2, repeats: int = 2,
                            timeout: float = 1800.0) -> dict[str, Any]:
    """Alternate the settings ``repeats`` times; medians and every measurement, per setting."""
    settings = thread_settings(threads)
    measured: dict[str, list[dict[str, float]]] = {name: [] for name in settings}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="litbench-threads-") as scratch:
        # A warm-up run fills the stage and data caches, so every measured run does the same work.
        run_args = [*run_args, "--cache-dir", str(Path(scratch) / "cache")]
        run_once(run_args, run_id=run_id, env=settings["1 thread"], results=Path(scratch), timeout=timeout)
        for _ in range(repeats):
            for name, env in settings.items():
                measured[name].append(run_once(run_args, run_id=run_id, env=env, results=Path(scratch), timeout=timeout))
    medians = {name: statistics.median(m["run_s"] for m in runs) for name, runs in measured.items()}
    fastest = min(medians, key=medians.get)
    return {"threads": threads, "repeats": repeats, "cores": os.cpu_count(),
            "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
            "settings": {name: {"environment": settings[name], "median_run_s": medians[name],
                                "runs": measured[name]} for name in settings},
            "fastest": fastest,
            "slowdown_vs_fastest": {name: medians[name] / medians[fastest] for name in settings}}
