"""Validity gates and the `invalid` verdict, on hand-made records with hand-computed outcomes."""

from __future__ import annotations

import numpy as np
import pytest

from leaderboard.claims import INCONCLUSIVE, INVALID, NOT_REPRODUCED, REPRODUCED, MalformedClaimError, judge_claims
from leaderboard.frame import load_frame
from leaderboard.gates import MalformedGateError, parse_gate

METRICS = {"primary": "acc", "higher_is_better": {"acc": True, "auroc": True, "f1": True, "distance": False,
                                                  "bAP": True}}
CLAIM = {"id": "ours-beats-base", "text": "ours is better", "metric": "acc", "method": "ours", "baseline": "base"}


def _write(write_run, method: str, rows: list[dict], *, dataset: str = "Bail", role: str = "proposed") -> None:
    for seed, metrics in enumerate(rows):
        write_run(benchmark="bench", method=method, role=role, seed=seed, dataset=dataset, metrics=metrics)


def _judge(results_dir, gates, claim=CLAIM):
    frame, problems = load_frame(results_dir)
    assert problems == []
    return judge_claims(frame, benchmark="bench", metrics=METRICS, claims=[claim], gates=gates)


def test_a_fixed_floor_makes_a_clear_win_invalid_when_one_seed_did_not_learn(write_run, results_dir) -> None:
    _write(write_run, "ours", [{"acc": 0.80, "auroc": 0.70}, {"acc": 0.81, "auroc": 0.60}, {"acc": 0.82, "auroc": 0.71}])
    _write(write_run, "base", [{"acc": 0.70, "auroc": 0.70}] * 3, role="baseline")
    gates = [{"id": "learned-auroc", "metric": "auroc", "min": 0.65, "why": "a constant score has AUROC 0.5"}]
    row = _judge(results_dir, gates).iloc[0]
    assert row["verdict"] == INVALID
    assert row["reason"] == "ours on Bail fails gate learned-auroc (auroc >= 0.65): 0.600 on 1/3 seeds"
    assert row["diff_mean"] == pytest.approx(0.11)  # the numbers are still shown, the verdict is withheld
    # without the gate the same records reproduce the claim
    assert _judge(results_dir, []).iloc[0]["verdict"] == REPRODUCED


def test_a_float32_metric_exactly_at_a_fixed_floor_meets_it_but_is_not_above_it(write_run, results_dir) -> None:
    """900 of 2,000 correct is top-1 0.45, which a float32 metric stores as 0.44999998807907104."""
    at_floor = float(np.float32(900 / 2000))
    assert at_floor < 0.45
    _write(write_run, "ours", [{"acc": 0.8}] * 3)
    _write(write_run, "base", [{"acc": 0.6}, {"acc": at_floor}, {"acc": 0.6}], role="baseline")
    assert _judge(results_dir, [{"id": "learned", "metric": "acc", "min": 0.45}]).iloc[0]["verdict"] == REPRODUCED
    row = _judge(results_dir, [{"id": "learned", "metric": "acc", "above": 0.45}]).iloc[0]
    assert row["verdict"] == INVALID and row["reason"].endswith("0.450 on 1/3 seeds")
    # one float32 step below the floor still fails it
    below = float(np.nextafter(np.float32(0.45), np.float32(0)))
    _write(write_run, "base", [{"acc": 0.6}, {"acc": below}, {"acc": 0.6}], role="baseline")
    assert _judge(results_dir, [{"id": "learned", "metric": "acc", "min": 0.45}]).iloc[0]["verdict"] == INVALID


def test_above_is_strict_and_a_missing_metric_fails_its_gate(write_run, results_dir) -> None:
    _write(write_run, "ours", [{"acc": 0.8, "f1": 0.3}, {"acc": 0.8, "f1": 0.3}])
    _write(write_run, "base", [{"acc": 0.7, "f1": 0.0}, {"acc": 0.7}], role="baseline")
    row = _judge(results_dir, [{"id": "f1-positive", "metric": "f1", "above": 0}]).iloc[0]
    assert row["verdict"] == INVALID
    assert row["reason"] == "base on Bail fails gate f1-positive (f1 > 0): 0.000, not recorded on 2/2 seeds"


