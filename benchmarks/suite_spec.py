"""Suites: named selections of runs (``benchmarks/suites/<name>.yaml``).

A suite is a profile plus an optional selection::

    name: smoke
    profile: smoke
    seeds: 1
    benchmarks: {dcagc: {methods: [dcagc]}}       # optional; without it: every spec found

so a new spec needs no suite edit. Every key is checked as in a spec (``benchmarks.spec``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.spec import PROFILES, SpecError, _free_mapping, _mapping, _read_yaml, _string, _string_list

SUITES_DIR = Path(__file__).parent / "suites"


@dataclass
class SuiteSpec:
    name: str
    path: Path
    profile: str
    # name -> {methods: [...], datasets: [...]}; empty: every spec found (a new spec needs no suite edit)
    benchmarks: dict[str, dict[str, Any]]
    seeds: int | None = None
    description: str = ""


def load_suite(path: str | Path) -> SuiteSpec:
    path = Path(path)
    where = str(path)
    raw = _mapping(_read_yaml(path), where, {"name", "description", "profile", "seeds", "benchmarks"},
                   {"name", "profile"})
    if raw["profile"] not in PROFILES:
        raise SpecError(f"{where}: profile {raw['profile']!r} is not one of {', '.join(PROFILES)}")
    benchmarks_raw = raw.get("benchmarks") or {}
    if isinstance(benchmarks_raw, list):
        benchmarks_raw = {str(name): {} for name in benchmarks_raw}
    benchmarks = {}
    for bench, block in _free_mapping(benchmarks_raw, f"{where}: benchmarks").items():
        selection = _mapping(block, f"{where}: benchmarks.{bench}", {"methods", "datasets"})
        benchmarks[str(bench)] = {key: _string_list(selection.get(key), f"{where}: benchmarks.{bench}.{key}")
                                  for key in ("methods", "datasets")}
    seeds = raw.get("seeds")
    if seeds is not None and (not isinstance(seeds, int) or seeds < 1):
        raise SpecError(f"{where}: seeds: expected a positive integer, got {seeds!r}")
    return SuiteSpec(name=_string(raw["name"], f"{where}: name"), path=path, profile=raw["profile"],
                     benchmarks=benchmarks, seeds=seeds, description=str(raw.get("description", "")))


def load_all_suites(suites_dir: str | Path | None = None) -> dict[str, SuiteSpec]:
    suites_dir = suites_dir or os.environ.get("LITBENCH_SUITES_DIR") or SUITES_DIR
    return {suite.name: suite for suite in (load_suite(p) for p in sorted(Path(suites_dir).glob("*.yaml")))}
