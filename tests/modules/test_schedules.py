"""The library schedules every paper uses, against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from modules.common.schedules import cyclic, warmup_cosine


def _lrs(entry: dict, steps: int, *, timm: bool) -> list[float]:
    scheduler, optimizer = entry["scheduler"], entry["scheduler"].optimizer
    values = [optimizer.param_groups[0]["lr"]]
    for step in range(1, steps + 1):
        optimizer.step()
        scheduler.step_update(num_updates=step) if timm else scheduler.step()
        values.append(optimizer.param_groups[0]["lr"])
    return values


def _optimizer(lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_warmup_then_cosine_after_the_warmup() -> None:
    # 10 steps: 4 of warm-up from 0, then a half cosine over 6 steps from 1.0 down to 0.1
    lrs = _lrs(warmup_cosine(_optimizer(1.0), total_steps=10, warmup_steps=4, lr_min=0.1), 10, timm=True)
    assert lrs[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert lrs[7] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 3 / 6)))  # = 0.55
    assert lrs[10] == pytest.approx(0.1)


def test_warmup_without_prefix_counts_the_cosine_from_step_zero() -> None:
    lrs = _lrs(warmup_cosine(_optimizer(1.0), total_steps=10, warmup_steps=2, warmup_lr_init=0.2,
                             warmup_prefix=False), 10, timm=True)
    assert lrs[:3] == pytest.approx([0.2, 0.6, 0.5 * (1 + math.cos(math.pi * 2 / 10))])


def test_cyclic_rises_to_the_peak_and_falls_to_the_final_ratio() -> None:
    # torch's OneCycleLR: the rise ends at step 0.4 * 10 - 1 = 3, the fall at the last step, 9
    lrs = _lrs(cyclic(_optimizer(1e-3), total_steps=10, peak=10.0), 9, timm=False)
    assert lrs[0] == pytest.approx(1e-3)
    assert lrs[1] == pytest.approx(1e-3 + (1e-2 - 1e-3) * (1 - math.cos(math.pi / 3)) / 2)  # cosine-shaped rise
    assert max(lrs) == pytest.approx(1e-2) and lrs.index(max(lrs)) == 3
    assert lrs[9] == pytest.approx(1e-7)
