"""``litbench run --dry-run``: what a selection would run, skip, or cannot run, before anything trains.

The same checks as a real run (resolved configs, ``check_configs``, each dataset's ``prepare_data``
check) decide each run's row, so a full-scale suite (``--suite full``) shows which datasets are
missing under ``--data-dir`` and where to get them, without starting a run.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

WILL_RUN, SKIPPED, CANNOT_RUN = "will run", "skipped", "cannot run"


def plan_rows(plans: list[Any], *, skipped_ids: set[str], bad_data: dict[str, str]) -> list[dict[str, Any]]:
    """One row per (benchmark, dataset, method): how many of its seeds will run, are skipped (an ok
    record with the same config exists) or cannot run, and why not, in plan order."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for plan in plans:
        row = rows.setdefault((plan.benchmark, plan.dataset, plan.method),
                              {"benchmark": plan.benchmark, "dataset": plan.dataset, "method": plan.method,
                               WILL_RUN: 0, SKIPPED: 0, CANNOT_RUN: 0, "problem": ""})
        if plan.run_id in bad_data:
            row[CANNOT_RUN] += 1
            row["problem"] = bad_data[plan.run_id]
        else:
            row[SKIPPED if plan.run_id in skipped_ids else WILL_RUN] += 1
    return list(rows.values())


def print_dry_run(rows: list[dict[str, Any]], *, profile: str, console: Console) -> None:
    """The table (seeds per method), then each distinct data problem once, with its fix."""
    table = Table(title=f"litbench run --dry-run ({profile} profile): seeds per method")
    for column in ("benchmark", "dataset", "method", WILL_RUN, SKIPPED, CANNOT_RUN):
        table.add_column(column, overflow="fold")
    for row in rows:
        cannot = f"[red]{row[CANNOT_RUN]}[/]" if row[CANNOT_RUN] else "0"
        table.add_row(row["benchmark"], row["dataset"], row["method"], str(row[WILL_RUN]), str(row[SKIPPED]), cannot)
    console.print(table)
    for problem in dict.fromkeys(row["problem"] for row in rows if row["problem"]):
        console.print(f"cannot run: {problem}", soft_wrap=True)
    totals = {status: sum(row[status] for row in rows) for status in (WILL_RUN, SKIPPED, CANNOT_RUN)}
    console.print(f"litbench: {totals[WILL_RUN]} runs would run, {totals[SKIPPED]} skipped (an ok record with the same "
                  f"config exists), {totals[CANNOT_RUN]} cannot run; nothing ran")
