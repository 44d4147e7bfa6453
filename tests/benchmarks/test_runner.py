"""Runner pieces: which logged values become record metrics, and how samples are counted."""

from __future__ import annotations

import pytest
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


def test_cost_meter_splits_data_time_from_step_time(monkeypatch) -> None:
    from types import SimpleNamespace

    import benchmarks.costs as costs

    clock = iter([0.0,   # epoch start
                  1.0,   # step 0 (FLOP-counted) starts: 1 s of data
                  3.0,   # step 0 ends (not timed: the FLOP counter slows it)
                  3.5,   # step 1 starts: 0.5 s of data
                  5.5])  # step 1 ends: 2 s of step
    monkeypatch.setattr(costs.time, "perf_counter", lambda: next(clock))
    meter = costs.CostMeter()
    trainer = SimpleNamespace(world_size=1)
    batch = (torch.zeros(4, 2), torch.zeros(4))
    meter.on_train_epoch_start(trainer, None)
    for index in range(2):
        meter.on_train_batch_start(trainer, None, batch, index)
        meter.on_train_batch_end(trainer, None, None, batch, index)
    assert meter.data_seconds == 1.5 and meter.train_seconds == 2.0
    assert meter.data_share == round(1.5 / 3.5, 4)
    assert meter.samples_per_s == 4 / 2.0
    # MFU: FLOPs per sample of the counted step x samples/s over the peak
    meter.flops_per_step, meter.flops_step_samples = 1000, 4
    assert meter.model_flops_utilisation(1000.0) == pytest.approx(1000 / 4 * 2.0 / 1000.0)
    assert meter.model_flops_utilisation(None) is None
