"""`litbench datasets [BENCH ...]`: per benchmark, the data formats it reads, their presets, the layout
expected under ``--data-dir``, and the one-line command that runs it on a dataset of your own.

The formats come from the benchmark's datamodule (``dataset_formats()``, see
``datamodules/formats.py``), reached through the spec's ``data.class_path`` like every other class.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from benchmarks.contract import load_class
from benchmarks.errors import UsageError
from benchmarks.spec import BenchmarkSpec


@dataclass(frozen=True)
class BenchmarkData:
    benchmark: str
    datamodule: str
    builtin: tuple[str, ...]  # every dataset a profile of the spec runs on
    formats: tuple[Any, ...]  # datamodules.formats.DatasetFormat


def builtin_datasets(spec: BenchmarkSpec) -> tuple[str, ...]:
    names = list(spec.data.datasets)
    for profile in spec.profiles:
        names += [name for name in spec.datasets_for(profile) if name not in names]
    return tuple(names)


def benchmark_data(spec: BenchmarkSpec) -> BenchmarkData:
    datamodule = load_class(spec.data.class_path)
    describe = getattr(datamodule, "dataset_formats", None)
    return BenchmarkData(benchmark=spec.name, datamodule=spec.data.class_path, builtin=builtin_datasets(spec),
                         formats=tuple(describe() if describe is not None else ()))


def own_data_command(benchmark: str, fmt: Any, *, data_dir: str = "DIR") -> str:
    """The one-line ``litbench run`` of ``benchmark`` on a dataset of your own in format ``fmt``."""
    parts = ["litbench", "run", benchmark, "--datasets", fmt.own_name, "--data-dir", data_dir]
    for key, value in fmt.own_data_args.items():
        parts += ["--set", f"data.init_args.{key}={value}"]
    return " ".join(shlex.quote(part) for part in parts)


def select_specs(specs: dict[str, BenchmarkSpec], names: list[str]) -> list[BenchmarkSpec]:
    unknown = [name for name in names if name not in specs]
    if unknown:
        raise UsageError(f"unknown benchmark {unknown[0]!r} (known: {', '.join(specs)})")
    return [specs[name] for name in (names or specs)]


def render(entries: list[BenchmarkData]) -> list[str]:
    """Plain lines (no markup): one block per benchmark."""
    lines: list[str] = []
    for entry in entries:
        lines.append(f"{entry.benchmark}  ({entry.datamodule})")
        lines.append(f"  built-in datasets: {', '.join(entry.builtin)}")
        if not entry.formats:
            lines.append("  formats: only the built-in datasets (this datamodule reads no data of your own yet)")
        for fmt in entry.formats:
            lines.append(f"  format: {fmt.name}")
            if fmt.presets:
                lines.append(f"    presets: {', '.join(fmt.presets)}")
            lines.append(f"    layout: {fmt.layout}")
            for note in fmt.notes:
                lines.append(f"    note: {note}")
            if fmt.reads_own_data:
                lines.append(f"    your own: {own_data_command(entry.benchmark, fmt)}")
        lines.append("")
    lines.append("Add --methods a,b and --seeds N to narrow a run; --profile smoke|cpu|full picks its scale (default cpu).")
    return lines
