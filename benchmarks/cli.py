"""`litbench list | datasets | run | leaderboard | show | fit | sweep | perf | verify` — the command-line contract of DESIGN.md.

Exit status: 0 when every run succeeded, 1 when any run failed (the others are still recorded),
2 for bad usage (unknown benchmark/method/profile, malformed spec, missing data dir, corrupt record),
always with a one-line message on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from benchmarks.spec import PROFILES, SpecError, load_all_specs
from benchmarks.suite_spec import load_all_suites
from leaderboard.records import CorruptRecordError, RecordStore

from benchmarks.errors import EXIT_FAILED_RUNS, EXIT_OK, EXIT_USAGE, UsageError
from benchmarks.process import configure_process


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + exits 2; keep it to one line
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="litbench", description="PyTorch Lightning benchmark suite of ten papers.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_ArgumentParser)

    commands.add_parser("list", help="benchmarks, methods (role), profiles and datasets")

    datasets = commands.add_parser("datasets", help="the data formats each benchmark reads, their presets, the layout "
                                                    "under --data-dir and the command to run on your own dataset")
    datasets.add_argument("benchmarks", nargs="*", help="benchmark names (default: every benchmark)")

    run = commands.add_parser("run", help="run benchmarks and write one record per run")
    run.add_argument("benchmarks", nargs="*", help="benchmark names (default: every benchmark, or the suite's)")
    selection = run.add_mutually_exclusive_group()
    selection.add_argument("--suite", help="a named selection from benchmarks/suites/ (smoke, cpu, full)")
    selection.add_argument("--profile", choices=PROFILES, help="profile to run (default: cpu)")
    run.add_argument("--methods", type=_csv, help="comma-separated methods (default: all)")
    run.add_argument("--datasets", type=_csv, help="comma-separated datasets (default: the profile's)")
    run.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override any key of the resolved config, e.g. trainer.max_epochs=5 or a stage's: "
                          "stages.NAME.trainer.max_epochs=2 (repeatable)")
    run.add_argument("--seeds", type=int, help="number of seeds 0..N-1 (default: the profile's)")
    run.add_argument("--data-dir", help="data root laid out like ../shared/data (default: $LITBENCH_DATA)")
    run.add_argument("--cache-dir", help="processed data and stage cache (default: $LITBENCH_CACHE or RESULTS/cache)")
    run.add_argument("--results", default="results", help="records folder (default: results/)")
    run.add_argument("--wandb", choices=("offline", "online", "disabled"), default="offline")
    run.add_argument("--wandb-project", default=None, help="wandb project (default: the suite name, or litbench)")
    run.add_argument("--accelerator", choices=("cpu", "gpu", "auto"), default=None)
    run.add_argument("--devices", default=None, help="devices per node (an integer or auto)")
    run.add_argument("--strategy", choices=("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true"), default=None)
    run.add_argument("--num-nodes", type=int, default=None)
    run.add_argument("--precision", default=None, help="Lightning precision, e.g. 32-true or bf16-mixed")
    run.add_argument("--peak-tflops", type=float, default=None, metavar="TFLOPS",
                     help="dense peak TFLOP/s of one GPU at the run's precision, for the MFU of a chip that "
                          "benchmarks/peak_flops.py does not list (recorded, not part of the config)")
    run.add_argument("--launcher", choices=("local", "slurm"), default="local")
    run.add_argument("--workers", type=int, default=None,
                     help="independent runs in parallel processes, each with cpu_count/N threads "
                          "(default: the profile's `workers`, 1 unless the spec says)")
    run.add_argument("--slurm-partition", default=None)
    run.add_argument("--slurm-account", default=None)
    run.add_argument("--slurm-time-min", type=int, default=None, help="SLURM time limit per run in minutes")
    run.add_argument("--slurm-gpus-per-node", type=int, default=None,
                     help="GPUs to request per node (default: --devices when --accelerator gpu)")
    run.add_argument("--timeout", type=_positive_seconds, default=None, metavar="SECONDS",
                     help="kill a run after this long and record it as failed (runs then use their own process)")
    run.add_argument("--force", action="store_true", help="rerun even when an identical ok record exists")
    run.add_argument("--compile", action="store_true",
                     help="train and test each method's module under torch.compile (part of the config hash)")
    run.add_argument("--dry-run", action="store_true",
                     help="show what would run, be skipped, or cannot run (e.g. missing data), and run nothing")

    board = commands.add_parser("leaderboard", help="build LEADERBOARD.md, results.csv, claims.csv, index.html")
    board.add_argument("--results", default="results")
    board.add_argument("--out", default="leaderboard")
    board.add_argument("--wandb", choices=("offline", "online", "disabled"), default="offline")
    board.add_argument("--wandb-project", default="litbench")
    board.add_argument("--readme", default=None, metavar="README.md",
                       help="regenerate the results excerpt between the litbench:results markers of this file")
    board.add_argument("--readme-profile", default="cpu", choices=PROFILES, help="profile the excerpt shows (default cpu)")

    show = commands.add_parser("show", help="print one record")
    show.add_argument("run_id", help="e.g. dcagc/Cora/dcagc/cpu/seed-0 (a unique suffix is enough)")
    show.add_argument("--results", default="results")
    show.add_argument("--json", action="store_true", help="print the raw JSON")

    from benchmarks.perf.commands import add_perf_parser  # the perf commands live with the measurements

    add_perf_parser(commands, parser_class=_ArgumentParser)

    sweep = commands.add_parser("sweep", help="choose a profile's hyper-parameter on the validation split")
    sweep.add_argument("benchmark")
    sweep.add_argument("method")
    sweep.add_argument("--param", required=True, action="append", metavar="KEY.PATH",
                       help="the config key to sweep, as for --set (e.g. model.init_args.pretrain_steps); repeat it "
                            "to move several keys together, each value then joins theirs with ':'")
    sweep.add_argument("--values", required=True, type=_csv, help="comma-separated values to try (at least two)")
    sweep.add_argument("--profile", choices=PROFILES, default="cpu")
    sweep.add_argument("--dataset", default=None, help="one dataset (default: the profile's first)")
    sweep.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1 per value (default 2)")
    sweep.add_argument("--metric", default=None, help="validation metric that chooses (default: the primary)")
    sweep.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY.PATH=VALUE",
                       help="further overrides for every run of the sweep (repeatable)")
    sweep.add_argument("--data-dir", help="data root laid out like ../shared/data (default: $LITBENCH_DATA)")
    sweep.add_argument("--cache-dir", help="stage cache shared with ordinary runs (default: RESULTS/cache)")
    sweep.add_argument("--results", default="results", help="records folder; the sweep goes to RESULTS/calibration/")
    sweep.add_argument("--workers", type=int, default=None)
    sweep.add_argument("--force", action="store_true", help="rerun values whose records exist")

    verify = commands.add_parser("verify", help="re-run a seeded sample of committed ok records here and compare")
    verify.add_argument("benchmarks", nargs="*", help="benchmark names (default: every benchmark with records)")
    amount = verify.add_mutually_exclusive_group()
    amount.add_argument("--sample", type=int, default=2, metavar="N",
                        help="records per benchmark, stratified by method (default 2)")
    amount.add_argument("--all", action="store_true", help="every ok record of the profile")
    verify.add_argument("--profile", choices=PROFILES, default="cpu", help="profile whose records to re-run (default cpu)")
    verify.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    verify.add_argument("--twice", action="store_true", help="re-run each record twice here (nondeterminism on one machine)")
    verify.add_argument("--data-dir", help="data root laid out like ../shared/data (default: each record's own)")
    verify.add_argument("--results", default="results", help="committed records (never written; the verification "
                                                             "record goes to RESULTS/verify/)")
    verify.add_argument("--scratch", default=None, help="folder for the re-runs (default: a temporary one, removed)")
    verify.add_argument("--cache-dir", default=None, help="reuse this stage and data cache (e.g. results/cache: "
                                                          "cached stages are then reused, not re-verified; default: "
                                                          "fresh caches in the scratch folder)")

    fit = commands.add_parser("fit", help="one run through LightningCLI from a resolved config")
    fit.add_argument("--config", required=True, help="a resolved config (YAML/JSON), e.g. a record's config")
    return parser


# ----------------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    specs = load_all_specs()
    table = Table(title="litbench benchmarks")
    for column in ("benchmark", "task", "methods (role)", "profiles", "datasets"):
        table.add_column(column)
    for name, spec in specs.items():
        methods = "\n".join(f"{m} ({s.role})" for m, s in spec.methods.items())
        table.add_row(name, spec.task, methods, ", ".join(spec.profiles), ", ".join(spec.data.datasets))
    console.print(table)
    suites = load_all_suites()
    console.print("suites: " + ", ".join(f"{s.name} ({s.profile}: {', '.join(s.benchmarks) or 'every benchmark'})"
                                         for s in suites.values()))
    return EXIT_OK


def cmd_datasets(args: argparse.Namespace, console: Console) -> int:
    from benchmarks.datasets_view import benchmark_data, render, select_specs

    entries = [benchmark_data(spec) for spec in select_specs(load_all_specs(), args.benchmarks)]
    for line in render(entries):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK


def _selection(args: argparse.Namespace, specs: dict) -> tuple[list[str], str, dict[str, dict[str, list[str]]], int | None, str]:
    """(benchmarks, profile, per-benchmark method/dataset selection, seeds, wandb project)."""
    if args.suite:
        suites = load_all_suites()
        if args.suite not in suites:
            raise UsageError(f"unknown suite {args.suite!r} (known: {', '.join(sorted(suites))})")
        suite = suites[args.suite]
        names = args.benchmarks or list(suite.benchmarks) or list(specs)  # no list: every spec found
        return names, suite.profile, suite.benchmarks, args.seeds or suite.seeds, suite.name
    return args.benchmarks or list(specs), args.profile or "cpu", {}, args.seeds, "litbench"


def _locations(args: argparse.Namespace) -> tuple[str | None, Path, Path]:
    """(data root or None, results folder, stage/data cache) from --data-dir, --results, --cache-dir."""
    data_dir = args.data_dir or os.environ.get("LITBENCH_DATA")
    if data_dir and not Path(data_dir).is_dir():
        raise UsageError(f"--data-dir {data_dir!r} is not a folder; point it at a data root like ../shared/data")
    results_dir = Path(args.results).resolve()
    cache_dir = Path(args.cache_dir or os.environ.get("LITBENCH_CACHE") or results_dir / "cache").resolve()
    return data_dir, results_dir, cache_dir


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (a scheduler, `kill`) stops the suite like Ctrl-C: workers go too


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    import threading

    if threading.current_thread() is not threading.main_thread():
        return _cmd_run(args, console)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _cmd_run(args, console)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    from benchmarks.launch import LaunchOptions, plan_runs

    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.seeds is not None and args.seeds < 1:
        raise UsageError("--seeds must be at least 1")
    if args.peak_tflops is not None:
        if args.peak_tflops <= 0:
            raise UsageError("--peak-tflops must be positive (one GPU's dense TFLOP/s at the run's precision)")
        os.environ["LITBENCH_PEAK_TFLOPS"] = str(args.peak_tflops)  # run processes inherit it
    data_dir, results_dir, cache_dir = _locations(args)
    broken: dict[str, SpecError] = {}
    specs = load_all_specs(broken=broken)
    names, profile, suite_selection, seeds, project = _selection(args, specs)
    broken_stems, broken_selected = _drop_broken_specs(args, names, broken)
    names = [name for name in names if name not in broken_stems]
    hardware = {"accelerator": args.accelerator, "devices": _devices(args.devices), "strategy": args.strategy,
                "num_nodes": args.num_nodes, "precision": args.precision, "compile": args.compile or None}
    plans = []
    for name in names:
        chosen = suite_selection.get(name, {})
        methods = args.methods or chosen.get("methods") or None
        if args.methods and len(names) > 1 and name in specs:
            # One --methods list may span several benchmarks: each takes the names it has.
            methods = [m for m in args.methods if m in specs[name].methods]
            if not methods:
                continue
        plans += plan_runs(specs, benchmarks=[name], profile=profile, methods=methods,
                           datasets=args.datasets or chosen.get("datasets") or None, seeds=seeds, sets=args.sets,
                           hardware=hardware, data_dir=str(Path(data_dir).resolve()) if data_dir else None,
                           cache_dir=str(cache_dir))
    if not plans:
        raise UsageError(f"nothing to run: no selected benchmark has the methods {', '.join(args.methods or [])}")
    options = LaunchOptions(results_dir=results_dir, cache_dir=cache_dir, launcher=args.launcher, workers=args.workers,
                            force=args.force, wandb_mode=args.wandb, wandb_project=args.wandb_project or project,
                            slurm={"partition": args.slurm_partition, "account": args.slurm_account,
                                   "time_min": args.slurm_time_min, "gpus_per_node": args.slurm_gpus_per_node},
                            timeout_s=args.timeout)
    failed = execute_plans(plans, specs=specs, options=options, profile=profile, console=console, dry_run=args.dry_run)
    if broken_selected:
        print(f"litbench: error: {broken_selected[0]}; fix that spec (the other benchmarks ran)", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_FAILED_RUNS if failed else EXIT_OK


def _drop_broken_specs(args: argparse.Namespace, names: list[str],
                       broken: dict[str, SpecError]) -> tuple[list[str], list[str]]:
    """(file stems, one-line errors) of the selected benchmarks whose spec does not load: they do
    not run, the others do. Named benchmarks (or, with no names, every spec file) count as selected."""
    selected = [stem for stem in broken if stem in names or not (args.benchmarks or args.suite)]
    if selected and not [name for name in names if name not in selected]:
        raise broken[selected[0]]  # nothing else to run: a plain usage error
    return selected, [str(broken[stem]).splitlines()[0] for stem in selected]


def execute_plans(plans: list[Any], *, specs: dict, options: Any, profile: str, console: Console,
                  record_wall_time: bool = True, dry_run: bool = False) -> int:
    """Run the plans that have no identical ok record yet, print one line per run; the number that failed.
    ``dry_run`` prints what would run, be skipped or cannot run (:mod:`benchmarks.dry_run`) and runs nothing."""
    from benchmarks.launch import DataError, Launcher
    from benchmarks.perf.suite import SuiteTally

    from benchmarks.config_check import check_configs

    launcher = Launcher(specs, options)
    todo, skipped = launcher.pending(plans)
    check_configs(todo)
    bad_data = launcher.preflight(todo)
    if dry_run:
        from benchmarks.dry_run import plan_rows, print_dry_run

        print_dry_run(plan_rows(plans, skipped_ids={plan.run_id for plan in skipped}, bad_data=bad_data),
                      profile=profile, console=console)
        return 0
    if bad_data and len(bad_data) == len(todo):
        raise DataError(next(iter(bad_data.values())))  # nothing else to run: a plain usage error
    if bad_data:
        todo = [plan for plan in todo if plan.run_id not in bad_data]
        for problem in dict.fromkeys(bad_data.values()):
            console.print(f"litbench: skipped the runs of {problem.split(':')[0]}: its data failed the check (below)")
    console.print(f"litbench: {len(plans)} runs planned ({profile} profile), {len(todo)} to run, "
                  f"{len(skipped)} skipped (an ok record with the same config exists; --force reruns)")
    tally = SuiteTally(profile=profile)
    for plans_of_kind, were_skipped in ((todo, False), (skipped, True)):
        for plan in plans_of_kind:
            tally.plan(plan.benchmark, workers=launcher.workers_for(plan), skipped=were_skipped)
    failed = 0
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("running", total=len(todo))
        done = 0

        def report(plan: Any, record: Any, seconds: float) -> None:
            nonlocal done, failed
            done += 1
            progress.advance(task)
            tally.finished(plan.benchmark, ok=record.ok, seconds=seconds,
                           stage_hits=[bool(stage.get("cache_hit")) for stage in (record.stages or {}).values()])
            if record.ok:
                metric_text = "  ".join(f"{k}={v:.4f}" for k, v in list(record.metrics.items())[:4] if isinstance(v, float))
                console.print(f"[green]ok[/]     [{done}/{len(todo)}] {plan.run_id}  {metric_text}  ({seconds:.1f}s)")
            else:
                failed += 1
                error = record.error or {}
                console.print(f"[red]failed[/] [{done}/{len(todo)}] {plan.run_id}  {error.get('type')}: "
                              f"{error.get('message')}  ({seconds:.1f}s)")
            progress.update(task, description=f"running ({done}/{len(todo)} done)")

        launcher.run(todo, report)
    if todo and launcher.is_writer and record_wall_time:
        # A suite's wall time is a recorded number too, in total and per benchmark.
        tally.write(options.results_dir)
    console.print(f"litbench: {len(todo) - failed} ok, {failed} failed, {len(skipped)} skipped; "
                  f"records in {options.results_dir}")
    if bad_data:  # the other runs ran; the exit code still says the input was bad
        raise DataError(f"{next(iter(bad_data.values()))}; its {len(bad_data)} run(s) did not run, the others did")
    return failed


def _devices(text: str | None) -> Any:
    if text is None or text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"--devices {text!r}: expected a positive integer or auto")
    return int(text)


def cmd_leaderboard(args: argparse.Namespace, console: Console) -> int:
    from leaderboard.build import build_leaderboard

    if not Path(args.results).is_dir():
        raise UsageError(f"no results folder {args.results!r}; run `litbench run` first or pass --results DIR")
    broken: dict[str, SpecError] = {}
    # A spec that does not load: its benchmark is judged by the spec snapshot in its records.
    snapshots = {name: spec.snapshot() for name, spec in load_all_specs(broken=broken).items()}
    from leaderboard.readme import ReadmeMarkersError

    corrupt = [str(item) for item in RecordStore(args.results).iter_records() if isinstance(item, CorruptRecordError)]
    # The closing error line names them; the builder's own warnings would say it twice.
    quiet = logging.Filter()
    quiet.filter = lambda entry: entry.getMessage() not in corrupt  # type: ignore[method-assign]
    logging.getLogger("litbench.leaderboard").addFilter(quiet)
    try:
        written = build_leaderboard(args.results, args.out, specs=snapshots, wandb_mode=args.wandb,
                                    wandb_project=args.wandb_project, readme=args.readme,
                                    readme_profile=args.readme_profile)
    except ReadmeMarkersError as exc:
        raise UsageError(str(exc)) from None
    finally:
        logging.getLogger("litbench.leaderboard").removeFilter(quiet)
    for kind, path in written.items():
        console.print(f"{kind}: {path}")
    if broken:
        raise UsageError(f"{str(next(iter(broken.values()))).splitlines()[0]}; the leaderboard judged that benchmark by "
                         "the spec snapshots in its records - fix the spec and rebuild")
    if corrupt:
        more = f" (and {len(corrupt) - 1} more, listed on the page)" if len(corrupt) > 1 else ""
        raise UsageError(f"the leaderboard left out a corrupt record: {corrupt[0]}{more}; the file is kept as it "
                         "is - rerun its run with `litbench run ... --force` or delete it")
    return EXIT_OK


def cmd_show(args: argparse.Namespace, console: Console) -> int:
    try:
        record = RecordStore(args.results).find(args.run_id)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    if args.json:
        print(json.dumps(record.to_dict(), indent=2, default=str))
        return EXIT_OK
    table = Table(title=f"{record.run_id}  [{record.status}]", show_header=False)
    table.add_column("field")
    table.add_column("value")
    for key in ("benchmark", "dataset", "method", "role", "profile", "seed", "config_hash", "started_at", "finished_at"):
        table.add_row(key, str(getattr(record, key)))
    for section in ("metrics", "cost", "hardware", "software", "stages"):
        for key, value in (getattr(record, section) or {}).items():
            table.add_row(f"{section}.{key}", f"{value:.6g}" if isinstance(value, float) else str(value))
    if record.error:
        table.add_row("error", f"{record.error.get('type')}: {record.error.get('message')}")
    console.print(table)
    if record.error and record.error.get("traceback_tail"):
        console.print(record.error["traceback_tail"], markup=False, highlight=False)
    return EXIT_OK


def cmd_fit(args: argparse.Namespace, console: Console) -> int:
    from benchmarks.fit import fit_from_config

    metrics = fit_from_config(args.config)
    print(json.dumps(metrics, sort_keys=True))  # last line of stdout: machine-readable
    return EXIT_OK



def cmd_verify(args: argparse.Namespace, console: Console) -> int:
    import threading

    if threading.current_thread() is not threading.main_thread():
        return _cmd_verify(args, console)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` cleans the scratch folder up like Ctrl-C
    try:
        return _cmd_verify(args, console)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _cmd_verify(args: argparse.Namespace, console: Console) -> int:
    from benchmarks.verify import run_verify
    from leaderboard.verification import VERIFY_HEADER, verification_row

    if args.sample < 1:
        raise UsageError("--sample must be at least 1")
    data_dir = args.data_dir or os.environ.get("LITBENCH_DATA")
    if args.data_dir and not Path(args.data_dir).is_dir():
        raise UsageError(f"--data-dir {args.data_dir!r} is not a folder; point it at a data root like ../shared/data")
    specs = {name: spec.snapshot() for name, spec in load_all_specs(broken={}).items()}
    command = " ".join(["litbench verify", *args.benchmarks, "--all" if args.all else f"--sample {args.sample}",
                        "--profile", args.profile, "--seed", str(args.seed), *(["--twice"] if args.twice else []),
                        *(["--cache-dir", args.cache_dir] if args.cache_dir else [])])
    written, withheld = run_verify(
        results_dir=Path(args.results), benchmarks=args.benchmarks, profile=args.profile,
        per_benchmark=None if args.all else args.sample, seed=args.seed, twice=args.twice, data_dir=data_dir,
        scratch=Path(args.scratch) if args.scratch else None, command=command, specs=specs,
        progress=lambda line: console.print(f"verify: {line}", markup=False),
        cache_dir=Path(args.cache_dir).resolve() if args.cache_dir else None)
    table = Table(title="litbench verify")
    for column in VERIFY_HEADER[:8]:
        table.add_column(column)
    for verification, path in written:
        table.add_row(*verification_row(verification)[:8])
    console.print(table)
    for verification, path in written:
        console.print(f"verification record: {path}")
    if withheld:
        print(f"litbench: error: {withheld[0]}" + (f" (and {len(withheld) - 1} more)" if len(withheld) > 1 else ""),
              file=sys.stderr)
        return EXIT_FAILED_RUNS
    return EXIT_OK


def cmd_sweep(args: argparse.Namespace, console: Console) -> int:
    from benchmarks.calibrate import run_sweep

    if args.seeds < 1:
        raise UsageError("--seeds must be at least 1")
    data_dir, results_dir, cache_dir = _locations(args)
    command = " ".join(["litbench sweep", args.benchmark, args.method,
                        *(part for parameter in args.param for part in ("--param", parameter)),
                        "--values", ",".join(args.values), "--profile", args.profile, "--seeds", str(args.seeds),
                        *(["--dataset", args.dataset] if args.dataset else []),
                        *(["--metric", args.metric] if args.metric else []),
                        *(part for assignment in args.sets for part in ("--set", assignment)),
                        *(["--data-dir", "../shared/data"] if data_dir else [])])

    def execute(plans: list[Any], **kwargs: Any) -> int:
        return execute_plans(plans, console=console, record_wall_time=False, **kwargs)

    path, failed = run_sweep(load_all_specs(), benchmark=args.benchmark, method=args.method, parameters=args.param,
                             values=args.values, profile=args.profile, dataset=args.dataset, seeds=args.seeds,
                             metric=args.metric, sets=args.sets,
                             data_dir=str(Path(data_dir).resolve()) if data_dir else None,
                             results_dir=results_dir, cache_dir=cache_dir, workers=args.workers, force=args.force,
                             command=command, execute=execute)
    summary = json.loads(path.read_text())
    for entry in summary["values"]:
        mean = "—" if entry["mean"] is None else f"{entry['mean']:.4f}"
        console.print(f"  {summary['parameter']}={json.dumps(entry['value'])}: val {summary['metric']} {mean} (n={entry['n']})")
    console.print(f"litbench: chosen {summary['parameter']}={json.dumps(summary['chosen'])} on the validation split "
                  f"(the {args.profile} profile uses {json.dumps(summary['profile_value'])}); summary in {path}")
    return EXIT_FAILED_RUNS if failed else EXIT_OK


def cmd_perf(args: argparse.Namespace, console: Console) -> int:
    from benchmarks.perf.commands import run_perf_command

    return run_perf_command(args, console)


COMMANDS = {"list": cmd_list, "datasets": cmd_datasets, "run": cmd_run, "leaderboard": cmd_leaderboard, "show": cmd_show, "fit": cmd_fit,
            "perf": cmd_perf, "sweep": cmd_sweep, "verify": cmd_verify}


def main(argv: list[str] | None = None) -> int:
    configure_process()
    console = Console(stderr=False, highlight=False)
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args, console)
    except (UsageError, SpecError, CorruptRecordError, FileNotFoundError) as exc:
        message = str(exc.args[0]) if exc.args else str(exc)
        print(f"litbench: error: {message.splitlines()[0] if message else type(exc).__name__}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("litbench: interrupted; finished runs are recorded, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
