"""Run records: the one contract between the harness (writer) and the leaderboard (reader).

A record is one JSON file per (benchmark, dataset, method, profile, seed), stored at
``<results>/<benchmark>/<dataset>/<method>/<profile>/seed-<k>.json``. DESIGN.md's path has no
dataset level; a benchmark runs on several datasets, so without it two datasets would overwrite
each other's records.

Records are written atomically (a temp file in the same folder, fsync, ``os.replace``), so a run
killed at any point leaves either the old record or the new one, never a partial file. A failed run
never replaces an ``ok`` record: its failure is written beside it as ``seed-<k>.failed.json``.

Fields (schema ``litbench.run-record/1``)::

    schema, run_id, benchmark, method, role, dataset, profile, seed, status (ok|failed),
    error {type, message, traceback_tail} | null, metrics {name: value},
    cost {fit_s, eval_s, stage_s, run_s, cpu_s, train_samples_per_s, data_share, peak_rss_mb, peak_gpu_mb, params, flops,
          achieved_gflops, probe_gflops, mfu},
    hardware {cpu, cores, accelerator, devices, strategy, num_nodes, world_size, gpu_names},
    software {python, torch, lightning, torchmetrics, torch_geometric, timm, git_sha, git_dirty},
    config (fully resolved, LightningCLI form plus a ``litbench`` section), config_hash,
    stages {name: {key, cache_hit, artifact}}, artifacts [paths], spec {metrics, claims, paper_results, paper},
    started_at, finished_at

``artifacts`` lists files a run wrote for readers (generated MIDI, distilled images, a BEV plot), as
paths relative to the results folder, under ``<run_id>.artifacts/`` next to the record.

``cost.run_s`` is the run's whole wall time (stages, setup, logger, fit, test; not the record write);
``cost.stage_s`` the time spent building (or fetching) its cached stages, so
``run_s - stage_s - fit_s - eval_s`` is the harness's overhead. ``cost.cpu_s`` is the CPU time of the
run's process over the same span (all its threads; not loader worker processes): on a machine shared
with other jobs wall time grows with the load, CPU time much less, so ``sum(cpu_s) / cores`` bounds
what a suite of one-thread runs takes on idle cores. ``cost.data_share`` is the fraction of
training time spent fetching, transferring and augmenting batches (Lightning's data actions, timed by
``benchmarks.costs.DataWaitProfiler``; records before it counted every gap between steps, module hooks
such as LRPET's projection included). ``cost.achieved_gflops`` is the training GFLOP/s (``flops``
per sample × ``train_samples_per_s``); ``cost.mfu`` is that over the run's ceiling: the GPUs' peak at
the run's precision, or on CPU ``cost.probe_gflops``, the best fp32 1024³ matmul the run's own
process reached with its threads (``benchmarks.costs.matmul_probe_flops``; same load, same threads).
``cost.flops`` is the FLOP count of one training step (forward + backward + optimiser) as counted by
``torch.utils.flop_counter``; ``null`` where nothing was trained. ``spec`` is a snapshot of the
benchmark's metric directions, claims and paper numbers at run time, so records stay readable
without the spec files.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

SCHEMA = "litbench.run-record/1"
# Perf records (``<results>/perf/<kind>/<name>.json``: parity, suite wall time) carry this schema;
# the leaderboard reads only those that do.
PERF_SCHEMA = "litbench.perf-record/1"
# Verification records (``<results>/verify/<benchmark>/<profile>-<UTC stamp>.json``, ``litbench verify``):
# committed ok records re-run on this machine and compared with them (``VerificationRecord``).
VERIFY_SCHEMA = "litbench.verification-record/1"
STATUS_OK = "ok"
STATUS_FAILED = "failed"

COST_KEYS = ("fit_s", "eval_s", "stage_s", "run_s", "cpu_s", "train_samples_per_s", "data_share", "peak_rss_mb", "peak_gpu_mb", "params",
             "flops", "achieved_gflops", "probe_gflops", "mfu")


class CorruptRecordError(ValueError):
    """A record file that cannot be read as a run record."""


@dataclass
class RunRecord:
    benchmark: str
    method: str
    role: str
    dataset: str
    profile: str
    seed: int
    status: str
    config: dict[str, Any]
    config_hash: str
    metrics: dict[str, float] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)
    hardware: dict[str, Any] = field(default_factory=dict)
    software: dict[str, Any] = field(default_factory=dict)
    error: dict[str, str] | None = None
    stages: dict[str, Any] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)  # files the run wrote, relative to the results dir
    spec: dict[str, Any] = field(default_factory=dict)
    started_at: str = ""
    finished_at: str = ""
    run_id: str = ""
    schema: str = SCHEMA

    def __post_init__(self) -> None:
        if not self.run_id:
            self.run_id = make_run_id(self.benchmark, self.dataset, self.method, self.profile, self.seed)

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, payload: Any, *, source: str = "<record>") -> "RunRecord":
        if not isinstance(payload, dict):
            raise CorruptRecordError(f"{source}: a run record must be a JSON object")
        schema = payload.get("schema")
        if schema != SCHEMA:
            raise CorruptRecordError(
                f"{source}: schema {schema!r} is not {SCHEMA!r}; re-run it with `litbench run --force` "
                "or upgrade litbench")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(payload) - names)
        if unknown:
            raise CorruptRecordError(f"{source}: unknown record fields {unknown}")
        required = {"benchmark", "method", "role", "dataset", "profile", "seed", "status", "config", "config_hash"}
        missing = sorted(required - set(payload))
        if missing:
            raise CorruptRecordError(f"{source}: missing record fields {missing}")
        if payload["status"] not in (STATUS_OK, STATUS_FAILED):
            raise CorruptRecordError(f"{source}: status must be 'ok' or 'failed', got {payload['status']!r}")
        for name, value in payload.items():
            expected = FIELD_TYPES[name]
            if not isinstance(value, expected) or (isinstance(value, bool) and name == "seed"):
                kinds = " or ".join("null" if kind is type(None) else kind.__name__ for kind in expected)
                raise CorruptRecordError(f"{source}: field {name!r} must be {kinds}, got {type(value).__name__}; "
                                         "re-run it with `litbench run --force`")
        bad_metrics = [key for key, value in payload.get("metrics", {}).items()
                       if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)))]
        if bad_metrics:
            raise CorruptRecordError(f"{source}: metrics {bad_metrics} must be numbers or null")
        if not all(isinstance(path, str) for path in payload.get("artifacts", [])):
            raise CorruptRecordError(f"{source}: artifacts must be a list of paths")
        return cls(**payload)


_TEXT, _OBJECT = (str,), (dict,)
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    **{name: _TEXT for name in ("benchmark", "method", "role", "dataset", "profile", "status", "config_hash",
                                "started_at", "finished_at", "run_id", "schema")},
    **{name: _OBJECT for name in ("config", "metrics", "cost", "hardware", "software", "stages", "spec")},
    "seed": (int,), "error": (dict, type(None)), "artifacts": (list,),
}


def make_run_id(benchmark: str, dataset: str, method: str, profile: str, seed: int) -> str:
    """Human-readable id, unique within a results folder: ``dcagc/Cora/dcagc/cpu/seed-0``."""
    return f"{benchmark}/{dataset}/{method}/{profile}/seed-{seed}"


def config_hash(config: dict[str, Any]) -> str:
    """Stable hash of a resolved config: sha256 of canonical JSON, first 16 hex digits."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def record_path(results_dir: str | Path, run_id: str) -> Path:
    return Path(results_dir) / f"{run_id}.json"


