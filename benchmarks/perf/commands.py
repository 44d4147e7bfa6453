"""``litbench perf``: its sub-commands' arguments and what each one runs and prints. The
measurements themselves are in ``parity``, ``threads`` and ``before_after``; every one writes a
perf record under ``RESULTS/perf/<kind>/``, which the leaderboard shows."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rich.console import Console

from benchmarks.cli import EXIT_OK, UsageError
from benchmarks.spec import PROFILES, load_all_specs


def _measurement_parser(kinds: argparse._SubParsersAction, name: str, *, help: str, profile: str) -> argparse.ArgumentParser:
    """A sub-command measuring one resolved run (BENCHMARK METHOD, dataset, profile, --set)."""
    parser = kinds.add_parser(name, help=help)
    parser.add_argument("benchmark")
    parser.add_argument("method")
    parser.add_argument("--dataset", default=None, help="default: the profile's first dataset")
    parser.add_argument("--profile", choices=PROFILES, default=profile)
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY.PATH=VALUE")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--results", default="results")
    return parser


def add_perf_parser(commands: argparse._SubParsersAction, *, parser_class: type[argparse.ArgumentParser]) -> None:
    perf = commands.add_parser("perf", help="performance measurements, written as perf records under RESULTS/perf/")
    kinds = perf.add_subparsers(dest="perf_command", required=True, parser_class=parser_class)
    parity = _measurement_parser(kinds, "parity", help="Lightning vs a hand-written PyTorch loop: epoch time and losses",
                                 profile="smoke")
    parity.add_argument("--epochs", type=int, default=3)
    parity.add_argument("--repeats", type=int, default=3, help="Lightning/plain pairs, in counterbalanced order")
    parity.add_argument("--seed", type=int, default=0)

    threads = _measurement_parser(kinds, "threads", profile="cpu",
                                  help="one run under 1 thread and N threads with OpenMP active/passive wait")
    threads.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="N (default: the CPU count)")
    threads.add_argument("--repeats", type=int, default=2, help="alternating rounds over the settings")
    threads.set_defaults(seed=0)  # the measured run is `litbench run ... --seeds 1`, i.e. seed 0

    before_after = _measurement_parser(kinds, "before-after", profile="smoke",
                                       help="a method's epoch time with its model module at an earlier git revision "
                                            "vs the working tree, in one process")
    before_after.add_argument("--rev", required=True, help="the git revision of the 'before' code (commit, tag, branch)")
    before_after.add_argument("--also-module", dest="also_modules", action="append", default=[], metavar="MODULE",
                              help="another module to take from REV too, e.g. modules.dcagc_losses (repeatable)")
    before_after.add_argument("--epochs", type=int, default=3)
    before_after.add_argument("--repeats", type=int, default=4, help="before/after pairs, in counterbalanced order")
    before_after.add_argument("--seed", type=int, default=0)


def run_perf_command(args: argparse.Namespace, console: Console) -> int:
    from benchmarks.resolve import check_stage_sets, resolve_run

    specs = load_all_specs()
    if args.benchmark not in specs:
        raise UsageError(f"unknown benchmark {args.benchmark!r} (known: {', '.join(sorted(specs))})")
    spec = specs[args.benchmark]
    if args.profile not in spec.profiles:
        raise UsageError(f"benchmark {args.benchmark!r} has no profile {args.profile!r}")
    dataset = args.dataset or spec.datasets_for(args.profile)[0]
    plan = resolve_run(spec, method=args.method, dataset=dataset, profile=args.profile, seed=args.seed,
                       sets=args.sets, data_dir=args.data_dir)
    check_stage_sets([plan], args.sets)
    measure = {"threads": perf_threads, "parity": perf_parity, "before-after": perf_before_after}[args.perf_command]
    return measure(args, plan, dataset, console)


def perf_parity(args: argparse.Namespace, plan, dataset: str, console: Console) -> int:
    from benchmarks.perf.parity import compare
    from benchmarks.perf.records import write_perf_record

    result = compare(plan.config, epochs=args.epochs, repeats=args.repeats)
    path = write_perf_record(Path(args.results), kind="parity", name=f"{plan.benchmark}-{plan.method}-{dataset}-{args.profile}",
                             payload={"benchmark": plan.benchmark, "method": plan.method, "dataset": dataset,
                                      "profile": args.profile, "config_hash": plan.config_hash, **result.as_dict()})
    console.print(f"{plan.benchmark}/{plan.method} on {dataset} ({args.profile}): Lightning {result.lightning_epoch_s:.3f} s/epoch, "
                  f"plain {result.plain_epoch_s:.3f} s/epoch, ratio {result.ratio:.3f} "
                  f"(95% CI {_interval_text(result.ratio_ci)}; goal <= 1.05: {result.goal}); "
                  f"CPU-time ratio {result.cpu_ratio:.3f} (95% CI {_interval_text(result.cpu_ratio_ci)}: {result.cpu_goal}); "
                  f"max |loss diff| {result.max_loss_diff:.2e} over {result.steps} steps "
                  f"({'equal' if result.losses_equal_5_decimals else 'NOT equal'} to 5 decimals)")
    console.print(f"perf record: {path}")
    return EXIT_OK


def _interval_text(interval: tuple[float, float] | None) -> str:
    return "n/a: fewer than 2 repeats" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def perf_threads(args: argparse.Namespace, plan, dataset: str, console: Console) -> int:
    from benchmarks.perf.records import write_perf_record
    from benchmarks.perf.threads import compare_thread_settings

    run_args = [plan.benchmark, "--profile", args.profile, "--methods", plan.method, "--datasets", dataset, "--seeds", "1",
                *(f"--set={assignment}" for assignment in args.sets), *(["--data-dir", args.data_dir] if args.data_dir else [])]
    try:
        result = compare_thread_settings(run_args, run_id=plan.run_id, threads=args.threads, repeats=args.repeats)
    except RuntimeError as exc:
        raise UsageError(f"perf threads: {exc}") from exc
    path = write_perf_record(Path(args.results), kind="threads", name=f"{plan.benchmark}-{plan.method}-{dataset}-{args.profile}",
                             payload={"benchmark": plan.benchmark, "method": plan.method, "dataset": dataset,
                                      "profile": args.profile, "config_hash": plan.config_hash, **result})
    for name, setting in result["settings"].items():
        console.print(f"{name}: median run {setting['median_run_s']:.1f} s "
                      f"({result['slowdown_vs_fastest'][name]:.2f}x the fastest)")
    console.print(f"load average before {result['load_before']}, after {result['load_after']}; perf record: {path}")
    return EXIT_OK


def perf_before_after(args: argparse.Namespace, plan, dataset: str, console: Console) -> int:
    from benchmarks.perf.before_after import RevisionError, compare_revisions
    from benchmarks.perf.records import write_perf_record

    try:
        result = compare_revisions(plan.config, revision=args.rev, epochs=args.epochs, repeats=args.repeats,
                                   also=tuple(args.also_modules))
    except RevisionError as exc:
        raise UsageError(f"perf before-after: {exc}") from exc
    path = write_perf_record(Path(args.results), kind="before_after",
                             name=f"{plan.benchmark}-{plan.method}-{dataset}-{args.profile}-{result.revision[:10]}",
                             payload={"benchmark": plan.benchmark, "method": plan.method, "dataset": dataset,
                                      "profile": args.profile, "config_hash": plan.config_hash, **result.as_dict()})
    console.print(f"{plan.benchmark}/{plan.method} on {dataset} ({args.profile}): {result.module} at {result.revision[:10]} "
                  f"{result.before_epoch_s:.3f} s/epoch, working tree {result.after_epoch_s:.3f} s/epoch; speed-up "
                  f"{result.speedup:.3f} (95% CI {_interval_text(result.speedup_ci)}; faster: {result.faster}); "
                  f"max relative loss difference {result.max_rel_loss_diff:.1e} over {result.steps} steps")
    console.print(f"perf record: {path}")
    return EXIT_OK
