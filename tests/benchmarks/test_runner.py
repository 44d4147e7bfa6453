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


def test_a_step_that_raises_does_not_leak_the_flop_counter_hooks() -> None:
    """The FLOP counter's module-tracker hooks are process-global: left behind by a failed run,
    they broke the next run of the suite (a forward with a parameter as input under no_grad)."""
    import lightning.pytorch as pl
    from torch.nn.modules import module as torch_module
    from torch.utils.data import DataLoader, TensorDataset

    from benchmarks.costs import CostMeter

    class Raises(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            self.layer(batch[0])
            raise RuntimeError("step failed")

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    hooks_before = len(torch_module._global_forward_pre_hooks) + len(torch_module._global_forward_hooks)
    trainer = pl.Trainer(max_epochs=1, callbacks=[CostMeter()], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    with pytest.raises(RuntimeError, match="step failed"):
        trainer.fit(Raises(), DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2))
    assert len(torch_module._global_forward_pre_hooks) + len(torch_module._global_forward_hooks) == hooks_before
