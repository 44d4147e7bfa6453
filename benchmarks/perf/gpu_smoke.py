"""Run every benchmark's smoke profile on one GPU with bf16 autocast and report samples/s and MFU.

    python -m benchmarks.perf.gpu_smoke [--results results-gpu] [--precision bf16-mixed] [BENCHMARK ...]

``--accelerator cpu`` runs the same path without a GPU (bf16 autocast on CPU; its MFU is over
the run's own matmul probe, not a GPU peak), which is how the tests exercise it.

Each run is a normal litbench run (``--accelerator gpu --devices 1 --precision bf16-mixed``), so
its record holds ``cost.train_samples_per_s`` and ``cost.mfu`` (training FLOP/s of the counted step
over the GPU's dense peak at that precision, ``benchmarks.peak_flops``; ``--peak-tflops`` of
``litbench run`` for an unlisted chip). The table printed at the end is read back from those records.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.cli import main as litbench_main
from leaderboard.records import RecordStore


def summarise(results: str, profile: str = "smoke") -> list[tuple[str, str, str, float | None, float | None, str]]:
    rows = []
    for record in RecordStore(results).iter_records():
        if isinstance(record, Exception) or record.profile != profile:
            continue
        rows.append((record.benchmark, record.method, record.dataset, record.cost.get("train_samples_per_s"),
                     record.cost.get("mfu"), record.status))
    return sorted(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmarks", nargs="*", help="default: every benchmark")
    parser.add_argument("--results", default="results-gpu")
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--accelerator", default="gpu", choices=["gpu", "cpu"])
    args = parser.parse_args(argv)
    code = litbench_main(["run", *args.benchmarks, "--profile", "smoke", "--accelerator", args.accelerator, "--devices", "1",
                          "--precision", args.precision, "--results", args.results, "--wandb", "disabled"])
    print(f"{'benchmark':12} {'method':24} {'dataset':18} {'samples/s':>12} {'MFU':>8}  status")
    for benchmark, method, dataset, rate, mfu, status in summarise(args.results):
        rate_text = f"{rate:12.1f}" if rate else f"{'-':>12}"
        mfu_text = f"{100 * mfu:7.2f}%" if mfu else f"{'-':>8}"
        print(f"{benchmark:12} {method:24} {dataset:18} {rate_text} {mfu_text}  {status}")
    return code


if __name__ == "__main__":
    sys.exit(main())