def test_reference_metric_computed_from_labels_is_the_floor_of_its_own_run(write_run, results_dir) -> None:
    # a majority-class predictor on a test set with 70 % negatives: acc == majority_acc, so it did not learn
    _write(write_run, "ours", [{"acc": 0.75, "majority_acc": 0.70}, {"acc": 0.76, "majority_acc": 0.70}])
    _write(write_run, "base", [{"acc": 0.70, "majority_acc": 0.70}, {"acc": 0.72, "majority_acc": 0.70}],
           role="baseline")
    gates = [{"id": "beats-majority", "metric": "acc", "reference_metric": "majority_acc"}]
    row = _judge(results_dir, gates).iloc[0]
    assert row["verdict"] == INVALID
    assert row["reason"] == ("base on Bail fails gate beats-majority (acc better than majority_acc (of the same run)): "
                             "0.700 vs 0.700 on 1/2 seeds")
    by = [{"id": "beats-majority", "metric": "acc", "reference_metric": "majority_acc", "by": 0.03}]
    assert "ours" not in _judge(results_dir, by).iloc[0]["reason"]  # ours clears 0.70 + 0.03 on both seeds
    assert "0.720 vs 0.700" in _judge(results_dir, by).iloc[0]["reason"]  # base's 0.72 does not


def test_reference_method_is_compared_seed_by_seed_in_the_metrics_direction(write_run, results_dir) -> None:
    claim = {**CLAIM, "metric": "distance", "id": "closer"}
    _write(write_run, "ours", [{"distance": 5.0}, {"distance": 6.0}, {"distance": 5.5}])
    _write(write_run, "base", [{"distance": 9.0}, {"distance": 41.0}, {"distance": 8.0}], role="baseline")
    _write(write_run, "random", [{"distance": 40.0}] * 3, role="reference")
    gates = [{"id": "closer-than-random", "metric": "distance", "reference_method": "random", "methods": ["ours", "base"]}]
    row = _judge(results_dir, gates, claim).iloc[0]
    assert row["verdict"] == INVALID  # lower is better: base's 41 on seed 1 is farther than random's 40
    assert row["reason"] == ("base on Bail fails gate closer-than-random (distance better than random (arm, same seed)): "
                             "41.00 vs 40.00 on 1/3 seeds")
    # a gate restricted to other methods or another dataset does not apply
    other = [{**gates[0], "methods": ["ours"]}]
    assert _judge(results_dir, other, claim).iloc[0]["verdict"] != INVALID
    elsewhere = [{**gates[0], "datasets": ["German"]}]
    assert _judge(results_dir, elsewhere, claim).iloc[0]["verdict"] != INVALID


def test_identical_arms_are_invalid(write_run, results_dir) -> None:
    # DOORPING MNIST: the trigger never moved, so "doorping" and "static_patch" are the same artifact
    _write(write_run, "ours", [{"acc": 0.31}, {"acc": 0.12}, {"acc": 0.50}])
    _write(write_run, "base", [{"acc": 0.31}, {"acc": 0.12}, {"acc": 0.50}], role="baseline")
    row = _judge(results_dir, []).iloc[0]
    assert row["verdict"] == INVALID
    assert row["reason"] == "ours and base on Bail have identical acc on all 3 paired seeds: the arms do not differ"
    assert row["diff_mean"] == 0.0


def test_relative_margin_reads_differences_as_fractions_of_the_baseline(write_run, results_dir) -> None:
    # "bAP stays within 5.6 % of ft-full": relative diffs -0.1/2 = -0.05, -0.2/4 = -0.05, -0.15/3 = -0.05
    claim = {**CLAIM, "metric": "bAP", "id": "keeps-bap", "margin": -0.056, "relative": True}
    _write(write_run, "ours", [{"bAP": 1.9}, {"bAP": 3.8}, {"bAP": 2.85}])
    _write(write_run, "base", [{"bAP": 2.0}, {"bAP": 4.0}, {"bAP": 3.0}], role="baseline")
    row = _judge(results_dir, [], claim).iloc[0]
    assert (row["diff_mean"], row["ci_low"], row["ci_high"]) == (pytest.approx(-0.05),) * 3
    assert bool(row["relative"]) and row["verdict"] == REPRODUCED
    # the absolute margin of the old spec (-2 AP) would have accepted a 50 % loss
    _write(write_run, "ours", [{"bAP": 1.0}, {"bAP": 1.1}, {"bAP": 1.05}], dataset="German")
    _write(write_run, "base", [{"bAP": 2.0}, {"bAP": 2.2}, {"bAP": 2.1}], dataset="German", role="baseline")
    verdicts = _judge(results_dir, [], claim).set_index("dataset")
    assert verdicts.loc["German", "diff_mean"] == pytest.approx(-0.5)
    assert verdicts.loc["German", "verdict"] == NOT_REPRODUCED
    absolute = {**claim, "relative": False, "margin": -2.0}
    assert _judge(results_dir, [], absolute).set_index("dataset").loc["German", "verdict"] == REPRODUCED


