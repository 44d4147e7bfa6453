"""Perf records: one JSON file per measurement under ``<results>/perf/<kind>/<name>.json``.

They carry the measurement, the machine and the versions, like run records, so the leaderboard can
show them (it reads ``perf/**/*.json``; run records are ``seed-*.json`` and never collide).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from leaderboard.records import PERF_SCHEMA, utc_now, write_json_atomic


def write_perf_record(results_dir: Path, *, kind: str, name: str, payload: dict[str, Any]) -> Path:
    from benchmarks.runner import hardware_info, software_versions

    path = results_dir / "perf" / kind / f"{name}.json"
    hardware = {**hardware_info({"accelerator": "gpu" if torch.cuda.is_available() else "cpu"}, 1),
                "threads": torch.get_num_threads()}
    write_json_atomic(path, {"schema": PERF_SCHEMA, "kind": kind, "name": name, **payload,
                             "hardware": hardware, "software": software_versions(),
                             "measured_at": utc_now()})
    return path
