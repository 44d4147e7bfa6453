"""The prepared device check: everything issue 28 asks of one GPU, in one command of <= 8 minutes.

    python -m benchmarks.perf.gpu_check --data-dir DATA [--results results-gpu] [--only STEP ...]
    python -m benchmarks.perf.gpu_check --only smoke-bf16 emo reliant   # smoke steps of some benchmarks
    python -m benchmarks.perf.gpu_check --accelerator cpu --dry-run   # what it would run (CI)

Steps (each a normal ``litbench run``, so every run writes an ordinary record under
``RESULTS/<step>/`` with ``cost.train_samples_per_s``, ``cost.achieved_gflops`` and ``cost.mfu``):

1. ``smoke-fp32`` / ``smoke-bf16``: every benchmark's smoke profile at ``32-true`` and ``bf16-mixed``;
2. ``dcagc-cora``: DCAGC full on Cora, 3 seeds, DCAGC and the two k-means baselines;
3. ``reliant-bail``: RELIANT full on Bail, 2 seeds;
4. ``cmt-steps`` / ``tinymim-steps``: one CMT and one TinyMIM training of the full-profile
   models, capped by steps (CMT on the shared nuScenes keyframe, TinyMIM on generated
   ImageNet-shaped images: nuScenes and ImageNet do not travel);
5. ``throughput``: EMO-1M at 224² on generated ImageNet-shaped images (device-resident: generated
   once, moved to the GPU once, batches gathered there) through the same runner, so
   samples/s and MFU are measured on a real-size vision model rather than smoke toys.

The data (Planetoid Cora, NIFTY Bail, the nuScenes keyframe; ~6 MB) must be under ``--data-dir`` on
the device machine: copy ``../shared/data/{planetoid,fair_bail,nuscenes_one_sample}`` into an
ignored folder of the checkout and carry it.
At the end one table (step, benchmark, method, dataset, runs ok/failed, samples/s, GFLOP/s, MFU)
is printed from the records; the exit status is 1 when any run failed, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

from benchmarks.cli import main as litbench_main
from leaderboard.records import RecordStore


@dataclass(frozen=True)
class CheckStep:
    name: str
    benchmarks: list[str]
    profile: str
    precision: str = "bf16-mixed"
    options: list[str] = field(default_factory=list)  # further `litbench run` arguments

    def argv(self, *, accelerator: str, results: Path, data_dir: str | None, dry_run: bool,
             smoke_benchmarks: list[str] | None = None) -> list[str]:
        # A step without fixed benchmarks (the smoke steps) runs every benchmark, or those named.
        benchmarks = self.benchmarks or list(smoke_benchmarks or [])
        return ["run", *benchmarks, "--profile", self.profile, "--accelerator", accelerator, "--devices", "1",
                "--precision", self.precision, "--results", str(results / self.name), "--wandb", "disabled",
                *(["--data-dir", data_dir] if data_dir else []), *self.options, *(["--dry-run"] if dry_run else [])]


# Generated on the host once, then device-resident: the loader sends indices, the images wait on the
# GPU (datamodules/batched.py), so the step measures the model, not host collation and copies.
GENERATED_IMAGENET = ["--datasets", "generated", "--set", "data.init_args.image_size=224",
                      "--set", "data.init_args.device_resident=true",
                      "--set", "data.init_args.val_size=0", "--set", "data.init_args.test_size=256"]

STEPS = [
    CheckStep("smoke-fp32", [], "smoke", precision="32-true"),
    CheckStep("smoke-bf16", [], "smoke"),
    CheckStep("dcagc-cora", ["dcagc"], "full", options=[
        "--datasets", "Cora", "--seeds", "3", "--methods", "dcagc,kmeans_features,kmeans_smoothed",
        "--set", "trainer.check_val_every_n_epoch=100"]),
    CheckStep("reliant-bail", ["reliant"], "full", options=["--datasets", "Bail", "--seeds", "2"]),
    CheckStep("cmt-steps", ["cmt"], "full", options=[
        "--datasets", "nuscenes-one-sample", "--seeds", "1", "--methods", "cmt",
        "--set", "stages.fused.trainer.max_steps=300",
        "--set", "trainer.max_steps=300"]),
    CheckStep("tinymim-steps", ["tinymim"], "full", options=[
        "--seeds", "1", "--methods", "tinymim", *GENERATED_IMAGENET, "--set", "data.init_args.train_size=6400",
        "--set", "stages.teacher.trainer.max_steps=100", "--set", "trainer.max_steps=100"]),
    CheckStep("throughput", ["emo"], "full", options=[
        "--seeds", "1", "--methods", "emo_1m", *GENERATED_IMAGENET, "--set", "data.init_args.train_size=12800",
        "--set", "trainer.max_steps=150", "--set", "trainer.check_val_every_n_epoch=1000"]),
]


def summary_rows(results: Path, steps: list[CheckStep]) -> list[dict[str, Any]]:
    """One row per (step, benchmark, method, dataset) from the records the check wrote."""
    rows: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for step in steps:
        folder = results / step.name
        if not folder.is_dir():
            continue
        for record in RecordStore(folder).iter_records():
            if isinstance(record, Exception):
                continue
            row = rows.setdefault((step.name, record.benchmark, record.method, record.dataset),
                                  {"step": step.name, "benchmark": record.benchmark, "method": record.method,
                                   "dataset": record.dataset, "ok": 0, "failed": 0, "rates": [], "gflops": [], "mfu": []})
            row["ok" if record.ok else "failed"] += 1
            for key, name in (("rates", "train_samples_per_s"), ("gflops", "achieved_gflops"), ("mfu", "mfu")):
                if record.ok and record.cost.get(name) is not None:
                    row[key].append(record.cost[name])
    return sorted(rows.values(), key=lambda row: (row["step"], row["benchmark"], row["method"], row["dataset"]))


def format_summary(rows: list[dict[str, Any]]) -> str:
    def number(values: list[float], scale: float = 1.0, suffix: str = "") -> str:
        return f"{scale * mean(values):.1f}{suffix}" if values else "-"

    lines = [f"{'step':14} {'benchmark':12} {'method':26} {'dataset':16} {'ok':>3} {'failed':>6} "
             f"{'samples/s':>10} {'GFLOP/s':>9} {'MFU':>7}"]
    for row in rows:
        lines.append(f"{row['step']:14} {row['benchmark']:12} {row['method']:26} {row['dataset']:16} {row['ok']:>3} "
                     f"{row['failed']:>6} {number(row['rates']):>10} {number(row['gflops']):>9} "
                     f"{number(row['mfu'], 100, '%'):>7}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmarks", nargs="*", help="smoke steps: these benchmarks only (default: every benchmark)")
    parser.add_argument("--results", default="results-gpu", help="records go to RESULTS/<step>/")
    parser.add_argument("--data-dir", default=None, help="holds planetoid/, fair_bail/ and nuscenes_one_sample/ (see the module docstring)")
    parser.add_argument("--accelerator", default="gpu", choices=["gpu", "cpu"])
    parser.add_argument("--only", nargs="+", choices=[step.name for step in STEPS], help="run these steps only")
    parser.add_argument("--dry-run", action="store_true", help="show what each step would run, run nothing")
    args = parser.parse_args(argv)
    steps = [step for step in STEPS if not args.only or step.name in args.only]
    results = Path(args.results)
    codes = []
    for step in steps:
        print(f"gpu_check: step {step.name}", flush=True)
        codes.append(litbench_main(step.argv(accelerator=args.accelerator, results=results, data_dir=args.data_dir,
                                              dry_run=args.dry_run, smoke_benchmarks=args.benchmarks)))
    if not args.dry_run:
        print(format_summary(summary_rows(results, steps)))
    if any(code == 2 for code in codes):
        return 2
    return 1 if any(codes) else 0


if __name__ == "__main__":
    sys.exit(main())
