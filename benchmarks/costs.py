"""Cost measurement for one run: wall time, throughput, peak memory, parameters and FLOPs."""

from __future__ import annotations

import threading
import time
from typing import Any

import lightning.pytorch as pl
import psutil
import torch
from torch.utils.flop_counter import FlopCounterMode


def count_samples(batch: Any) -> int:
    """Number of samples in a batch: a graph counts its nodes, a tensor its first dimension."""
    num_nodes = getattr(batch, "num_nodes", None)
    if isinstance(num_nodes, int):
        return num_nodes
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)) and batch:
        return count_samples(batch[0])
    return 0


class PeakRSSSampler:
    """Peak resident memory of this process and its children, sampled in a background thread.

    ``ru_maxrss`` would be the peak over the whole process lifetime, which is wrong when several
    runs share one process; sampling gives the peak of this run alone.
    """

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._process = psutil.Process()

    def _rss(self) -> int:
        total = self._process.memory_info().rss
        for child in self._process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._rss())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakRSSSampler":
        self.peak_bytes = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._rss())

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20


class CostMeter(pl.Callback):
    """Counts training samples and step time, and the FLOPs of the first training step.

    Throughput is samples (all ranks) per second of training-step time (forward, backward,
    optimiser), without data loading or validation, and without the FLOP-counted first step.
    Data time is the gap between one step's end and the next step's start within an epoch: fetching
    the batch, moving it to the device and ``on_after_batch_transfer`` (batch augmentation);
    ``data_share`` is its fraction of data + step time.
    """

    def __init__(self) -> None:
        self.train_samples = 0
        self.train_seconds = 0.0
        self.data_seconds = 0.0
        self.flops_per_step: int | None = None
        self.flops_step_samples = 0  # samples (all ranks) of the FLOP-counted step
        self._batch_started = 0.0
        self._previous_step_ended: float | None = None
        self._flop_counter: FlopCounterMode | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._previous_step_ended = time.perf_counter()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.flops_per_step is None and self._flop_counter is None:
            self._flop_counter = FlopCounterMode(display=False)
            self._flop_counter.__enter__()
        self._batch_started = time.perf_counter()
        if self._previous_step_ended is not None:
            self.data_seconds += self._batch_started - self._previous_step_ended

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._flop_counter is not None:
            # The counted step runs slower under the counter, so it is left out of the throughput.
            self._flop_counter.__exit__(None, None, None)
            self.flops_per_step = int(self._flop_counter.get_total_flops())
            self.flops_step_samples = count_samples(batch) * trainer.world_size
            self._flop_counter = None
            self._previous_step_ended = time.perf_counter()
            return
        self._previous_step_ended = time.perf_counter()
        self.train_seconds += self._previous_step_ended - self._batch_started
        self.train_samples += count_samples(batch) * trainer.world_size

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close_flop_counter()  # a step that was skipped

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # A step that raised: the counter's module-tracker hooks are process-global, so a leaked
        # counter would break every later run in this process (e.g. the next run of a suite).
        self._close_flop_counter()

    def _close_flop_counter(self) -> None:
        if self._flop_counter is not None:
            self._flop_counter.__exit__(None, None, None)
            self._flop_counter = None

    @property
    def data_share(self) -> float | None:
        total = self.data_seconds + self.train_seconds
        return round(self.data_seconds / total, 4) if total > 0 and self.train_samples else None

    def model_flops_utilisation(self, peak_flops_per_s: float | None) -> float | None:
        """Achieved training FLOP/s (FLOPs per sample of the counted step × samples/s) over the peak.

        ``flops_per_step`` is one rank's step, on ``flops_step_samples / world_size`` samples.
        """
        if not peak_flops_per_s or not self.flops_per_step or not self.flops_step_samples or self.samples_per_s is None:
            return None
        return self.flops_per_step / self.flops_step_samples * self.samples_per_s / peak_flops_per_s

    @property
    def samples_per_s(self) -> float | None:
        if not self.train_samples or self.train_seconds <= 0:
            return None
        return self.train_samples / self.train_seconds


def count_parameters(module: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))
