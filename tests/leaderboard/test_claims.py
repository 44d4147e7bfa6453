"""Claim verdicts on hand-made records, against values computed by hand.

t(0.975, df=2) = 4.302653 (two-sided 95% Student-t quantile for 3 seeds), so for 3 seeds the
interval half-width is 4.302653 * sd / sqrt(3) = 2.484138 * sd.
"""

from __future__ import annotations

import math

import pytest

from leaderboard.claims import (INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, MalformedClaimError, judge_claims,
                                judge_improvements)
from leaderboard.frame import load_frame

HALF_WIDTH_PER_SD_3_SEEDS = 4.302653 / math.sqrt(3)
METRICS = {"primary": "acc", "higher_is_better": {"acc": True, "loss": False}}


def test_spread_out_positive_diffs_are_inconclusive() -> None:
    result = judge_improvements([0.1, 0.2, 0.3])
    assert result.n == 3
    assert result.diff_mean == pytest.approx(0.2)
    # sd = 0.1 -> half-width 0.2484
    assert result.ci_low == pytest.approx(0.2 - 0.248414, abs=1e-6)
    assert result.ci_high == pytest.approx(0.2 + 0.248414, abs=1e-6)
    assert result.verdict == INCONCLUSIVE


def test_clear_win_is_reproduced() -> None:
    result = judge_improvements([0.05, 0.06, 0.07])
    assert result.diff_mean == pytest.approx(0.06)
    assert result.ci_low == pytest.approx(0.06 - 0.01 * HALF_WIDTH_PER_SD_3_SEEDS)  # 0.03516
    assert result.ci_low == pytest.approx(0.035159, abs=1e-6)
    assert result.verdict == REPRODUCED


def test_zero_spread_gives_a_point_interval() -> None:
    result = judge_improvements([0.25, 0.25])
    assert (result.ci_low, result.ci_high) == (pytest.approx(0.25), pytest.approx(0.25))
    assert result.verdict == REPRODUCED
    assert result.detectable == 0.0
    assert judge_improvements([0.0, 0.0, 0.0]).verdict == NOT_REPRODUCED  # point interval at the margin


def test_an_interval_that_spans_both_signs_is_inconclusive_not_a_refutation() -> None:
    # mean -0.0167 < 0, sd 0.0764, half-width 0.1897: interval [-0.206, +0.173]
    result = judge_improvements([-0.1, 0.0, 0.05])
    assert result.diff_mean == pytest.approx(-0.05 / 3)
    assert result.ci_high == pytest.approx(-0.05 / 3 + 0.076376 * HALF_WIDTH_PER_SD_3_SEEDS, abs=1e-5)
    assert result.verdict == INCONCLUSIVE


def test_an_interval_at_or_below_the_margin_is_not_reproduced() -> None:
    # mean -0.11, sd 0.01: interval [-0.1348, -0.0852]
    result = judge_improvements([-0.10, -0.11, -0.12])
    assert result.ci_high == pytest.approx(-0.085159, abs=1e-6)
    assert result.verdict == NOT_REPRODUCED


def test_min_effect_rules_out_a_claim_whose_interval_stays_below_it() -> None:
    # mean 0, sd 0.02, half-width 2.484138 * 0.02 = 0.049683: interval [-0.0497, +0.0497]
    result = judge_improvements([-0.02, 0.0, 0.02], min_effect=0.05)
    assert result.detectable == pytest.approx(0.049683, abs=1e-6)
    assert result.verdict == NOT_REPRODUCED  # 0.0497 < 0 + 0.05: an effect as large as the paper's is ruled out
    assert judge_improvements([-0.02, 0.0, 0.02], min_effect=0.04).verdict == INCONCLUSIVE  # 0.0497 >= 0.04
    assert judge_improvements([-0.02, 0.0, 0.02]).verdict == INCONCLUSIVE
    # margin and min_effect add up: the bar is margin + min_effect
    assert judge_improvements([-0.02, 0.0, 0.02], margin=-0.02, min_effect=0.07).verdict == NOT_REPRODUCED
    assert judge_improvements([-0.02, 0.0, 0.02], margin=-0.02, min_effect=0.06).verdict == INCONCLUSIVE


