"""Every spec in the registry runs its smoke profile (timm-style: parametrised over what is registered,
so a new spec is tested without editing this file). Each run covers the two arms of the spec's first
claim on its smoke datasets, so the leaderboard can judge that claim from what the smoke runs recorded."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from benchmarks.cli import main
from benchmarks.spec import load_all_specs
from leaderboard.build import build_leaderboard
from leaderboard.claims import INVALID, VERDICTS
from leaderboard.records import RecordStore

SPECS = load_all_specs(Path(__file__).resolve().parents[2] / "benchmarks" / "specs")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_spec_runs_its_smoke_profile_and_its_first_claim_is_judged(name: str, tmp_path: Path) -> None:
    spec = SPECS[name]
    datasets = spec.datasets_for("smoke")
    # a claim judged on the smoke data, else the first one (restricted to real datasets: no row expected)
    claim = next((c for c in spec.claims if not c.datasets or set(c.datasets) & set(datasets)), spec.claims[0])
    arms = [claim.method, claim.baseline]
    results = tmp_path / "results"
    code = main(["run", name, "--profile", "smoke", "--seeds", "2", "--methods", ",".join(arms),
                 "--results", str(results), "--wandb", "disabled"])
    assert code == 0
    records = list(RecordStore(results).iter_records())
    assert sorted((r.method, r.dataset, r.seed) for r in records) == sorted(
        (arm, dataset, seed) for arm in arms for dataset in datasets for seed in range(2))
    for record in records:
        assert record.ok and record.profile == "smoke"
        assert claim.metric in record.metrics, f"{record.run_id} does not record the claim's {claim.metric}"
    paths = build_leaderboard(results, tmp_path / "board", specs={name: spec.snapshot()})
    with paths["claims"].open() as handle:
        rows = [row for row in csv.DictReader(handle) if row["claim"] == claim.id]
    assert sorted(row["dataset"] for row in rows) == sorted(set(datasets) & set(claim.datasets or datasets))
    for row in rows:
        assert row["verdict"] in VERDICTS and row["n"] == "2"
        assert row["verdict"] != INVALID or row["reason"]  # an invalid verdict says why
