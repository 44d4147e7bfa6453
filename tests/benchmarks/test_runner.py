"""Runner pieces: which logged values become record metrics, and how samples are counted."""

from __future__ import annotations

import json

import pytest
import torch
from torch_geometric.data import Data

from benchmarks.costs import count_samples
from benchmarks.runner import _rates_of_trained_stage, _test_metrics


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

    clock = iter([0.0, 1.0,   # fetch of batch 0: 1 s of data
                  1.0,        # step 0 (FLOP-counted) starts; its end is not timed: the counter slows it
                  3.0, 3.5,   # fetch of batch 1: 0.5 s
                  6.0, 8.0])  # step 1: 2 s of step
    monkeypatch.setattr(costs.time, "perf_counter", lambda: next(clock))
    meter = costs.CostMeter()
    trainer = SimpleNamespace(world_size=1, profiler=meter.profiler, sanity_checking=False,
                              state=SimpleNamespace(fn="fit"))
    batch = (torch.zeros(4, 2), torch.zeros(4))
    meter.on_train_start(trainer, None)
    with meter.profiler.profile("[_TrainingEpochLoop].train_dataloader_next"):
        pass
    meter.on_train_batch_start(trainer, None, batch, 0)
    meter.on_train_batch_end(trainer, None, None, batch, 0)
    with meter.profiler.profile("[_TrainingEpochLoop].train_dataloader_next"):
        pass
    # Neither a validation transfer inside fit nor a module hook between steps reads the clock.
    meter.on_validation_start(trainer, None)
    with meter.profiler.profile("[Strategy]SingleDeviceStrategy.batch_to_device"):
        pass
    meter.on_validation_end(trainer, None)
    with meter.profiler.profile("[LightningModule]LRPET.on_train_batch_end"):
        pass
    meter.on_train_batch_start(trainer, None, batch, 1)
    meter.on_train_batch_end(trainer, None, None, batch, 1)
    assert meter.data_seconds == 1.5 and meter.train_seconds == 2.0
    assert meter.data_share == round(1.5 / 3.5, 4)
    assert meter.samples_per_s == 4 / 2.0
    # MFU: one rank's FLOPs per sample over its counted batches x all ranks' samples/s, over the peak
    meter.counted_flops, meter.counted_samples = 1000, 4
    assert meter.achieved_flops_per_s() == pytest.approx(1000 / 4 * 2.0)
    assert meter.model_flops_utilisation(1000.0) == pytest.approx(1000 / 4 * 2.0 / 1000.0)
    assert meter.model_flops_utilisation(None) is None


def test_flops_are_averaged_over_sampled_steps_whose_cost_differs() -> None:
    """Two-phase runs (TinyMIM: teacher-distillation steps, then cheaper fine-tune steps) reported
    more than 100 % of the CPU ceiling when the first step's FLOPs stood for every step: every
    flop_sample_every-th step is counted and the rate uses their average per sample."""
    from types import SimpleNamespace

    from benchmarks.costs import CostMeter

    meter = CostMeter(flop_sample_every=2)
    trainer = SimpleNamespace(world_size=1, profiler=meter.profiler, sanity_checking=False,
                              state=SimpleNamespace(fn="fit"))
    weight = torch.ones(8, 8)
    for step in range(6):
        batch = torch.ones(4, 8)
        meter.on_train_batch_start(trainer, None, batch, step)
        for _ in range(3 if step < 3 else 1):  # an expensive first phase, then a cheap one
            batch @ weight
        meter.on_train_batch_end(trainer, None, None, batch, step)
    expensive, cheap = 3 * 2 * 4 * 8 * 8, 2 * 4 * 8 * 8
    assert meter.flops_per_step == expensive  # the number shown: the first step
    assert (meter.counted_flops, meter.counted_samples) == (expensive + expensive + cheap, 12)  # steps 0, 2, 4
    assert meter.train_samples == 12  # steps 1, 3, 5 are timed