def test_single_seed_is_inconclusive_without_interval() -> None:
    result = judge_improvements([0.9])
    assert (result.n, result.diff_mean, result.verdict) == (1, pytest.approx(0.9), INCONCLUSIVE)
    assert math.isnan(result.ci_low) and math.isnan(result.ci_high) and math.isnan(result.detectable)
    assert judge_improvements([]).n == 0 and judge_improvements([]).verdict == INCONCLUSIVE


def test_margin_moves_the_bar_but_not_the_reported_numbers() -> None:
    # interval [0.0352, 0.0848], mean 0.06
    assert judge_improvements([0.05, 0.06, 0.07], margin=0.03).verdict == REPRODUCED
    assert judge_improvements([0.05, 0.06, 0.07], margin=0.04).verdict == INCONCLUSIVE
    assert judge_improvements([0.05, 0.06, 0.07], margin=0.07).verdict == INCONCLUSIVE  # mean below, interval spans
    assert judge_improvements([0.05, 0.06, 0.07], margin=0.09).verdict == NOT_REPRODUCED
    assert judge_improvements([0.05, 0.06, 0.07], margin=0.04).diff_mean == pytest.approx(0.06)


def test_negative_margin_is_a_non_inferiority_claim() -> None:
    # "accuracy within 2 points": the method may lose up to 0.02
    assert judge_improvements([-0.01, -0.01, -0.01], margin=-0.02).verdict == REPRODUCED
    assert judge_improvements([-0.006, -0.01, -0.014], margin=-0.02).verdict == REPRODUCED  # [-0.0199, -0.0001]
    assert judge_improvements([-0.04, -0.05, -0.06], margin=-0.02).verdict == NOT_REPRODUCED  # [-0.0748, -0.0252]
    assert judge_improvements([0.0, -0.01, -0.04], margin=-0.02).verdict == INCONCLUSIVE


def _write_pairs(write_run, *, method_values, baseline_values, metric="acc", dataset="Cora") -> None:
    for seed, value in enumerate(method_values):
        write_run(benchmark="bench", method="ours", role="proposed", seed=seed, dataset=dataset, metrics={metric: value})
    for seed, value in enumerate(baseline_values):
        write_run(benchmark="bench", method="base", role="baseline", seed=seed, dataset=dataset, metrics={metric: value})


def _claim(**overrides):
    return {"id": "ours-beats-base", "text": "ours is better", "metric": "acc", "method": "ours",
            "baseline": "base", **overrides}


def test_records_paired_by_seed_higher_is_better(write_run, results_dir) -> None:
    _write_pairs(write_run, method_values=[0.65, 0.66, 0.67], baseline_values=[0.60, 0.60, 0.60])
    frame, problems = load_frame(results_dir)
    verdicts = judge_claims(frame, benchmark="bench", metrics=METRICS, claims=[_claim()])
    assert problems == []
    assert len(verdicts) == 1
    row = verdicts.iloc[0]
    assert (row["dataset"], row["profile"], row["n"], row["verdict"]) == ("Cora", "cpu", 3, REPRODUCED)
    assert row["diff_mean"] == pytest.approx(0.06)
    assert row["ci_low"] == pytest.approx(0.06 - 0.01 * HALF_WIDTH_PER_SD_3_SEEDS)


def test_lower_is_better_improvement_is_positive(write_run, results_dir) -> None:
    _write_pairs(write_run, metric="loss", method_values=[0.30, 0.31, 0.32], baseline_values=[0.40, 0.40, 0.40])
    frame, _ = load_frame(results_dir)
    row = judge_claims(frame, benchmark="bench", metrics=METRICS, claims=[_claim(metric="loss")]).iloc[0]
    assert row["diff_mean"] == pytest.approx(0.09)  # baseline - method: the method's loss is 0.09 lower
    assert row["verdict"] == REPRODUCED
    # the same numbers read as "higher is better" would be a clear loss
    flipped = {"higher_is_better": {"loss": True}}
    assert judge_claims(frame, benchmark="bench", metrics=flipped, claims=[_claim(metric="loss")]).iloc[0]["verdict"] \
        == NOT_REPRODUCED


