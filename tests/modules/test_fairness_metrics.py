from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import f1_score, roc_auc_score

from modules.reliant.fairness import (
    FairClassificationMetrics,
    GroupFairness,
    equal_opportunity_difference,
    statistical_parity_difference,
)

# Hand-computed case. s=0: nodes 0-3, s=1: nodes 4-7.
PREDS = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0])
TARGET = torch.tensor([1, 1, 0, 1, 1, 0, 1, 1])
SENSITIVE = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
# P(ŷ=1|s=0) = 3/4, P(ŷ=1|s=1) = 1/4  -> ΔSP = 1/2
# y=1 & s=0: nodes 0, 1, 3 -> ŷ = 1, 0, 1 -> 2/3; y=1 & s=1: nodes 4, 6, 7 -> ŷ = 0, 1, 0 -> 1/3 -> ΔEO = 1/3
EXPECTED_SP, EXPECTED_EO = 0.5, 1 / 3


def test_functional_differences_match_hand_computation():
    assert float(statistical_parity_difference(PREDS, SENSITIVE)) == pytest.approx(EXPECTED_SP)
    assert float(equal_opportunity_difference(PREDS, TARGET, SENSITIVE)) == pytest.approx(EXPECTED_EO)
    # A difference, not torchmetrics' ratio (which would be (1/4)/(3/4) = 1/3 for parity).
    assert float(statistical_parity_difference(torch.tensor([1, 1, 1, 0]), torch.tensor([0, 0, 1, 1]))) == pytest.approx(0.5)


def test_group_fairness_accumulates_batches_and_is_invariant_to_duplication():
    metric = GroupFairness()
    metric.update(PREDS[:5], TARGET[:5], SENSITIVE[:5])
    metric.update(PREDS[5:], TARGET[5:], SENSITIVE[5:])
    values = metric.compute()
    assert float(values["sp"]) == pytest.approx(EXPECTED_SP)
    assert float(values["eo"]) == pytest.approx(EXPECTED_EO, rel=1e-6)
    # Every DDP rank scoring the same full graph doubles every count: the rates do not move.
    metric.update(PREDS, TARGET, SENSITIVE)
    assert float(metric.compute()["sp"]) == pytest.approx(EXPECTED_SP)
    assert int(metric.group_size.sum()) == 16


def test_group_fairness_merges_states_like_a_ddp_sum():
    first, second = GroupFairness(), GroupFairness()
    first.update(PREDS[:4], TARGET[:4], SENSITIVE[:4])   # only s=0 here
    second.update(PREDS[4:], TARGET[4:], SENSITIVE[4:])  # only s=1 here
    lonely = GroupFairness()
    lonely.update(PREDS[:4], TARGET[:4], SENSITIVE[:4])
    assert math.isnan(float(lonely.compute()["sp"]))     # a group without members: NaN, not 0
    first.merge_state(second)
    assert float(first.compute()["sp"]) == pytest.approx(EXPECTED_SP)


def test_group_fairness_rejects_non_binary_inputs():
    with pytest.raises(ValueError, match="binary"):
        GroupFairness().update(PREDS, TARGET, SENSITIVE * 2)


def test_fair_classification_metrics_match_sklearn():
    generator = torch.Generator().manual_seed(0)
    probability = torch.rand(50, generator=generator)
    target = (torch.rand(50, generator=generator) < 0.5).long()
    sensitive = (torch.rand(50, generator=generator) < 0.4).long()
    metrics = FairClassificationMetrics()
    metrics.update(probability, target, sensitive)
    values = {name: float(value) for name, value in metrics.compute().items()}
    hard = (probability > 0.5).long()
    assert values["acc"] == pytest.approx(float((hard == target).float().mean()))
    assert values["auroc"] == pytest.approx(roc_auc_score(target.numpy(), probability.numpy()), abs=1e-6)
    assert values["f1"] == pytest.approx(f1_score(target.numpy(), hard.numpy()), abs=1e-6)
    assert values["sp"] == pytest.approx(float(statistical_parity_difference(hard, sensitive)), abs=1e-6)
    assert values["eo"] == pytest.approx(float(equal_opportunity_difference(hard, target, sensitive)), abs=1e-6)


def test_majority_accuracy_is_what_a_constant_majority_predictor_scores():
    # 7 negatives and 3 positives: predicting "negative" everywhere is 0.7 accurate, F1 0, AUROC 0.5
    target = torch.tensor([0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    sensitive = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    constant = torch.full((10,), 0.2)
    metrics = FairClassificationMetrics()
    metrics.update(constant, target, sensitive)
    values = {name: float(value) for name, value in metrics.compute().items()}
    assert values["majority_acc"] == pytest.approx(0.7)
    assert values["acc"] == pytest.approx(values["majority_acc"])  # so an `acc > majority_acc` gate fails it
    assert (values["f1"], values["auroc"]) == (pytest.approx(0.0), pytest.approx(0.5))
    # a split with more positives: the majority label is positive
    metrics.reset()
    metrics.update(constant[:4], torch.tensor([1, 1, 1, 0]), sensitive[:4])
    assert float(metrics.compute()["majority_acc"]) == pytest.approx(0.75)
