"""Property-based bad input: whatever a spec file or a record file holds, the loaders either accept
it or raise their own one-line error (SpecError / CorruptRecordError) — never a traceback."""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.spec import SpecError, load_spec
from leaderboard.records import FIELD_TYPES, CorruptRecordError, RunRecord, read_record

TOY_SPEC = Path(__file__).resolve().parents[1] / "toy" / "specs" / "toy.yaml"
VALID_SPEC: dict[str, Any] = yaml.safe_load(TOY_SPEC.read_text())
VALID_RECORD = RunRecord(benchmark="toy", method="linear", role="proposed", dataset="linear", profile="smoke", seed=0,
                         status="ok", config={"trainer": {}}, config_hash="0123456789abcdef",
                         metrics={"mse": 0.01}).to_dict()
PROPERTY_SETTINGS = settings(max_examples=int(os.environ.get("LITBENCH_HYPOTHESIS_EXAMPLES", 150)), deadline=None, suppress_health_check=[HealthCheck.too_slow])

# values of the wrong kind that a hand-edited YAML or JSON file might hold
junk_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=8),
                        st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


def paths_of(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into nested dicts/lists."""
    found = [prefix] if prefix else []
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += paths_of(value, prefix + (key,))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found += paths_of(value, prefix + (index,))
    return found


def mutate(tree: Any, path: tuple, action: str, junk: Any) -> Any:
    tree = copy.deepcopy(tree)
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "replace":
        parent[last] = junk
    elif isinstance(parent, dict):  # "add": an unknown key beside the chosen one
        parent[f"unexpected_{last}"] = junk
    return tree


def load_text_as_spec(text: str) -> str:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.yaml"
        path.write_text(text)
        try:
            load_spec(path)
        except SpecError as error:
            assert "\n" not in str(error), "spec errors are one line"
            return "error"
        return "loaded"


@PROPERTY_SETTINGS
@given(data=st.data(), action=st.sampled_from(["delete", "replace", "add"]), junk=junk_values)
def test_a_mutated_spec_loads_or_raises_one_line_spec_error(data, action: str, junk: Any) -> None:
    path = data.draw(st.sampled_from(paths_of(VALID_SPEC)))
    load_text_as_spec(yaml.safe_dump(mutate(VALID_SPEC, path, action, junk)))


@PROPERTY_SETTINGS
@given(text=st.text(max_size=200))
def test_arbitrary_text_as_a_spec_raises_spec_error(text: str) -> None:
    assert load_text_as_spec(text) == "error"


@PROPERTY_SETTINGS
@given(cut=st.integers(min_value=0, max_value=len(TOY_SPEC.read_text()) - 1))
def test_a_truncated_spec_loads_or_raises_spec_error(cut: int) -> None:
    load_text_as_spec(TOY_SPEC.read_text()[:cut])


def read_bytes_as_record(payload: bytes) -> str:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "seed-0.json"
        path.write_bytes(payload)
        try:
            record = read_record(path)
        except CorruptRecordError as error:
            assert "\n" not in str(error)
            return "corrupt"
        assert_usable(record)
        return "read"


def assert_usable(record: RunRecord) -> None:
    """Anything the reader accepts must be safe for the leaderboard, which trusts these types."""
    for name, kinds in FIELD_TYPES.items():
        assert isinstance(getattr(record, name), kinds), name
    assert isinstance(record.seed, int) and not isinstance(record.seed, bool)
    assert record.status in ("ok", "failed")
    assert all(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
               for value in record.metrics.values())


@PROPERTY_SETTINGS
@given(cut=st.integers(min_value=0, max_value=len(json.dumps(VALID_RECORD)) - 1))
def test_a_truncated_record_is_corrupt(cut: int) -> None:
    assert read_bytes_as_record(json.dumps(VALID_RECORD).encode()[:cut]) == "corrupt"


@PROPERTY_SETTINGS
@given(data=st.data(), action=st.sampled_from(["delete", "replace", "add"]), junk=junk_values)
def test_a_mutated_record_reads_or_is_corrupt(data, action: str, junk: Any) -> None:
    path = data.draw(st.sampled_from(paths_of(VALID_RECORD)))
    read_bytes_as_record(json.dumps(mutate(VALID_RECORD, path, action, junk), default=str).encode())


@PROPERTY_SETTINGS
@given(field=st.sampled_from(sorted(VALID_RECORD)), junk=junk_values)
def test_any_top_level_field_of_the_wrong_type_is_caught(field: str, junk: Any) -> None:
    read_bytes_as_record(json.dumps({**VALID_RECORD, field: junk}).encode())


@PROPERTY_SETTINGS
@given(junk=junk_values)
def test_a_metric_that_is_not_a_number_is_caught(junk: Any) -> None:
    read_bytes_as_record(json.dumps({**VALID_RECORD, "metrics": {"mse": junk}}).encode())


@PROPERTY_SETTINGS
@given(payload=st.binary(max_size=64))
def test_random_bytes_are_a_corrupt_record(payload: bytes) -> None:
    assert read_bytes_as_record(payload) == "corrupt"
