"""What the runner expects of a method's LightningModule and a benchmark's LightningDataModule.

This is the whole contract; nothing else about a module is read by the harness.

A method (``methods.<name>.class_path`` in a spec) is a ``LightningModule`` that

* logs ``test/<metric>`` in ``test_step`` — every such value becomes ``record.metrics[<metric>]``
  (the spec's ``metrics.higher_is_better`` says which way is better);
* may set ``requires_fit = False`` (k-means, SVD truncation, a reference generator): the runner then
  skips ``trainer.fit`` and only tests;
* finds ``self.artifact_dir`` (a ``Path``, set before ``fit``) for files meant for readers
  (generated MIDI, image grids); written on global rank 0, published beside the record only when
  the run succeeds;
* receives a cached stage's artifact path in the ``__init__`` argument named by the stage's
  ``pass_as``; a stage's own class may define ``save_stage_artifact(folder) -> Path`` to write
  something other than a Lightning checkpoint;
* may set ``stage_shared_args`` (a tuple of ``__init__`` argument names) when it loads a stage's
  network and needs it built alike: a run or sweep whose config gives the stage and the method
  different values for one of them stops before the stage trains (``benchmarks/config_check.py``).

A datamodule (``data.class_path``) is a ``LightningDataModule`` whose ``__init__`` takes
``dataset`` (a dataset name of the spec), ``data_dir`` and ``cache_dir`` (both may be ``None``), and
which has a ``test_dataloader``; a ``val_dataloader`` over data held out of training lets
``litbench sweep`` calibrate on it. A datamodule may define ``model_init_args() -> dict`` (e.g.
``{"num_classes": 7}`` read from a COCO json): the runner passes each of those values to every
model it builds on that data (the method's and its stages') whose ``__init__`` takes that argument
and whose config does not set it, so a user's dataset needs no matching ``--set`` per stage.

``contract_problems(spec)`` checks a spec's classes against this without running anything.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Protocol, runtime_checkable

import lightning.pytorch as pl

from benchmarks.spec import BenchmarkSpec

DATAMODULE_ARGUMENTS = ("dataset", "data_dir", "cache_dir")


@runtime_checkable
class StageModule(Protocol):
    """A cached stage whose artifact is not a checkpoint."""

    def save_stage_artifact(self, folder: Path) -> Path: ...


def load_class(class_path: str) -> type:
    module_name, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module_name), name)


def _accepts(cls: type, argument: str) -> bool:
    parameters = inspect.signature(cls.__init__).parameters
    return argument in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _overrides(cls: type, base: type, name: str) -> bool:
    return getattr(cls, name, None) is not getattr(base, name, None)


def method_problems(cls: type, *, where: str) -> list[str]:
    problems = []
    if not (isinstance(cls, type) and issubclass(cls, pl.LightningModule)):
        return [f"{where}: {cls!r} is not a LightningModule"]
    if not _overrides(cls, pl.LightningModule, "test_step"):
        problems.append(f"{where}: {cls.__name__} has no test_step, so it can log no test/<metric>")
    if not isinstance(getattr(cls, "requires_fit", True), bool):
        problems.append(f"{where}: {cls.__name__}.requires_fit must be True or False")
    shared = getattr(cls, "stage_shared_args", ())
    if not (isinstance(shared, tuple) and all(isinstance(name, str) for name in shared)):
        problems.append(f"{where}: {cls.__name__}.stage_shared_args must be a tuple of argument names")
    return problems


def contract_problems(spec: BenchmarkSpec) -> list[str]:
    """Every way the spec's classes break the contract above (empty when they keep it)."""
    problems = []
    data_class = load_class(spec.data.class_path)
    where = f"{spec.name}: data"
    if not (isinstance(data_class, type) and issubclass(data_class, pl.LightningDataModule)):
        problems.append(f"{where}: {data_class!r} is not a LightningDataModule")
    else:
        problems += [f"{where}: {data_class.__name__}.__init__ takes no {name!r}"
                     for name in DATAMODULE_ARGUMENTS if not _accepts(data_class, name)]
        if not _overrides(data_class, pl.LightningDataModule, "test_dataloader"):
            problems.append(f"{where}: {data_class.__name__} has no test_dataloader")
    for name, method in spec.methods.items():
        cls = load_class(method.class_path)
        problems += method_problems(cls, where=f"{spec.name}: methods.{name}")
        for stage in method.stages:
            stage_where = f"{spec.name}: methods.{name}.stages.{stage.name}"
            stage_class = load_class(stage.class_path)
            if not (isinstance(stage_class, type) and issubclass(stage_class, pl.LightningModule)):
                problems.append(f"{stage_where}: {stage_class!r} is not a LightningModule")
            if isinstance(cls, type) and not _accepts(cls, stage.pass_as):
                problems.append(f"{stage_where}: pass_as {stage.pass_as!r} is not an __init__ argument of {cls.__name__}")
    return problems


def linked_model_config(model_config: dict, datamodule: object) -> dict:
    """``model_config`` with the datamodule's ``model_init_args()`` filled in where the model's
    ``__init__`` takes them and the config leaves them unset (an explicit value wins)."""
    describe = getattr(datamodule, "model_init_args", None)
    if describe is None:
        return model_config
    init_args = dict(model_config.get("init_args") or {})
    model_class = load_class(model_config["class_path"])
    missing = {name: value for name, value in describe().items()
               if name not in init_args and _takes_argument(model_class, name)}
    return {**model_config, "init_args": {**init_args, **missing}} if missing else model_config


def _takes_argument(cls: type, name: str) -> bool:
    """``cls(name=...)`` reaches an ``__init__`` that names ``name``: its own, or a base class's
    through ``**kwargs`` (a fine-tuning module that forwards its network arguments)."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters
        if name in parameters:
            return True
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return False
    return False