def test_unpaired_and_failed_seeds_are_dropped(write_run, results_dir) -> None:
    _write_pairs(write_run, method_values=[0.70, 0.72, 0.10, 0.9], baseline_values=[0.60, 0.61])
    write_run(benchmark="bench", method="base", role="baseline", seed=2, error_type="RuntimeError")
    frame, _ = load_frame(results_dir)
    row = judge_claims(frame, benchmark="bench", metrics=METRICS, claims=[_claim()]).iloc[0]
    assert row["n"] == 2  # seeds 0 and 1; seed 2 failed for the baseline, seed 3 has no baseline run
    assert row["diff_mean"] == pytest.approx(0.105)
    # diffs 0.10, 0.11: sd 0.00707, half-width 12.7062 * 0.00707 / sqrt(2) = 0.0635
    assert row["ci_low"] == pytest.approx(0.105 - 0.063531, abs=1e-5)
    assert row["verdict"] == REPRODUCED


def test_missing_baseline_and_single_seed_are_inconclusive(write_run, results_dir) -> None:
    _write_pairs(write_run, method_values=[0.7, 0.7], baseline_values=[], dataset="Cora")
    _write_pairs(write_run, method_values=[0.9], baseline_values=[0.1], dataset="CiteSeer")
    frame, _ = load_frame(results_dir)
    verdicts = judge_claims(frame, benchmark="bench", metrics=METRICS, claims=[_claim()]).set_index("dataset")
    assert verdicts.loc["Cora", "n"] == 0 and verdicts.loc["Cora", "verdict"] == INCONCLUSIVE
    assert math.isnan(verdicts.loc["Cora", "diff_mean"])
    assert verdicts.loc["CiteSeer", "n"] == 1 and verdicts.loc["CiteSeer", "verdict"] == INCONCLUSIVE
    assert verdicts.loc["CiteSeer", "diff_mean"] == pytest.approx(0.8)


def test_claim_datasets_and_margin(write_run, results_dir) -> None:
    _write_pairs(write_run, method_values=[0.65, 0.66, 0.67], baseline_values=[0.60, 0.60, 0.60], dataset="Cora")
    _write_pairs(write_run, method_values=[0.1, 0.1], baseline_values=[0.6, 0.6], dataset="CiteSeer")
    frame, _ = load_frame(results_dir)
    verdicts = judge_claims(frame, benchmark="bench", metrics=METRICS,
                            claims=[_claim(datasets=["Cora"], margin=0.04)])
    assert list(verdicts["dataset"]) == ["Cora"]
    # interval [0.0352, 0.0848] reaches below the 0.04 margin, the mean 0.06 is above it
    assert verdicts.iloc[0]["verdict"] == INCONCLUSIVE
    assert verdicts.iloc[0]["diff_mean"] == pytest.approx(0.06)
    assert verdicts.iloc[0]["margin"] == pytest.approx(0.04)


def test_malformed_claim_is_an_error_or_a_problem(write_run, results_dir) -> None:
    _write_pairs(write_run, method_values=[0.7, 0.7], baseline_values=[0.6, 0.6])
    frame, _ = load_frame(results_dir)
    no_direction = _claim(id="on-f1", metric="f1")
    with pytest.raises(MalformedClaimError, match="'f1' has no direction"):
        judge_claims(frame, benchmark="bench", metrics=METRICS, claims=[no_direction])
    problems: list[str] = []
    verdicts = judge_claims(frame, benchmark="bench", metrics=METRICS,
                            claims=[no_direction, {"id": "half"}, _claim()], problems=problems)
    assert list(verdicts["claim"]) == ["ours-beats-base"]
    assert len(problems) == 2 and "on-f1" in problems[0] and "missing" in problems[1]
