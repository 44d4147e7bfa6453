"""Device placement without a GPU: after a training step, no module of any benchmark keeps a tensor
as a plain attribute (not a parameter, buffer or torchmetrics state), because `.to(device)` would
leave it behind. RELIANT's GCN adjacency on the host ("mat1 is on cuda:0, different from other
tensors on cpu") was this bug class. Parametrised over the registry, so a new spec is covered."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.cli import instantiate_class
from torchmetrics import Metric

from benchmarks.resolve import resolve_run
from benchmarks.spec import load_all_specs

SPECS = load_all_specs(Path(__file__).resolve().parents[2] / "benchmarks" / "specs")


# Plain tensor attributes that are device-aware by construction, each with where that is shown.
DEVICE_AWARE = {
    # Made in `setup` from the datamodule's host tensors; `on_fit_start` moves real/mask/trigger to
    # the module's device, and the label/index tensors index on the host generator's side.
    ("DoorpingDistillation", name) for name in ("real", "real_labels", "mask", "poisoned", "trigger", "class_index")
} | {
    # Rebuilt when the device or dtype changes (tests/modules/test_reliant.py,
    # test_teacher_follows_its_module_to_a_new_device_or_dtype), PyG's cache slots cleared with it.
    ("GNNTeacher", "_adjacency"), ("GCNConv", "_cached_edge_index"), ("GCNConv", "_cached_adj_t"),
}


def tensors_left_behind(module: torch.nn.Module) -> list[str]:
    """Plain tensor attributes (also inside a list, tuple or dict attribute) of ``module`` and its
    submodules, as ``Class.attribute``: ``Module.to`` moves parameters and buffers, and torchmetrics
    moves its states, but nothing else. Attributes in ``DEVICE_AWARE`` are left out."""
    found = []
    for submodule in module.modules():
        if isinstance(submodule, Metric):
            continue
        for attribute, value in vars(submodule).items():
            if attribute in ("_parameters", "_buffers", "_modules") or (type(submodule).__name__, attribute) in DEVICE_AWARE:
                continue
            values = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(item, torch.Tensor) for item in values):
                found.append(f"{type(submodule).__name__}.{attribute}")
    return found


class CachesAPlainTensor(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)
        self.register_buffer("moved", torch.ones(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.adjacency = torch.eye(2)  # created once, on whatever device the first call saw
        return self.linear(x) @ self.adjacency + self.moved


def test_the_scan_flags_a_cached_plain_tensor_and_passes_buffers_and_parameters() -> None:
    module = CachesAPlainTensor()
    assert tensors_left_behind(module) == []
    module(torch.zeros(1, 2))
    assert tensors_left_behind(module) == ["CachesAPlainTensor.adjacency"]


def _models_to_scan() -> list[tuple[str, str, dict]]:
    """(benchmark, where, model config): each distinct model class of each smoke profile: methods
    without stages, and the stage models (a method fed by a stage needs its artifact)."""
    seen, cases = set(), []
    for name, spec in sorted(SPECS.items()):
        dataset = spec.datasets_for("smoke")[0]
        for method in spec.profiles["smoke"].include_methods or spec.methods:
            plan = resolve_run(spec, method=method, dataset=dataset, profile="smoke", seed=0, sets=[])
            stages = plan.config["litbench"].get("stages", [])
            models = [(f"stage {stage['name']}", stage["model"], stage["trainer"]) for stage in stages] or [
                (method, plan.config["model"], plan.config["trainer"])]
            for where, model, trainer in models:
                if (name, model["class_path"]) not in seen:
                    seen.add((name, model["class_path"]))
                    cases.append((name, f"{method}: {where}", {"data": plan.config["data"], "model": model,
                                                                "trainer": trainer}))
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("bench,where,config", _models_to_scan(), ids=lambda value: value if isinstance(value, str) else "")
def test_no_module_keeps_a_tensor_that_to_device_would_leave_behind(bench: str, where: str, config: dict) -> None:
    pl.seed_everything(0, verbose=False)
    datamodule = instantiate_class((), config["data"])
    model = instantiate_class((), config["model"])
    # Two batches of one epoch; a profile that counts steps (TinyMIM: MAE pre-training, then
    # fine-tuning) keeps its own small smoke budget, which its phases are sized for.
    budget = {"max_steps": config["trainer"]["max_steps"]} if config["trainer"].get("max_steps") else {
        "max_epochs": 1, "limit_train_batches": 2}
    trainer = pl.Trainer(accelerator="cpu", **budget, limit_val_batches=0, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    if getattr(model, "requires_fit", True):
        trainer.fit(model, datamodule=datamodule)
    assert tensors_left_behind(model) == [], f"{bench} {where}"
