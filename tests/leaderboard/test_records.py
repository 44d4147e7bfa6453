"""Run records: atomic writes, failures never replace ok records, corrupt files are reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leaderboard.records import CorruptRecordError, RecordStore, RunRecord, config_hash, read_record


def make(status: str = "ok", acc: float = 0.5, seed: int = 0, config_hash_: str = "h1") -> RunRecord:
    return RunRecord(benchmark="b", method="m", role="proposed", dataset="d", profile="cpu", seed=seed,
                     status=status, config={"x": 1}, config_hash=config_hash_, metrics={"acc": acc})


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    path = store.write(make())
    assert path == tmp_path / "b/d/m/cpu/seed-0.json"
    assert read_record(path).metrics == {"acc": 0.5}
    assert store.load("b/d/m/cpu/seed-0").config_hash == "h1"
    assert store.load("b/d/m/cpu/seed-9") is None
    assert not list(tmp_path.rglob("*.tmp"))


def test_failure_is_written_beside_an_ok_record(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    ok_path = store.write(make(acc=0.7))
    failed = make(status="failed", config_hash_="h2")
    failed_path = store.write(failed)
    assert failed_path.name == "seed-0.failed.json"
    assert read_record(ok_path).metrics["acc"] == 0.7
    assert [r.status for r in store.iter_records()] == ["ok"]  # the leaderboard keeps the ok one


def test_corrupt_and_foreign_records_are_errors(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    bad = tmp_path / "b/d/m/cpu/seed-1.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"schema": "litbench.run-record/1", "benchmark": ')
    newer = tmp_path / "b/d/m/cpu/seed-2.json"
    newer.write_text(json.dumps({**make().to_dict(), "schema": "litbench.run-record/9"}))
    items = list(store.iter_records())
    assert all(isinstance(item, CorruptRecordError) for item in items)
    assert "not valid JSON" in str(items[0]) and "schema 'litbench.run-record/9'" in str(items[1])
    with pytest.raises(CorruptRecordError):
        store.load("b/d/m/cpu/seed-1")


def test_find_by_unique_suffix(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    store.write(make(seed=0))
    store.write(make(seed=1))
    assert store.find("m/cpu/seed-1").seed == 1
    with pytest.raises(KeyError, match="no record 'nosuch'"):
        store.find("nosuch")


def test_config_hash_is_order_independent() -> None:
    assert config_hash({"a": 1, "b": {"c": 2}}) == config_hash({"b": {"c": 2}, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