def test_data_share_counts_slow_loading_but_not_slow_module_hooks(tmp_path, monkeypatch) -> None:
    """A real fit on a virtual clock: each batch takes 60 ms to load, each step 60 ms, and the
    module's on_train_batch_end 120 ms (like LRPET's projection). Data time is the loading alone
    (0.30 s) against 4 timed steps (0.24 s: the first, FLOP-counted step is not timed), a share of
    5/9; the gap between steps, the old measure, would also have counted the hooks."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, Dataset

    import benchmarks.costs as costs
    from benchmarks.costs import CostMeter
    from benchmarks.runner import _make_trainer

    now = [0.0]

    def spend(seconds: float) -> None:  # time passes only where the test says so
        now[0] += seconds

    monkeypatch.setattr(costs.time, "perf_counter", lambda: now[0])

    class SlowDataset(Dataset):
        def __len__(self) -> int:
            return 5

        def __getitem__(self, index: int):
            spend(0.06)
            return torch.zeros(2), torch.zeros(1)

    class SlowHooks(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            spend(0.06)
            return torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])

        def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
            spend(0.12)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    meter = CostMeter()
    trainer = _make_trainer({"max_epochs": 1, "accelerator": "cpu", "devices": 1}, root_dir=tmp_path,
                            callbacks=[meter], profiler=meter.profiler)
    trainer.fit(SlowHooks(), train_dataloaders=DataLoader(SlowDataset(), batch_size=1))
    assert meter.data_seconds == pytest.approx(5 * 0.06)  # 5 fetches, none of the 120 ms hooks
    assert meter.train_seconds == pytest.approx(4 * 0.06)
    assert meter.data_share == pytest.approx(5 / 9, abs=1e-4)
    # With a user's own profiler on the Trainer there is no data time to report.
    other = CostMeter()
    trainer = _make_trainer({"max_epochs": 1, "accelerator": "cpu", "devices": 1, "profiler": "simple"},
                            root_dir=tmp_path, callbacks=[other], profiler=other.profiler)
    trainer.fit(SlowHooks(), train_dataloaders=DataLoader(SlowDataset(), batch_size=1))
    assert other.data_share is None and other.samples_per_s


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


@pytest.mark.slow
def test_software_versions_come_from_metadata_without_importing_timm_or_pyg() -> None:
    """Reading timm's and PyG's versions must not import them (1.6 s of every run's overhead)."""
    import importlib.metadata
    import subprocess
    import sys

    code = ("import json, sys; from benchmarks.runner import software_versions; v = software_versions(); "
            "print(json.dumps([v['timm'], v['torch_geometric'], 'timm' in sys.modules, 'torch_geometric' in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    timm_version, pyg_version, timm_imported, pyg_imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert timm_version == importlib.metadata.version("timm") and pyg_version == importlib.metadata.version("torch_geometric")
    assert not timm_imported and not pyg_imported


def test_a_run_that_trains_nothing_reports_the_speed_of_its_last_trained_stage() -> None:
    stages = {"dense": {"key": "a", "cost": {"fit_s": 9.0, "train_samples_per_s": 120.0, "flops": 7, "data_share": 0.1,
                                            "achieved_gflops": 2.5, "probe_gflops": 50.0, "mfu": 0.05}},
              "old": {"key": "b"},  # cached before stages were metered: no cost
              "teacher": {"key": "c", "cost": {"fit_s": 0.0, "train_samples_per_s": None}}}
    assert _rates_of_trained_stage(stages) == {"train_samples_per_s": 120.0, "flops": 7, "data_share": 0.1,
                                               "achieved_gflops": 2.5, "probe_gflops": 50.0, "mfu": 0.05,
                                               "metered_stage": "dense"}
    assert _rates_of_trained_stage({"old": {"key": "b"}}) == {}


def test_the_hardware_a_record_names_includes_the_torch_thread_count(monkeypatch) -> None:
    from benchmarks.runner import hardware_info

    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    info = hardware_info({"accelerator": "cpu", "devices": 1}, world_size=1)
    assert info["torch_threads"] == 3 and info["accelerator"] == "cpu" and info["cores"] >= 1


@pytest.mark.parametrize("groups", [1, 4, 16])
def test_the_flop_counter_counts_a_grouped_convolution_step_as_three_forwards(groups: int) -> None:
    """Hand count: forward 2·N·H·W·C_out·(C_in/groups)·k²; the input and the weight gradients cost
    one forward each. torch's own formula counts the weight gradient `groups` times over."""
    from benchmarks.costs import flop_counter

    conv = torch.nn.Conv2d(16, 16, 3, padding=1, groups=groups, bias=False)
    images = torch.randn(2, 16, 8, 8, requires_grad=True)
    with flop_counter() as counter:
        conv(images).sum().backward()
    forward = 2 * 2 * 8 * 8 * 16 * (16 // groups) * 9
    assert counter.get_total_flops() == 3 * forward
