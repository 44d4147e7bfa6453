"""``litbench perf step``: what one training step of a method (or of a stage) costs, eager and under
``torch.compile``, and which operators its time goes to.

The budget of a scaled profile is bought with step speed, so the step is measured, not guessed:
the method's own ``training_step``, optimiser and precision run in a Lightning ``fit`` on the
profile's data, one process, the threads of ``$LITBENCH_NUM_THREADS``. Per mode: warm-up steps
(compilation included, reported as ``first_steps_s``), then ``steps`` timed steps (forward,
backward, optimiser; data loading is outside the clock, as in a run's ``train_samples_per_s``),
then ``profiled_steps`` under ``torch.profiler`` (slower, so not timed) whose operators, by self
time, give the top-operator shares. FLOPs per step come from the FLOP counter that run records use,
beside this process's fp32 matmul probe, so the gap between the two is a number in the record.
The record goes to ``RESULTS/perf/step/`` and the leaderboard's "Training step" table.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import instantiate_class

from benchmarks.costs import count_samples, flop_counter, matmul_probe_flops
from benchmarks.errors import UsageError

MODES = ("eager", "compiled")


@dataclass
class StepTiming:
    mode: str
    steps: int = 0
    seconds: float = 0.0
    samples: int = 0
    first_steps_s: float = 0.0
    flops_per_step: int | None = None
    top_ops: list[tuple[str, float]] = field(default_factory=list)  # (operator, share of profiled self time)

    @property
    def ms_per_step(self) -> float | None:
        return 1000.0 * self.seconds / self.steps if self.steps else None

    def payload(self) -> dict[str, Any]:
        achieved = (self.flops_per_step * self.steps / self.seconds) if self.flops_per_step and self.seconds else None
        return {**asdict(self), "ms_per_step": self.ms_per_step,
                "samples_per_s": self.samples / self.seconds if self.seconds else None,
                "achieved_gflops": achieved / 1e9 if achieved else None,
                "top_ops": [[name, round(share, 4)] for name, share in self.top_ops]}


class _StepClock(pl.Callback):
    """Steps [0, warmup): warm-up (the first one FLOP-counted); [warmup, warmup + steps): timed;
    then ``profiled`` steps under torch.profiler."""

    def __init__(self, timing: StepTiming, *, warmup: int, steps: int, profiled: int, top: int) -> None:
        self.timing, self.warmup, self.steps, self.profiled, self.top = timing, warmup, steps, profiled, top
        self.index, self.started, self.fit_started = 0, 0.0, 0.0
        self.counter: Any = None
        self.profiler: Any = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.fit_started = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.index == 0 and self.timing.mode == "eager":  # the counter sees no ops inside a compiled graph
            self.counter = flop_counter().__enter__()
        if self.index == self.warmup + self.steps:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(activities=activities).__enter__()
        _synchronize()
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        _synchronize()
        seconds = time.perf_counter() - self.started
        if self.counter is not None:
            self.counter.__exit__(None, None, None)
            self.timing.flops_per_step = int(self.counter.get_total_flops())
            self.counter = None
        if self.warmup <= self.index < self.warmup + self.steps:
            self.timing.steps += 1
            self.timing.seconds += seconds
            self.timing.samples += count_samples(batch)
        if self.index == self.warmup - 1:
            self.timing.first_steps_s = time.perf_counter() - self.fit_started
        self.index += 1
        if self.profiler is not None and self.index == self.warmup + self.steps + self.profiled:
            self._close_profiler()

    def on_train_end(self, trainer, pl_module) -> None:
        self._close_counter()
        self._close_profiler()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # the counter's module hooks are process-global: a leaked one would slow every later step
        self._close_counter()
        self._close_profiler()

    def _close_counter(self) -> None:
        if self.counter is not None:
            self.counter.__exit__(None, None, None)
            self.counter = None

    def _close_profiler(self) -> None:
        if self.profiler is None:
            return
        self.profiler.__exit__(None, None, None)
        self.timing.top_ops = top_operators(self.profiler.key_averages(), top=self.top)
        self.profiler = None


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def top_operators(averages: Any, *, top: int) -> list[tuple[str, float]]:
    """The ``top`` operators by self time (device time when the profile has any, else CPU time) with
    their share of the total; profiler annotations (``Optimizer.step#...``) are not operators."""
    events = [event for event in averages if not _annotation(event.key)]
    on_device = any(getattr(event, "self_device_time_total", 0) for event in events)

    def self_time(event: Any) -> float:
        return float(event.self_device_time_total if on_device else event.self_cpu_time_total)

    total = sum(self_time(event) for event in events)
    ranked = sorted(events, key=self_time, reverse=True)[:top]
    return [(event.key, self_time(event) / total) for event in ranked] if total else []


def _annotation(key: str) -> bool:
    """A profiler range around ops (an optimiser step, compiler work), not an operator itself."""
    return ("#" in key or "(dynamo_timed)" in key
            or key.startswith(("ProfilerStep", "PythonDispatchMode", "CompiledFunction", "Torch-Compiled Region",
                            "TorchDynamo Cache Lookup")))


def training_config(config: dict[str, Any], *, stage: str | None) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(model config, trainer config, what is measured) of the method, or of one of its stages."""
    stages = {entry["name"]: entry for entry in config["litbench"].get("stages", [])}
    method = config["litbench"]["method"]
    if stage is not None:
        if stage not in stages:
            raise UsageError(f"method {method!r} has no stage {stage!r} (stages: {', '.join(stages) or 'none'})")
        return stages[stage]["model"], stages[stage]["trainer"], f"{method} (stage {stage})"
    if stages:
        names = ", ".join(stages)
        raise UsageError(f"method {method!r} trains on top of its stage(s) {names}, which this measurement does not "
                         f"build; measure a stage's step with --stage ({names})")
    return config["model"], config["trainer"], method


def measure(config: dict[str, Any], *, stage: str | None, mode: str, warmup: int, steps: int,
            profiled_steps: int, top: int) -> StepTiming:
    from benchmarks.runner import linked_model_config, quiet_lightning

    quiet_lightning()
    model_config, trainer_config, _ = training_config(config, stage=stage)
    pl.seed_everything(int(config["seed_everything"]), workers=True, verbose=False)
    datamodule = instantiate_class((), config["data"])
    model = instantiate_class((), linked_model_config(model_config, datamodule))
    if not getattr(model, "requires_fit", True):
        raise UsageError(f"{config['litbench']['method']} does not train (requires_fit is False); measure its stage with --stage")
    timing = StepTiming(mode=mode)
    clock = _StepClock(timing, warmup=warmup, steps=steps, profiled=profiled_steps, top=top)
    trainer = pl.Trainer(accelerator=trainer_config.get("accelerator", "auto"), devices=1,
                         precision=trainer_config.get("precision", "32-true"),
                         gradient_clip_val=trainer_config.get("gradient_clip_val"),
                         max_steps=warmup + steps + profiled_steps, limit_val_batches=0, num_sanity_val_steps=0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[clock])
    trainer.fit(torch.compile(model) if mode == "compiled" else model, datamodule=datamodule)
    if timing.steps < steps:
        raise UsageError(f"the run stopped after {clock.index} steps; fewer than the {warmup + steps} asked for")
    return timing


def step_payload(config: dict[str, Any], *, stage: str | None, modes: list[str], warmup: int, steps: int,
                 profiled_steps: int, top: int) -> dict[str, Any]:
    """The perf record's payload: each mode's timing, the speed-up, and the matmul probe."""
    _, _, measured = training_config(config, stage=stage)
    if threads := os.environ.get("LITBENCH_NUM_THREADS"):  # as a run process does
        torch.set_num_threads(int(threads))
    timings = {mode: measure(config, stage=stage, mode=mode, warmup=warmup, steps=steps,
                             profiled_steps=profiled_steps, top=top).payload() for mode in modes}
    eager, compiled = timings.get("eager"), timings.get("compiled")
    if eager and compiled and eager["flops_per_step"] and compiled["seconds"]:  # the same math, counted eagerly
        compiled["flops_per_step"] = eager["flops_per_step"]
        compiled["achieved_gflops"] = eager["flops_per_step"] * compiled["steps"] / compiled["seconds"] / 1e9
    speedup = (eager["ms_per_step"] / compiled["ms_per_step"]) if eager and compiled else None
    meta = config["litbench"]
    return {"benchmark": meta["benchmark"], "method": meta["method"], "stage": stage, "measured": measured,
            "dataset": meta["dataset"], "profile": meta["profile"], "torch_threads": torch.get_num_threads(),
            "accelerator": "gpu" if torch.cuda.is_available() else "cpu", "modes": timings,
            "compile_speedup": speedup,
            # the CPU's attainable fp32 rate beside a CPU step; a GPU step is read against its peak table
            "probe_gflops": None if torch.cuda.is_available() else matmul_probe_flops() / 1e9,
            "warmup": warmup, "steps": steps, "profiled_steps": profiled_steps}
