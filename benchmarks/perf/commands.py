"""``litbench perf parity`` and ``litbench perf step``: their arguments and what they run and print.
The measurements are in ``parity`` and ``step``; each writes a perf record under
``RESULTS/perf/<kind>/``, which the leaderboard shows.
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
    step = _measurement_parser(kinds, "step", help="one training step, eager and compiled: ms/step, FLOP/s, top operators",
                               profile="cpu")
    step.add_argument("--stage", default=None, help="measure this stage's training step instead of the method's")
    step.add_argument("--modes", default="eager,compiled", help="comma-separated: eager, compiled (default both)")
    step.add_argument("--warmup", type=int, default=5, help="steps before the clock (compilation happens here)")
    step.add_argument("--steps", type=int, default=20, help="timed steps")
    step.add_argument("--profiled-steps", type=int, default=5, help="steps under torch.profiler after the timed ones")
    step.add_argument("--top", type=int, default=8, help="operators listed by self time")
    step.add_argument("--seed", type=int, default=0)


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
    if args.perf_command == "step":
        return perf_step(args, plan, dataset, console)
    return perf_parity(args, plan, dataset, console)


def perf_step(args: argparse.Namespace, plan, dataset: str, console: Console) -> int:
    from benchmarks.perf.records import write_perf_record
    from benchmarks.perf.step import MODES, step_payload

    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    if not modes or any(mode not in MODES for mode in modes):
        raise UsageError(f"--modes {args.modes!r}: give one or both of {', '.join(MODES)}, comma-separated")
    if args.warmup < 1 or args.steps < 1 or args.profiled_steps < 0:
        raise UsageError("--warmup and --steps must be at least 1, --profiled-steps at least 0")
    payload = step_payload(plan.config, stage=args.stage, modes=modes, warmup=args.warmup, steps=args.steps,
                           profiled_steps=args.profiled_steps, top=args.top)
    name = f"{plan.benchmark}-{plan.method}{'-' + args.stage if args.stage else ''}-{dataset}-{args.profile}"
    path = write_perf_record(Path(args.results), kind="step", name=name,
                             payload={**payload, "config_hash": plan.config_hash})
    for mode, timing in payload["modes"].items():
        ops = ", ".join(f"{op} {100 * share:.0f}%" for op, share in timing["top_ops"][:4])
        console.print(f"{payload['measured']} \\[{mode}]: {timing['ms_per_step']:.1f} ms/step, "
                      f"{timing['achieved_gflops'] or 0:.1f} GFLOP/s (matmul probe {payload['probe_gflops']:.1f}), "
                      f"warm-up {timing['first_steps_s']:.1f} s; top ops: {ops}")
    if payload["compile_speedup"]:
        console.print(f"compiled / eager speed-up: {payload['compile_speedup']:.2f}x")
    console.print(f"perf record: {path}")
    return EXIT_OK


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