def test_relative_claim_with_a_zero_baseline_is_invalid(write_run, results_dir) -> None:
    claim = {**CLAIM, "metric": "bAP", "margin": -0.05, "relative": True}
    _write(write_run, "ours", [{"bAP": 1.0}, {"bAP": 2.0}])
    _write(write_run, "base", [{"bAP": 0.0}, {"bAP": 2.5}], role="baseline")
    row = _judge(results_dir, [], claim).iloc[0]
    assert row["verdict"] == INVALID
    assert row["reason"] == "base on Bail has bAP = 0 on seed 0: a relative difference is undefined"


def test_single_pair_is_inconclusive_with_a_reason(write_run, results_dir) -> None:
    _write(write_run, "ours", [{"acc": 0.9}])
    _write(write_run, "base", [{"acc": 0.1}], role="baseline")
    row = _judge(results_dir, []).iloc[0]
    assert (row["verdict"], row["reason"]) == (INCONCLUSIVE, "1 paired seed: an interval needs at least 2")


def test_malformed_gates_name_what_is_wrong() -> None:
    directions = METRICS["higher_is_better"]
    with pytest.raises(MalformedGateError, match="exactly one of"):
        parse_gate({"id": "g", "metric": "acc", "min": 0.5, "above": 0.4}, higher_is_better=directions)
    with pytest.raises(MalformedGateError, match="unknown key 'minimum'"):
        parse_gate({"id": "g", "metric": "acc", "minimum": 0.5}, higher_is_better=directions)
    with pytest.raises(MalformedGateError, match="no direction"):
        parse_gate({"id": "g", "metric": "loss", "reference_method": "random"}, higher_is_better=directions)
    with pytest.raises(MalformedGateError, match="unknown method 'rnd'"):
        parse_gate({"id": "g", "metric": "acc", "reference_method": "rnd"}, higher_is_better=directions,
                   methods=["ours", "random"])
    with pytest.raises(MalformedGateError, match="min must be a number"):
        parse_gate({"id": "g", "metric": "acc", "min": "high"}, higher_is_better=directions)


def test_malformed_gates_skip_the_benchmarks_claims_as_a_problem(write_run, results_dir) -> None:
    _write(write_run, "ours", [{"acc": 0.8}, {"acc": 0.9}])
    _write(write_run, "base", [{"acc": 0.7}, {"acc": 0.7}], role="baseline")
    frame, _ = load_frame(results_dir)
    with pytest.raises(MalformedClaimError, match="exactly one of"):
        judge_claims(frame, benchmark="bench", metrics=METRICS, claims=[CLAIM], gates=[{"id": "g", "metric": "acc"}])
    problems: list[str] = []
    verdicts = judge_claims(frame, benchmark="bench", metrics=METRICS, claims=[CLAIM],
                            gates=[{"id": "g", "metric": "acc"}], problems=problems)
    assert verdicts.empty and len(problems) == 1 and "no claim of it is judged" in problems[0]


def test_of_method_checks_the_shared_stage_through_another_arms_record(write_run, results_dir) -> None:
    # RefT: every fine-tuned arm starts from the base model; its own record says whether that learned
    _write(write_run, "ours", [{"acc": 0.8}, {"acc": 0.9}])
    _write(write_run, "base", [{"acc": 0.7}, {"acc": 0.7}], role="baseline")
    _write(write_run, "base_model", [{"bAP": 25.0}, {"bAP": 5.0}], role="reference")
    gates = [{"id": "base-learned", "metric": "bAP", "min": 20, "of_method": "base_model"}]
    row = _judge(results_dir, gates).iloc[0]
    assert row["verdict"] == INVALID
    # both arms fail through the same record: said once
    assert row["reason"] == "ours and base on Bail fail gate base-learned (bAP of base_model >= 20): 5.000 on 1/2 seeds"
    with pytest.raises(MalformedGateError, match="unknown method 'nobody'"):
        parse_gate({**gates[0], "of_method": "nobody"}, higher_is_better=METRICS["higher_is_better"],
                   methods=["ours", "base", "base_model"])


def test_a_relative_claim_reads_in_percent_of_the_baseline(write_run, results_dir) -> None:
    from leaderboard.markdown import CLAIM_HEADER, claim_cells

    claim = {**CLAIM, "metric": "bAP", "id": "keeps-bap", "margin": -0.056, "relative": True}
    _write(write_run, "ours", [{"bAP": 1.9}, {"bAP": 3.8}, {"bAP": 2.85}])
    _write(write_run, "base", [{"bAP": 2.0}, {"bAP": 4.0}, {"bAP": 3.0}], role="baseline")
    row = next(_judge(results_dir, [], claim).itertuples(index=False))
    cells = dict(zip(CLAIM_HEADER, claim_cells(row)))
    assert cells["metric"] == "bAP (relative, margin -5.6%)"
    assert (cells["mean diff"], cells["95% CI"], cells["detectable"]) == ("-5.0%", "[-5.0%, -5.0%]", "0.0%")
