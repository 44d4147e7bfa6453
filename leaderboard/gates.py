"""Validity gates: did the arms that a claim compares learn at all?

A claim is only worth judging between arms that learned. A spec declares its gates next to its
claims; every gate names a metric that each run records and a floor that a run must clear::

    gates:
      - {id: learned-auroc, metric: auroc, min: 0.65, why: "a constant score has AUROC 0.5"}
      - {id: beats-majority, metric: acc, reference_metric: majority_acc,
         why: "accuracy above the test set's majority-class rate, computed from its labels"}
      - {id: closer-than-random, metric: human_stat_distance, reference_method: random,
         methods: [pretrained, scratch]}
      - {id: trigger-optimised, metric: trigger_adam_steps, above: 0, methods: [doorping]}

Kinds (exactly one per gate):

- ``min`` / ``above``: the value is ≥ / > a fixed level (a chance level, or a sanity level that
  the paper spec states);
- ``max`` / ``below``: the value is ≤ / < a fixed level (fixed levels are compared at float32, the
  precision the metrics are computed in, so a top-1 of exactly 0.45 meets ``min: 0.45``);
- ``reference_metric``: the value beats another metric *of the same run* — a trivial reference that
  the module computes from the data and records (majority-class rate, one-cluster accuracy, ...),
  by more than ``by`` (default 0), in the metric's direction from ``metrics.higher_is_better``;
- ``reference_method``: the value beats the same seed's value of a reference arm (a random
  generator, a constant predictor, the untrained model), by more than ``by``, in the metric's
  direction.

``methods`` restricts a gate to some arms (default: every arm) and ``datasets`` to some datasets
(default: all). ``of_method`` reads the value from another arm's record of the same seed: an arm
built on a shared stage (a base model, a teacher) is checked by the record that shows whether that
stage learned (``{metric: bAP, min: 20, of_method: base_model}``). A gate is checked on every seed that enters a claim's pairing: one seed that did
not learn is enough to make the comparison invalid, because its pair is part of the interval.
A value that a run did not record fails its gate ("not recorded"), never passes it.

Besides the declared gates, two arms whose per-seed values of the claim's metric are identical
on every paired seed cannot test a claim either (``identical_arms``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd

from leaderboard.formatting import format_number
from leaderboard.frame import metric_column

FIXED_KINDS = {"min": ">=", "above": ">", "max": "<=", "below": "<"}
REFERENCE_KINDS = ("reference_metric", "reference_method")
GATE_KEYS = {"id", "metric", "methods", "datasets", "why", "by", "of_method", *FIXED_KINDS, *REFERENCE_KINDS}


class MalformedGateError(ValueError):
    """A gate that cannot be checked (unknown kind, missing metric, non-numeric level)."""


@dataclass(frozen=True)
class Gate:
    id: str
    metric: str
    kind: str  # one of FIXED_KINDS or REFERENCE_KINDS
    level: float | None = None  # for the fixed kinds
    reference: str | None = None  # metric or method name for the reference kinds
    by: float = 0.0
    methods: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    why: str = ""
    of_method: str | None = None  # read the value from this arm's record of the same seed

    def applies_to(self, *, method: str, dataset: str) -> bool:
        return (not self.methods or method in self.methods) and (not self.datasets or dataset in self.datasets)

    def describe(self) -> str:
        """The gate as a reader would state it, e.g. ``auroc >= 0.65`` or ``acc > majority_acc``."""
        metric = f"{self.metric} of {self.of_method}" if self.of_method else self.metric
        if self.kind in FIXED_KINDS:
            return f"{metric} {FIXED_KINDS[self.kind]} {self.level:g}"
        by = f" by > {self.by:g}" if self.by else ""
        where = "of the same run" if self.kind == "reference_metric" else "arm, same seed"
        return f"{metric} better than {self.reference} ({where}){by}"


def parse_gate(raw: Any, *, higher_is_better: dict[str, bool], methods: Iterable[str] | None = None) -> Gate:
    """A gate from its spec mapping; MalformedGateError with a one-line reason otherwise."""
    if not isinstance(raw, dict):
        raise MalformedGateError(f"a gate must be a mapping, got {raw!r}")
    label = raw.get("id") or "<gate without id>"
    unknown = sorted(set(raw) - GATE_KEYS)
    if unknown:
        raise MalformedGateError(f"gate {label!r}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(GATE_KEYS))})")
    for key in ("id", "metric"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise MalformedGateError(f"gate {label!r}: {key!r} must be a non-empty string")
    kinds = [key for key in (*FIXED_KINDS, *REFERENCE_KINDS) if key in raw]
    if len(kinds) != 1:
        raise MalformedGateError(f"gate {label!r}: give exactly one of {', '.join((*FIXED_KINDS, *REFERENCE_KINDS))}, "
                                 f"got {kinds or 'none'}")
    kind = kinds[0]
    known_methods = set(methods) if methods is not None else None
    selection: dict[str, tuple[str, ...]] = {}
    for key in ("methods", "datasets"):
        value = raw.get(key) or []
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise MalformedGateError(f"gate {label!r}: {key} must be a list of names, got {value!r}")
        selection[key] = tuple(value)
    if known_methods is not None:
        for name in (*selection["methods"], *([raw[kind]] if kind == "reference_method" else []),
                     *([raw["of_method"]] if raw.get("of_method") else [])):
            if name not in known_methods:
                raise MalformedGateError(f"gate {label!r}: unknown method {name!r}")
    by = raw.get("by", 0.0)
    if not _is_number(by) or by < 0:
        raise MalformedGateError(f"gate {label!r}: by must be a number >= 0, got {by!r}")
    level, reference = None, None
    if kind in FIXED_KINDS:
        if not _is_number(raw[kind]):
            raise MalformedGateError(f"gate {label!r}: {kind} must be a number, got {raw[kind]!r}")
        level = float(raw[kind])
    else:
        if not isinstance(raw[kind], str) or not raw[kind]:
            raise MalformedGateError(f"gate {label!r}: {kind} must name a {kind.split('_')[1]}")
        if raw["metric"] not in higher_is_better:
            raise MalformedGateError(f"gate {label!r}: metric {raw['metric']!r} has no direction in "
                                     "metrics.higher_is_better, so 'better than a reference' is undefined")
        reference = raw[kind]
    of_method = raw.get("of_method")
    if of_method is not None and (not isinstance(of_method, str) or not of_method):
        raise MalformedGateError(f"gate {label!r}: of_method must name a method, got {of_method!r}")
    return Gate(id=raw["id"], metric=raw["metric"], kind=kind, level=level, reference=reference, by=float(by),
                methods=selection["methods"], datasets=selection["datasets"], why=str(raw.get("why") or ""),
                of_method=of_method)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class ArmRuns:
    """The ok runs of one (benchmark, dataset, profile): metric values by (method, seed)."""
    values: pd.DataFrame  # index (method, seed), columns metric/<name>

    def value(self, method: str, seed: int, metric: str) -> float:
        try:
            value = self.values.at[(method, seed), metric_column(metric)]
        except KeyError:
            return math.nan
        return float(value) if value is not None else math.nan


@dataclass
class GateFailure:
    gate: Gate
    method: str
    failing: list[tuple[int, float, float]] = field(default_factory=list)  # (seed, value, reference)
    seeds: int = 0

    def reason(self, *, dataset: str) -> str:
        shown = ", ".join(_shown(self.gate, value, reference) for _, value, reference in self.failing[:3])
        verb = "fail" if " and " in self.method else "fails"
        return (f"{self.method} on {dataset} {verb} gate {self.gate.id} ({self.gate.describe()}): "
                f"{shown} on {len(self.failing)}/{self.seeds} seeds")


def check_gates(gates: Iterable[Gate], runs: ArmRuns, *, method: str, dataset: str, seeds: Iterable[int],
                higher_is_better: dict[str, bool]) -> list[GateFailure]:
    """The gates that ``method`` fails on any of ``seeds`` (empty when it passes every gate)."""
    seeds = list(seeds)
    failures = []
    for gate in gates:
        if not gate.applies_to(method=method, dataset=dataset):
            continue
        failing = []
        for seed in seeds:
            source = gate.of_method or method
            value = runs.value(source, seed, gate.metric)
            reference = _reference_value(gate, runs, method=source, seed=seed)
            if not _passes(gate, value, reference=reference, higher_is_better=higher_is_better):
                failing.append((seed, value, reference))
        if failing:
            failures.append(GateFailure(gate=gate, method=method, failing=failing, seeds=len(seeds)))
    return failures


def _shown(gate: Gate, value: float, reference: float) -> str:
    if math.isnan(value):
        return "not recorded"
    if gate.kind in FIXED_KINDS:
        return format_number(value)
    return f"{format_number(value)} vs {'not recorded' if math.isnan(reference) else format_number(reference)}"


def _reference_value(gate: Gate, runs: ArmRuns, *, method: str, seed: int) -> float:
    if gate.kind == "reference_metric":
        return runs.value(method, seed, gate.reference)
    if gate.kind == "reference_method":
        return runs.value(gate.reference, seed, gate.metric)
    return math.nan


def _passes(gate: Gate, value: float, *, reference: float, higher_is_better: dict[str, bool]) -> bool:
    if math.isnan(value):
        return False
    if gate.kind in FIXED_KINDS:
        # Metrics are computed in float32 (torchmetrics): 900/2000 is stored as 0.44999998..., so a
        # fixed level is compared at that precision, or a value exactly at `min: 0.45` would fail it.
        value, level = float(np.float32(value)), float(np.float32(gate.level))
        return {"min": value >= level, "above": value > level,
                "max": value <= level, "below": value < level}[gate.kind]
    if math.isnan(reference):
        return False
    sign = 1.0 if higher_is_better[gate.metric] else -1.0
    return sign * (value - reference) > gate.by
