"""``litbench perf parity``: its arguments and what it runs and prints. The measurement itself is in
``parity``; it writes a perf record under ``RESULTS/perf/parity/``, which the leaderboard shows.
(Suite wall time is recorded by every ``litbench run``; GPU throughput by ``perf.gpu_check``.)"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from benchmarks.errors import EXIT_OK, UsageError
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
    return perf_parity(args, plan, dataset, console)


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
