"""Runner pieces: which logged values become record metrics, and how samples are counted."""

from __future__ import annotations

import torch
from torch_geometric.data import Data

from benchmarks.costs import count_samples
from benchmarks.runner import _test_metrics


def test_only_test_metrics_are_kept_and_non_finite_become_null() -> None:
    logged = [{"test/acc": torch.tensor(0.5), "val/acc": 0.9, "test/loss": float("nan")}, {"test/f1": float("inf")}]
    assert _test_metrics(logged) == {"acc": 0.5, "loss": None, "f1": None}


def test_count_samples_for_graphs_tensors_and_tuples() -> None:
    graph = Data(x=torch.zeros(7, 3), edge_index=torch.zeros(2, 0, dtype=torch.long))
    assert count_samples(graph) == 7
    assert count_samples((torch.zeros(5, 2), torch.zeros(5))) == 5
    assert count_samples({"images": torch.zeros(4, 3, 8, 8)}) == 4
