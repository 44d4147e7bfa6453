"""Lightning vs a hand-written PyTorch loop on the same model, data and seed (like Lightning's own
parity benchmark): wall time per epoch and the per-step training losses.

Both paths start from the same seed and consume the random streams in the same order: datamodule,
then model construction, ``prepare_data``/``setup``, ``configure_model``, then per step the batch
transform (``on_after_batch_transfer``, e.g. augmentation) and ``training_step``. The plain loop is
what a careful user would write by hand: it calls the module's own ``training_step`` and
``configure_optimizers`` (so the maths is identical), then ``zero_grad``/``backward``/gradient
clipping/``step`` and the LR scheduler at its interval. Validation, checkpointing, logging and
progress bars are off on the Lightning side too: the comparison is of the training loops.

The two paths alternate ``repeats`` times in one process, in counterbalanced order (Lightning
then plain, then plain then Lightning, ...), so a slow drift of the machine hits both sides of a
pair alike and a linear drift cancels over two pairs. The analysis follows the design: each repeat
gives one paired ratio (Lightning's mean epoch time / the plain loop's, in that repeat), and the
ratio reported is the geometric mean of the paired ratios with a 95% percentile-bootstrap interval
over repeats. An unpaired comparison (pooling all epochs of a side) counts the machine's drift
between repeats as noise: on this 2-core VM epoch times drifted 2.5x within one 10-minute EMO
measurement while the paired ratios stayed within 0.8-1.3. The 5% goal is called ``met`` or ``not
met`` only when the whole interval is on one side of it (else ``inconclusive``: run more
``--repeats``). The median epoch time of each side is recorded for reference.

Each epoch is also timed in CPU seconds of this process (``time.process_time``, all its threads),
and the same ratio, interval and verdict are given for them. Wall time is what the goal is about,
but on a shared VM it also counts the time the process waited for a core (other tenants, steal, a
concurrent job); CPU time does not, so it isolates the work each loop does. Work done in DataLoader
worker processes is in neither loop's CPU time (both use the same datamodule, so it cancels).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Any, Callable

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.cli import instantiate_class


GOAL_RATIO = 1.05


def paired_ratio(lightning_s: list[float], plain_s: list[float], *, seed: int = 0) -> tuple[float, tuple[float, float] | None]:
    """Geometric mean of the paired ratios lightning_s[i] / plain_s[i] (one pair per repeat) and its
    95% percentile-bootstrap interval over pairs (None with fewer than 2 pairs)."""
    if len(lightning_s) != len(plain_s) or not lightning_s:
        raise ValueError(f"paired ratio needs as many Lightning as plain repeats, got {len(lightning_s)} and {len(plain_s)}")
    log_ratios = np.log(np.asarray(lightning_s, dtype=float) / np.asarray(plain_s, dtype=float))
    estimate = float(np.exp(log_ratios.mean()))
    if len(log_ratios) < 2:
        return estimate, None
    from scipy import stats

    result = stats.bootstrap((log_ratios,), np.mean, vectorized=True, n_resamples=4000, confidence_level=0.95,
                             method="percentile", rng=np.random.default_rng(seed))
    interval = result.confidence_interval
    return estimate, (float(np.exp(interval.low)), float(np.exp(interval.high)))


def goal_verdict(ratio_ci: tuple[float, float] | None) -> str:
    if ratio_ci is None:
        return "inconclusive"
    low, high = ratio_ci
    return "met" if high <= GOAL_RATIO else "not met" if low > GOAL_RATIO else "inconclusive"


@dataclass
class LoopResult:
    losses: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    epoch_cpu_seconds: list[float] = field(default_factory=list)  # time.process_time, all threads


@dataclass
class ParityResult:
    lightning_epoch_s: float
    plain_epoch_s: float
    ratio: float  # Lightning / plain: geometric mean of the per-repeat paired ratios; the goal is <= 1.05
    ratio_ci: tuple[float, float] | None  # 95% bootstrap interval over repeats; None with < 2 repeats
    pair_ratios: list[float]  # per repeat: Lightning's mean epoch time / the plain loop's
    goal: str  # "met" / "not met" / "inconclusive": the interval against GOAL_RATIO
    max_loss_diff: float
    losses_equal_5_decimals: bool
    steps: int
    epochs: int
    repeats: int
    lightning_runs: list[list[float]]
    plain_runs: list[list[float]]
    # the same in CPU seconds of the process (see the module docstring)
    cpu_ratio: float
    cpu_ratio_ci: tuple[float, float] | None
    cpu_goal: str
    cpu_pair_ratios: list[float]
    lightning_cpu_runs: list[list[float]]
    plain_cpu_runs: list[list[float]]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _EpochTimer(pl.Callback):
    def __init__(self, result: LoopResult) -> None:
        self.result = result
        self._started = self._started_cpu = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started, self._started_cpu = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.result.losses.append(float(loss))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.result.epoch_seconds.append(time.perf_counter() - self._started)
        self.result.epoch_cpu_seconds.append(time.process_time() - self._started_cpu)


def _instantiate(config: dict[str, Any]) -> tuple[Any, pl.LightningModule]:
    pl.seed_everything(int(config["seed_everything"]), workers=True, verbose=False)
    return instantiate_class((), config["data"]), instantiate_class((), config["model"])


def lightning_fit(config: dict[str, Any], *, epochs: int) -> LoopResult:
    datamodule, model = _instantiate(config)
    result = LoopResult()
    trainer_config = config["trainer"]
    trainer = pl.Trainer(accelerator=trainer_config.get("accelerator", "cpu"), devices=1, max_epochs=epochs,
                         gradient_clip_val=trainer_config.get("gradient_clip_val"), limit_val_batches=0,
                         num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[_EpochTimer(result)])
    trainer.fit(model, datamodule=datamodule)
    return result


def _optimizers(model: pl.LightningModule) -> tuple[torch.optim.Optimizer, Any, str]:
    """(optimizer, scheduler or None, interval) from the usual configure_optimizers return forms."""
    configured = model.configure_optimizers()
    scheduler, interval = None, "epoch"
    if isinstance(configured, dict):
        optimizer = configured["optimizer"]
        scheduler_config = configured.get("lr_scheduler")
        if isinstance(scheduler_config, dict):
            scheduler, interval = scheduler_config["scheduler"], scheduler_config.get("interval", "epoch")
        else:
            scheduler = scheduler_config
    elif isinstance(configured, (list, tuple)) and len(configured) == 2 and isinstance(configured[0], (list, tuple)):
        optimizer = configured[0][0]
        if configured[1]:
            first = configured[1][0]
            scheduler, interval = (first["scheduler"], first.get("interval", "epoch")) if isinstance(first, dict) \
                else (first, "epoch")
    else:
        optimizer = configured
    return optimizer, scheduler, interval


def _step_scheduler(model: pl.LightningModule, scheduler: Any, steps_done: int) -> None:
    """``lr_scheduler_step`` as Lightning calls it (modules may override it, e.g. timm schedulers
    stepped by ``self.global_step``), with the step counter Lightning would show at that point."""
    model._trainer = SimpleNamespace(global_step=steps_done)
    try:
        model.lr_scheduler_step(scheduler, None)
    finally:
        model._trainer = None


def plain_fit(config: dict[str, Any], *, epochs: int) -> LoopResult:
    datamodule, model = _instantiate(config)
    datamodule.prepare_data()
    datamodule.setup("fit")
    # Modules read a few trainer facts while they are set up: the datamodule (layer sizes, in
    # configure_model) and the schedule length (in configure_optimizers). A stand-in holding only
    # those serves these calls; the training loop itself runs without it.
    steps_per_epoch = len(datamodule.train_dataloader())
    model._trainer = SimpleNamespace(datamodule=datamodule, max_epochs=epochs,
                                     estimated_stepping_batches=epochs * steps_per_epoch)
    model.configure_model()
    optimizer, scheduler, interval = _optimizers(model)
    model._trainer = None
    # The datamodule's batch transform asks whether it is training (augmentation on or off).
    datamodule.trainer = SimpleNamespace(training=True)
    clip = config["trainer"].get("gradient_clip_val")
    result = LoopResult()
    steps_done = 0
    model.train()
    for _ in range(epochs):
        started, started_cpu = time.perf_counter(), time.process_time()
        for batch_idx, batch in enumerate(datamodule.train_dataloader()):
            batch = datamodule.on_after_batch_transfer(batch, 0)
            optimizer.zero_grad()
            loss = model.training_step(batch, batch_idx)
            loss = loss["loss"] if isinstance(loss, dict) else loss
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            steps_done += 1
            if scheduler is not None and interval == "step":
                _step_scheduler(model, scheduler, steps_done)
            result.losses.append(float(loss.detach()))
        if scheduler is not None and interval == "epoch":
            _step_scheduler(model, scheduler, steps_done)
        result.epoch_seconds.append(time.perf_counter() - started)
        result.epoch_cpu_seconds.append(time.process_time() - started_cpu)
    return result


def _timed_mean(epoch_seconds: list[float]) -> float:
    """A run's mean epoch time. The first epoch carries one-off costs (allocations, lazy init) on
    both sides: it is left out when there are others."""
    return statistics.fmean(epoch_seconds[1:] or epoch_seconds)


def counterbalanced_pairs(first: Callable[[], LoopResult], second: Callable[[], LoopResult],
                          *, repeats: int) -> tuple[list[LoopResult], list[LoopResult]]:
    """``repeats`` pairs of runs in counterbalanced order (first second, second first, ...), so a
    linear drift of the machine cancels over two pairs; returns each side's runs in pair order."""
    firsts, seconds = [], []
    for repeat in range(repeats):
        if repeat % 2 == 0:
            firsts.append(first())
            seconds.append(second())
        else:
            seconds.append(second())
            firsts.append(first())
    return firsts, seconds


