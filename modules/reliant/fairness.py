"""Group-fairness metrics for binary node classification, as the fair-GNN papers report them.

The fair-GNN literature (NIFTY, EDITS, FairGNN, RELIANT, ...) reports *differences* of rates
between the two groups of a binary sensitive attribute s, computed on hard predictions ŷ:

* ``sp`` — statistical (demographic) parity difference
  ΔSP = |P(ŷ=1 | s=0) − P(ŷ=1 | s=1)|;
* ``eo`` — equal-opportunity difference on the positive class
  ΔEO = |P(ŷ=1 | y=1, s=0) − P(ŷ=1 | y=1, s=1)|.

torchmetrics' ``BinaryFairness`` returns *ratios* (min rate / max rate), which is a different
number, so these two are computed here from counts. Lower is better for both; a group without
members (or, for ΔEO, without positives) makes the value NaN rather than a silent 0.

``GroupFairness`` keeps only sum states (per-group counts), so it is exact under DDP: counts are
summed across processes before the rates are formed. When every rank scores the same full graph
(the fairness datamodule's loaders) every count is multiplied by the world size and the rates are
unchanged. ``FairClassificationMetrics`` bundles it with torchmetrics' binary accuracy, AUROC and
F1 (positive class) so that a module logs ``acc, auroc, f1, sp, eo`` from one ``update`` call, plus
``majority_acc``: the accuracy of a constant majority-label predictor on the same split, the
trivial reference of the benchmark's validity gates.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC, BinaryF1Score

FAIR_CLASSIFICATION_METRIC_NAMES = ("acc", "auroc", "f1", "sp", "eo", "majority_acc")


def _rate(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    return numerator.double() / denominator.double() if denominator > 0 else torch.tensor(float("nan"), dtype=torch.float64)


def statistical_parity_difference(preds: torch.Tensor, sensitive: torch.Tensor) -> torch.Tensor:
    """|P(ŷ=1|s=0) − P(ŷ=1|s=1)| for hard 0/1 predictions."""
    preds, sensitive = preds.reshape(-1).long(), sensitive.reshape(-1).long()
    rates = [_rate(preds[sensitive == group].sum(), (sensitive == group).sum()) for group in (0, 1)]
    return (rates[0] - rates[1]).abs()


def equal_opportunity_difference(preds: torch.Tensor, target: torch.Tensor, sensitive: torch.Tensor) -> torch.Tensor:
    """|P(ŷ=1|y=1,s=0) − P(ŷ=1|y=1,s=1)| (true-positive-rate gap) for hard 0/1 predictions."""
    positive = target.reshape(-1).long() == 1
    return statistical_parity_difference(preds.reshape(-1)[positive], sensitive.reshape(-1)[positive])


class GroupFairness(Metric):
    """ΔSP and ΔEO from per-group counts; ``compute()`` returns ``{"sp": ..., "eo": ...}``."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        # index = sensitive group (0, 1)
        self.add_state("group_size", default=torch.zeros(2, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("predicted_positive", default=torch.zeros(2, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("label_positive", default=torch.zeros(2, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("true_positive", default=torch.zeros(2, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, sensitive: torch.Tensor) -> None:
        preds, target, sensitive = preds.reshape(-1).long(), target.reshape(-1).long(), sensitive.reshape(-1).long()
        if not preds.shape == target.shape == sensitive.shape:
            raise ValueError(f"preds, target and sensitive differ in size: {tuple(preds.shape)}, "
                             f"{tuple(target.shape)}, {tuple(sensitive.shape)}")
        if ((sensitive != 0) & (sensitive != 1)).any() or ((preds != 0) & (preds != 1)).any():
            raise ValueError("GroupFairness expects hard 0/1 predictions and a binary 0/1 sensitive attribute")
        self.group_size += torch.bincount(sensitive, minlength=2)
        self.predicted_positive += torch.bincount(sensitive, weights=preds.double(), minlength=2).long()
        self.label_positive += torch.bincount(sensitive, weights=target.double(), minlength=2).long()
        self.true_positive += torch.bincount(sensitive, weights=(preds * target).double(), minlength=2).long()

    def compute(self) -> dict[str, torch.Tensor]:
        positive_rate = [_rate(self.predicted_positive[g], self.group_size[g]) for g in (0, 1)]
        true_positive_rate = [_rate(self.true_positive[g], self.label_positive[g]) for g in (0, 1)]
        return {"sp": (positive_rate[0] - positive_rate[1]).abs().float(),
                "eo": (true_positive_rate[0] - true_positive_rate[1]).abs().float()}


class FairClassificationMetrics(nn.Module):
    """Accuracy, AUROC, F1 (positive class; torchmetrics) plus ΔSP and ΔEO for one split.

    ``update(positive_probability, target, sensitive)``: hard predictions are
    ``positive_probability > 0.5``, i.e. the argmax of a two-class softmax.
    """

    def __init__(self) -> None:
        super().__init__()
        self.accuracy = BinaryAccuracy()
        self.auroc = BinaryAUROC()
        self.f1 = BinaryF1Score()
        self.fairness = GroupFairness()

    def update(self, positive_probability: torch.Tensor, target: torch.Tensor, sensitive: torch.Tensor) -> None:
        target = target.long()
        self.accuracy.update(positive_probability, target)
        self.auroc.update(positive_probability, target)
        self.f1.update(positive_probability, target)
        self.fairness.update((positive_probability > 0.5).long(), target, sensitive)

    def compute(self) -> dict[str, torch.Tensor]:
        return {"acc": self.accuracy.compute(), "auroc": self.auroc.compute(), "f1": self.f1.compute(),
                **self.fairness.compute(), "majority_acc": self.majority_accuracy()}

    def majority_accuracy(self) -> torch.Tensor:
        """Accuracy of always predicting the split's majority label: the trivial reference a
        classifier must beat to have learned anything (computed from the labels' counts)."""
        total = self.fairness.group_size.sum()
        positives = self.fairness.label_positive.sum()
        return (torch.maximum(positives, total - positives).double() / total.double()).float() \
            if total > 0 else torch.tensor(float("nan"))

    def reset(self) -> None:
        for metric in (self.accuracy, self.auroc, self.f1, self.fairness):
            metric.reset()
