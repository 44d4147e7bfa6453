"""Cost measurement for one run: wall time, throughput, peak memory, parameters and FLOPs."""

from __future__ import annotations

import threading
import time
from typing import Any

import lightning.pytorch as pl
import psutil
import torch
from lightning.pytorch.profilers import PassThroughProfiler
from torch.utils.flop_counter import FlopCounterMode, conv_backward_flop


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


class DataWaitProfiler(PassThroughProfiler):
    """Lightning's no-op profiler, except that it times the training loop's data actions.

    Lightning wraps each training batch's fetch (``[_TrainingEpochLoop].train_dataloader_next``),
    ``on_before_batch_transfer`` and ``batch_to_device`` (which holds ``transfer_batch_to_device``
    and ``on_after_batch_transfer``, i.e. GPU-side batch augmentation) in profiler actions. Timing
    exactly those keeps out what runs between two steps but is not data: the module's own
    ``on_train_batch_end`` (LRPET's SVD projection), LR schedulers and logger writes, which a
    gap-between-steps measure counted as data time. ``active`` is switched by ``CostMeter``, so
    validation batches inside fit are left out.
    """

    DATA_ACTIONS = (".train_dataloader_next", ".on_before_batch_transfer", ".batch_to_device")

    def __init__(self) -> None:
        super().__init__()
        self.active = False
        self.seconds = 0.0
        self._open: dict[str, float] = {}

    def start(self, action_name: str) -> None:
        if self.active and action_name.endswith(self.DATA_ACTIONS):
            self._open[action_name] = time.perf_counter()

    def stop(self, action_name: str) -> None:
        started = self._open.pop(action_name, None)
        if started is not None:
            self.seconds += time.perf_counter() - started


def grouped_conv_backward_flop(grad_out_shape: Any, x_shape: Any, w_shape: Any, bias: Any, stride: Any, padding: Any,
                               dilation: Any, transposed: bool, output_padding: Any, groups: int, output_mask: Any,
                               out_shape: Any, **kwargs: Any) -> int:
    """torch's convolution-backward FLOP formula with the weight gradient divided by ``groups``.

    torch (2.14) counts the weight gradient of a grouped convolution as one dense convolution over
    all input channels, i.e. ``groups`` times too many: a depthwise 5x5 layer of 240 channels
    counts ~120x its real cost, and a mobile net's step several times its real FLOPs. The input
    gradient term is already right (the weight shape holds ``C_in / groups``).
    """
    arguments = (grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed, output_padding, groups)
    flops = 0
    if output_mask[0]:
        flops += conv_backward_flop(*arguments, [True, False, False], out_val=out_shape)
    if output_mask[1]:
        flops += conv_backward_flop(*arguments, [False, True, False], out_val=out_shape) // groups
    return flops


def flop_counter() -> FlopCounterMode:
    """A FLOP counter with the grouped-convolution backward corrected (:func:`grouped_conv_backward_flop`)."""
    return FlopCounterMode(display=False,
                           custom_mapping={torch.ops.aten.convolution_backward: grouped_conv_backward_flop})


class CostMeter(pl.Callback):
    """Counts training samples and step time, and the FLOPs of a sample of training steps.

    Throughput is samples (all ranks) per second of training-step time (forward, backward,
    optimiser), without data loading or validation, and without the FLOP-counted steps.
    ``flops_per_step`` is the first step's count (the number shown); the achieved FLOP/s uses the
    FLOPs per sample averaged over every ``flop_sample_every``-th step, because a run's steps need
    not cost the same (TinyMIM distils with a teacher pass for 300 steps, then fine-tunes).
    Data time is what ``profiler`` (give it to the Trainer) times: fetching each training batch,
    ``on_before_batch_transfer``, moving it to the device and ``on_after_batch_transfer`` (batch
    augmentation); ``data_share`` is its fraction of data + step time. With another profiler on
    the Trainer (a user's ``trainer.profiler``) there is no data time and ``data_share`` is None.
    """

    def __init__(self, flop_sample_every: int = 50) -> None:
        self.train_samples = 0
        self.train_seconds = 0.0
        self.profiler = DataWaitProfiler()
        self.flops_per_step: int | None = None  # one rank's FLOPs in the first counted step
        self.flop_sample_every = flop_sample_every
        self.counted_flops = 0  # one rank's FLOPs over every counted step
        self.counted_samples = 0  # that rank's samples in those steps
        self._steps_started = 0
        self._batch_started = 0.0
        self._measuring_data = False
        self._flop_counter: FlopCounterMode | None = None

    @property
    def data_seconds(self) -> float:
        return self.profiler.seconds

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._measuring_data = trainer.profiler is self.profiler
        self.profiler.active = True  # before the first fetch: the prefetching loader fetches ahead

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.profiler.active = False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.profiler.active = not trainer.sanity_checking and trainer.state.fn == "fit"

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._steps_started % self.flop_sample_every == 0 and self._flop_counter is None:
            self._flop_counter = flop_counter()
            self._flop_counter.__enter__()
        self._steps_started += 1
        self._batch_started = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._flop_counter is not None:
            # A counted step runs slower under the counter, so it is left out of the throughput.
            self._flop_counter.__exit__(None, None, None)
            flops = int(self._flop_counter.get_total_flops())
            if self.flops_per_step is None:
                self.flops_per_step = flops
            self.counted_flops += flops
            self.counted_samples += count_samples(batch)
            self._flop_counter = None
            return
        self.train_seconds += time.perf_counter() - self._batch_started
        self.train_samples += count_samples(batch) * trainer.world_size

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.profiler.active = False
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
        if not self._measuring_data or total <= 0 or not self.train_samples:
            return None
        return round(self.data_seconds / total, 4)

    def model_flops_utilisation(self, peak_flops_per_s: float | None) -> float | None:
        """Achieved training FLOP/s (:meth:`achieved_flops_per_s`) over the peak of all the run's
        devices (or the CPU probe)."""
        achieved = self.achieved_flops_per_s()
        if not peak_flops_per_s or achieved is None:
            return None
        return achieved / peak_flops_per_s

    def achieved_flops_per_s(self) -> float | None:
        """Training FLOP/s of all ranks: one rank's FLOPs per sample of its own counted batches ×
        the samples per second of all ranks (every rank runs the same step on its own batch)."""
        if not self.counted_flops or not self.counted_samples or self.samples_per_s is None:
            return None
        return self.counted_flops / self.counted_samples * self.samples_per_s

    @property
    def samples_per_s(self) -> float | None:
        if not self.train_samples or self.train_seconds <= 0:
            return None
        return self.train_samples / self.train_seconds


def matmul_probe_flops(*, size: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of this process's best fp32 ``size``³ matmul on the CPU with its current threads.

    The attainable ceiling beside which a CPU run's achieved training FLOP/s is read (there is no
    vendor peak table for CPUs); measured in the run itself, so it sees the same threads and the
    same load from other jobs.
    """
    generator = torch.Generator().manual_seed(0)
    left, right = torch.randn(size, size, generator=generator), torch.randn(size, size, generator=generator)
    left @ right  # warm-up: thread pool and allocator
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        left @ right
        best = min(best, time.perf_counter() - started)
    return 2.0 * size**3 / best


def count_parameters(module: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))
