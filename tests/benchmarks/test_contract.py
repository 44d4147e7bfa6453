"""The module contract (benchmarks/contract.py): every shipped spec keeps it, and a broken one is named."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest

from benchmarks.contract import contract_problems
from benchmarks.spec import load_all_specs, load_spec

SPECS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "specs"


@pytest.mark.parametrize("name", sorted(load_all_specs(SPECS_DIR)))
def test_every_shipped_spec_keeps_the_module_contract(name: str) -> None:
    assert contract_problems(load_all_specs(SPECS_DIR)[name]) == []


class NoTestStep(pl.LightningModule):
    requires_fit = "yes"
    stage_shared_args = "lr"  # one string, not a tuple of names

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()


class FixedData(pl.LightningDataModule):
    def __init__(self, dataset: str = "x") -> None:
        super().__init__()


def test_a_spec_that_breaks_the_contract_gets_one_line_per_problem(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "broken_modules", sys.modules[__name__])
    (tmp_path / "broken.yaml").write_text(
        "name: broken\n"
        "data: {class_path: broken_modules.FixedData, datasets: [x]}\n"
        "methods:\n"
        "  a: {role: proposed, class_path: broken_modules.NoTestStep,\n"
        "      stages: [{name: pre, class_path: broken_modules.NoTestStep, pass_as: checkpoint}]}\n"
        "metrics: {primary: acc, higher_is_better: {acc: true}}\n"
        "profiles: {smoke: {seeds: 1}}\n")
    problems = contract_problems(load_spec(tmp_path / "broken.yaml"))
    assert problems == [
        "broken: data: FixedData.__init__ takes no 'data_dir'",
        "broken: data: FixedData.__init__ takes no 'cache_dir'",
        "broken: data: FixedData has no test_dataloader",
        "broken: methods.a: NoTestStep has no test_step, so it can log no test/<metric>",
        "broken: methods.a: NoTestStep.requires_fit must be True or False",
        "broken: methods.a: NoTestStep.stage_shared_args must be a tuple of argument names",
        "broken: methods.a.stages.pre: pass_as 'checkpoint' is not an __init__ argument of NoTestStep",
    ]
