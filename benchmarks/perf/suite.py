"""The suite perf record: what one ``litbench run`` took, in total and per benchmark.

A suite's wall time is a recorded number like any metric. With several benchmarks in one run (``--suite
cpu``) the total alone does not say which benchmark costs what, so the record also keeps, per benchmark,
the span from its first run's start to its last run's end (its wall time inside the suite, workers
included), the summed run seconds, the worker count it actually ran with, and its stages built/reused.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaderboard.records import utc_now


@dataclass
class BenchmarkTally:
    workers: int
    ran: int = 0
    failed: int = 0
    skipped: int = 0
    run_s: float = 0.0
    first_start: float | None = None
    last_end: float | None = None
    stage_hits: list[bool] = field(default_factory=list)  # per stage of each finished run: a cache hit?

    def payload(self) -> dict[str, Any]:
        span = (self.last_end - self.first_start) if self.first_start is not None and self.last_end is not None else 0.0
        return {"ran": self.ran, "failed": self.failed, "skipped": self.skipped, "workers": self.workers,
                "wall_s": round(span, 1), "run_s": round(self.run_s, 1),
                "stages_built": self.stage_hits.count(False), "stages_reused": self.stage_hits.count(True)}


class SuiteTally:
    """Collects the finished runs of one ``litbench run`` and writes its ``suite`` perf record.

    ``clock`` is injectable so the per-benchmark spans can be tested without sleeping."""

    def __init__(self, *, profile: str, clock: Any = time.perf_counter) -> None:
        self.profile = profile
        self.clock = clock
        self.started = clock()
        self.load_before = os.getloadavg()
        self.benchmarks: dict[str, BenchmarkTally] = {}

    def plan(self, benchmark: str, *, workers: int, skipped: bool) -> None:
        """Called once per planned run (before any runs), so skipped runs and worker counts are known."""
        tally = self.benchmarks.setdefault(benchmark, BenchmarkTally(workers=workers))
        tally.skipped += int(skipped)

    def finished(self, benchmark: str, *, ok: bool, seconds: float, stage_hits: list[bool]) -> None:
        now = self.clock()
        tally = self.benchmarks[benchmark]
        tally.ran += 1
        tally.failed += int(not ok)
        tally.run_s += seconds
        start = now - seconds
        tally.first_start = start if tally.first_start is None else min(tally.first_start, start)
        tally.last_end = now if tally.last_end is None else max(tally.last_end, now)
        tally.stage_hits.extend(stage_hits)

    def payload(self) -> dict[str, Any]:
        per_benchmark = {name: tally.payload() for name, tally in sorted(self.benchmarks.items())}
        workers = {tally.workers for tally in self.benchmarks.values()}
        hits = [hit for tally in self.benchmarks.values() for hit in tally.stage_hits]
        return {"benchmarks": sorted(self.benchmarks), "profile": self.profile,
                "ran": sum(t.ran for t in self.benchmarks.values()),
                "failed": sum(t.failed for t in self.benchmarks.values()),
                "skipped": sum(t.skipped for t in self.benchmarks.values()),
                # One number when every benchmark ran with the same count, else "mixed" (see per_benchmark).
                "workers": workers.pop() if len(workers) == 1 else "mixed",
                "stages_built": hits.count(False), "stages_reused": hits.count(True),
                "wall_s": round(self.clock() - self.started, 1),
                "load_before": [round(x, 2) for x in self.load_before],
                "load_after": [round(x, 2) for x in os.getloadavg()],
                "per_benchmark": per_benchmark}

    def write(self, results_dir: Path) -> Path:
        from benchmarks.perf.records import write_perf_record

        names = sorted(self.benchmarks)
        stamp = utc_now("%Y%m%dT%H%M%S")
        selection = "+".join(names) if len(names) <= 3 else f"{len(names)}-benchmarks"
        return write_perf_record(results_dir, kind="suite", name=f"{selection}-{self.profile}-{stamp}",
                                 payload=self.payload())