def artifact_dir_path(results_dir: str | Path, run_id: str) -> Path:
    return Path(results_dir) / f"{run_id}.artifacts"


def failed_path(path: Path) -> Path:
    return path.with_name(path.stem + ".failed.json")


def utc_now(format: str | None = None) -> str:
    """The one timestamp of litbench: UTC, ISO 8601 to the second, or ``format`` (strftime)."""
    now = datetime.now(timezone.utc)
    return now.isoformat(timespec="seconds") if format is None else now.strftime(format)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so that readers see either the old file or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2, sort_keys=False, default=str)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_json(path: Path, *, remedy: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptRecordError(f"{path}: not valid JSON ({exc.__class__.__name__}: {exc}); "
                                 f"delete it or {remedy}") from None


def read_record(path: str | Path) -> RunRecord:
    path = Path(path)
    return RunRecord.from_dict(_read_json(path, remedy="re-run with --force"), source=str(path))


class RecordStore:
    """The records under one results folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path_for(self, run_id: str) -> Path:
        return record_path(self.root, run_id)

    def load(self, run_id: str) -> RunRecord | None:
        path = self.path_for(run_id)
        if not path.exists():
            return None
        return read_record(path)

    def write(self, record: RunRecord) -> Path:
        """Write a record; a failure never replaces an existing ok record (it goes beside it)."""
        path = self.path_for(record.run_id)
        if not record.ok and path.exists():
            try:
                existing_ok = read_record(path).ok
            except CorruptRecordError:
                existing_ok = False
            if existing_ok:
                path = failed_path(path)
        write_json_atomic(path, record.to_dict())
        if record.ok:
            failed_path(path).unlink(missing_ok=True)
        return path

    def paths(self) -> list[Path]:
        if not self.root.exists():
            return []
        # calibration/: validation-split runs of `litbench sweep`, never leaderboard results
        return sorted(p for p in self.root.rglob("seed-*.json") if not p.name.endswith(".failed.json")
                      and "wandb" not in p.parts and "calibration" not in p.relative_to(self.root).parts)

    def iter_records(self) -> Iterator[RunRecord | CorruptRecordError]:
        """Yield every record; corrupt files are yielded as errors so callers can report them."""
        for path in self.paths():
            try:
                yield read_record(path)
            except CorruptRecordError as exc:
                yield exc

    def find(self, run_id: str) -> RunRecord:
        """Look a record up by run id, or by a unique suffix/prefix of it."""
        run_id = run_id.removesuffix(".json")
        direct = self.path_for(run_id)
        if direct.exists():
            return read_record(direct)
        matches = [p for p in self.paths() if str(p.relative_to(self.root)).removesuffix(".json").endswith(run_id)]
        if len(matches) == 1:
            return read_record(matches[0])
        if not matches:
            raise KeyError(f"no record {run_id!r} under {self.root}; `litbench leaderboard` lists what exists")
        raise KeyError(f"{run_id!r} matches {len(matches)} records; give the full id, e.g. "
                       f"{str(matches[0].relative_to(self.root)).removesuffix('.json')}")


@dataclass
class VerificationRecord:
    """One ``litbench verify`` of one benchmark and profile (schema ``litbench.verification-record/1``)::

        schema, benchmark, profile, created_at, command,
        sample {per_benchmark (null: --all), seed, twice, cache ("fresh" or the reused cache folder)},
        machine {hardware, software, torch_threads}          # where the re-runs ran
        original_machines [{hardware, software, runs}]       # where the originals ran (from their records)
        runs [{run_id, method, dataset, seed, config_hash, status, identical, max_abs_diff {metric: value | null},
               original {metrics, finished_at, git_sha}, rerun {metrics, run_s, git_sha, stages_reused},
               code_changed_files (files under modules/, datamodules/, benchmarks/ changed since the original's
               commit, working tree included; null: commit unknown),
               twice {identical, max_abs_diff} | null}]      # twice: a second re-run here, same config
        skipped [{run_id, reason}]                           # e.g. a config whose hash no longer matches
        spread {metric: largest |difference| over the runs}  # null: a run lost or gained the metric
        timed_metrics [metric]                               # wall-clock measurements: expected to differ
        claims [{claim, dataset, profile, metric, verdict_original, verdict_rerun, equal, detectable, spread}]

    ``identical`` means every metric but the timed ones is bit-identical (same keys, same floats). A claim's ``spread`` is
    the largest |difference| of its metric over the re-runs, in the claim's units (a fraction of the
    mean baseline value for relative claims); ``verdict_rerun`` judges the claim with the re-run
    records in place of their originals.
    """

    benchmark: str
    profile: str
    created_at: str
    command: str
    sample: dict[str, Any]
    machine: dict[str, Any]
    original_machines: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    spread: dict[str, Any]
    claims: list[dict[str, Any]]
    timed_metrics: list[str]
    schema: str = VERIFY_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, payload: Any, *, source: str = "<verification>") -> "VerificationRecord":
        if not isinstance(payload, dict):
            raise CorruptRecordError(f"{source}: a verification record must be a JSON object")
        if payload.get("schema") != VERIFY_SCHEMA:
            raise CorruptRecordError(f"{source}: schema {payload.get('schema')!r} is not {VERIFY_SCHEMA!r}")
        expected = {f.name: f.type for f in dataclasses.fields(cls)}
        if set(payload) != set(expected):
            difference = sorted(set(payload) ^ set(expected))
            raise CorruptRecordError(f"{source}: verification fields differ from the schema at {difference}")
        kinds = {"dict": dict, "list": list, "str": str}
        for name, annotation in expected.items():
            kind = kinds[str(annotation).split("[")[0]]
            if not isinstance(payload[name], kind):
                raise CorruptRecordError(f"{source}: field {name!r} must be {kind.__name__}")
        return cls(**payload)


def verification_path(results_dir: str | Path, *, benchmark: str, profile: str, stamp: str) -> Path:
    return Path(results_dir) / "verify" / benchmark / f"{profile}-{stamp}.json"


def read_verification(path: str | Path) -> VerificationRecord:
    path = Path(path)
    return VerificationRecord.from_dict(_read_json(path, remedy="rerun `litbench verify`"), source=str(path))