def compare(config: dict[str, Any], *, epochs: int, repeats: int) -> ParityResult:
    lightning_runs, plain_runs = counterbalanced_pairs(lambda: lightning_fit(config, epochs=epochs),
                                                       lambda: plain_fit(config, epochs=epochs), repeats=repeats)

    def pooled(per_run: list[list[float]]) -> list[float]:
        return [s for epochs in per_run for s in (epochs[1:] or epochs)]

    def pairs(lightning: list[list[float]], plain: list[list[float]]) -> tuple[list[float], list[float]]:
        return [_timed_mean(run) for run in lightning], [_timed_mean(run) for run in plain]

    lightning_wall, plain_wall = pairs([run.epoch_seconds for run in lightning_runs], [run.epoch_seconds for run in plain_runs])
    ratio, ratio_ci = paired_ratio(lightning_wall, plain_wall)
    lightning_cpu, plain_cpu = pairs([run.epoch_cpu_seconds for run in lightning_runs],
                                     [run.epoch_cpu_seconds for run in plain_runs])
    cpu_ratio, cpu_ratio_ci = paired_ratio(lightning_cpu, plain_cpu)
    reference, other = lightning_runs[0].losses, plain_runs[0].losses
    if len(reference) != len(other):
        raise RuntimeError(f"the loops ran a different number of steps: Lightning {len(reference)}, plain {len(other)}")
    max_diff = max((abs(a - b) for a, b in zip(reference, other)), default=0.0)
    return ParityResult(lightning_epoch_s=statistics.median(pooled([run.epoch_seconds for run in lightning_runs])),
                        plain_epoch_s=statistics.median(pooled([run.epoch_seconds for run in plain_runs])),
                        ratio=ratio, ratio_ci=ratio_ci, goal=goal_verdict(ratio_ci),
                        pair_ratios=[a / b for a, b in zip(lightning_wall, plain_wall)],
                        max_loss_diff=max_diff, losses_equal_5_decimals=max_diff < 5e-6, steps=len(reference),
                        epochs=epochs, repeats=repeats,
                        lightning_runs=[run.epoch_seconds for run in lightning_runs],
                        plain_runs=[run.epoch_seconds for run in plain_runs],
                        cpu_ratio=cpu_ratio, cpu_ratio_ci=cpu_ratio_ci, cpu_goal=goal_verdict(cpu_ratio_ci),
                        cpu_pair_ratios=[a / b for a, b in zip(lightning_cpu, plain_cpu)],
                        lightning_cpu_runs=[run.epoch_cpu_seconds for run in lightning_runs],
                        plain_cpu_runs=[run.epoch_cpu_seconds for run in plain_runs])
