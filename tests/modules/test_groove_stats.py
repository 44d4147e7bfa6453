"""Stability statistics against hand-computed cases and the paper's recomputed reference numbers."""

from __future__ import annotations

import random
import zipfile

import pytest
import torch

from modules.drum_lm.groove_stats import (GrooveStructure, GrooveStructureMetric, centre_gap_and_spread,
                                         corpus_statistics, human_stat_distance, levenshtein_distance,
                                         measure_stabilities, measures_of)
from tests_support import shared_data_root

BAR_A = ["o---o-", "------", "--o-o-", "------"] * 4
BAR_B = ["o---o-", "------", "--o-o-", "---o--"] + ["o---o-", "------", "--o-o-", "------"] * 3  # 1 char from A


def test_levenshtein_known_values() -> None:
    assert levenshtein_distance("kitten", "sitting") == 3
    assert levenshtein_distance("", "abc") == 3
    assert levenshtein_distance("o--\n", "o--\n") == 0


def test_measures_keep_the_official_double_newline_and_partial_last_bar() -> None:
    measures = measures_of(BAR_A * 2 + BAR_A[:8])
    assert len(measures) == 3 and len(measures[0]) == 16 * 7 + 15 and len(measures[2]) == 8 * 7 + 7
    assert measures[0].startswith("o---o-\n\n------\n\n")
    assert len(measures_of(BAR_A * 20)) == 16  # only the first 16 measures count


def test_stabilities_of_a_groove_with_one_varied_bar() -> None:
    # bars: A A A A A B A ... (16 bars); s_i = min distance to a neighbour, i = 1..14
    lines = BAR_A * 5 + BAR_B + BAR_A * 10
    assert measure_stabilities(lines) == [0] * 4 + [1] + [0] * 9
    # bar 5 differs from both neighbours by 1 -> s_5 = 1; its neighbours still have an identical neighbour
    lines = BAR_A + BAR_B + BAR_A + BAR_B  # alternating: every bar is 1 away from both neighbours
    assert measure_stabilities(lines) == [1, 1]


def test_two_means_statistics_hand_computed() -> None:
    # clusters {0 x 12} and {2, 4}: centres 0 and 3, spread (12*0 + 1 + 1) / 14
    gap, spread = centre_gap_and_spread([0] * 12 + [2, 4])
    assert gap == pytest.approx(3.0) and spread == pytest.approx(1 / 7)
    assert centre_gap_and_spread([0] * 14) == (0.0, 0.0)  # pure repetition: one distinct value
    assert all(value != value for value in centre_gap_and_spread([5]))  # NaN for one value


def test_corpus_statistics_pool_stabilities_and_average_two_means() -> None:
    grooves = [GrooveStructure(stabilities=(0, 0, 0), centre_gap=0.0, cluster_spread=0.0),
               GrooveStructure(stabilities=(2, 4, 6, 8, 10), centre_gap=6.0, cluster_spread=2.0)]
    stats = corpus_statistics(grooves)
    assert stats == {"mean_stability": 30 / 8, "centre_gap": 3.0, "cluster_spread": 1.0, "pure_repetition_rate": 0.5,
                     "repeated_measure_rate": 3 / 8}
    human = {"mean_stability": 5.0, "centre_gap": 10.0, "cluster_spread": 1.5}
    assert human_stat_distance(stats, human) == pytest.approx(1.25 + 7.0 + 0.5)


def test_metric_counts_each_groove_once_and_measures_distance_to_human() -> None:
    human = GrooveStructure.of_lines(BAR_A * 5 + BAR_B + BAR_A * 10)
    system = GrooveStructure.of_lines(BAR_A * 16)
    metric = GrooveStructureMetric()
    row = GrooveStructureMetric.row(system, human, well_formed_lines=200, generated_lines=224, ended=True)
    metric.update(torch.tensor([0, 0]), torch.tensor([row, row]))  # a padded sampler repeated groove 0
    values = {name: float(value) for name, value in metric.compute().items()}
    human_stats = corpus_statistics([human])
    assert values["num_grooves"] == 1 and values["well_formed_rate"] == pytest.approx(200 / 224)
    assert values["pure_repetition_rate"] == 1.0 and values["generated_bars"] == 14.0
    assert values["human_stat_distance"] == pytest.approx(human_stat_distance(corpus_statistics([system]), human_stats))
    assert values["human_stat_distance"] == pytest.approx(1 / 14 + human_stats["centre_gap"] + human_stats["cluster_spread"])


def test_reference_numbers_recomputed_from_the_papers_test_text() -> None:
    root = shared_data_root("groove_midi/drums_with_llm_text.zip") / "groove_midi"
    with zipfile.ZipFile(root / "drums_with_llm_text.zip") as archive:
        names = sorted(n for n in archive.namelist() if n.startswith("data_text/test/") and n.endswith(".txt"))
        gold = [archive.read(name).decode().splitlines() for name in names]
    rng = random.Random(29)  # analysis.py, files in sorted order
    random_lines = [["".join(rng.choice(["-", "o"]) for _ in range(6)) for _ in range(256)] for _ in gold]
    human = corpus_statistics([GrooveStructure.of_lines(lines) for lines in gold])
    rand = corpus_statistics([GrooveStructure.of_lines(lines) for lines in random_lines])
    repeat = corpus_statistics([GrooveStructure.of_lines(lines[:16] + lines[16:32] * 15) for lines in gold])
    # papers/drum_lm.md "Reference numbers": human 5.08 / 10.08 / 1.42, random 40.4 / 5.7 / 1.24, repeat 0 / 0 / 0
    assert [round(human[k], 2) for k in ("mean_stability", "centre_gap", "cluster_spread")] == [5.08, 10.08, 1.42]
    assert [round(rand[k], 1) for k in ("mean_stability", "centre_gap")] == [40.4, 5.7]
    assert round(rand["cluster_spread"], 2) == 1.24
    assert repeat == {"mean_stability": 0.0, "centre_gap": 0.0, "cluster_spread": 0.0, "pure_repetition_rate": 1.0,
                      "repeated_measure_rate": 1.0}


def test_repeated_measure_rate_counts_copied_measures_where_pure_repetition_sees_none() -> None:
    # A 16-bar groove that repeats bar A except one varied bar in the middle and a varied last bar:
    # not a pure repetition, yet 13 of its 14 interior measures copy a neighbour.
    lines = BAR_A * 7 + BAR_B + BAR_A * 7 + BAR_B
    groove = GrooveStructure.of_lines(lines)
    assert groove.stabilities.count(0) == 13 and not groove.is_pure_repetition
    metric = GrooveStructureMetric()
    rows = [GrooveStructureMetric.row(GrooveStructure.of_lines(system), groove, well_formed_lines=224,
                                      generated_lines=224, ended=True) for system in (lines, BAR_A * 16)]
    metric.update(torch.tensor([0, 1]), torch.tensor(rows))
    values = {name: float(value) for name, value in metric.compute().items()}
    assert values["pure_repetition_rate"] == 0.5
    assert values["repeated_measure_rate"] == pytest.approx((13 + 14) / 28)
    assert corpus_statistics([groove])["repeated_measure_rate"] == pytest.approx(13 / 14)
