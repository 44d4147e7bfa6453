"""Learning-rate schedules: library schedulers only, set up once for every paper that needs one.

* ``warmup_cosine``: timm's ``CosineLRScheduler`` stepped per optimiser step: linear warm-up from
  ``warmup_lr_init``, then a half-cycle cosine to ``lr_min`` (MAE/TinyMIM, the drum LM, EMO). With
  ``warmup_prefix`` the cosine starts after the warm-up (MAE's ``lr_sched``); without it the cosine
  is counted from step 0 and the warm-up overrides its first steps (EMO's timm recipe).
* ``cyclic``: torch's ``OneCycleLR`` with cosine annealing both ways: the cyclic policy of
  mmdetection3d configs (CMT), rising from lr to ``peak`` x lr, then down to ``final_ratio`` x lr.

A LightningModule that uses ``warmup_cosine`` also mixes in ``TimmStepSchedule``: Lightning steps
torch schedulers itself, timm's need ``step_update`` with the optimiser step count.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.scheduler import CosineLRScheduler


def warmup_cosine(optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int, lr_min: float = 0.0,
                  warmup_lr_init: float = 0.0, warmup_prefix: bool = True) -> dict[str, Any]:
    """Lightning's ``lr_scheduler`` entry for a per-step warm-up + cosine schedule."""
    total_steps, warmup_steps = max(1, int(total_steps)), max(0, int(warmup_steps))
    cosine_steps = total_steps - warmup_steps if warmup_prefix else total_steps
    scheduler = CosineLRScheduler(optimizer, t_initial=max(1, cosine_steps), lr_min=lr_min, warmup_t=warmup_steps,
                                  warmup_lr_init=warmup_lr_init, warmup_prefix=warmup_prefix, t_in_epochs=False)
    return {"scheduler": scheduler, "interval": "step"}


def cyclic(optimizer: torch.optim.Optimizer, *, total_steps: int, peak: float, rise_fraction: float = 0.4,
           final_ratio: float = 1e-4) -> dict[str, Any]:
    """Lightning's ``lr_scheduler`` entry for mmdet3d's cyclic policy (cosine up to ``peak`` x, cosine down)."""
    base_lr = optimizer.param_groups[0]["lr"]
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=base_lr * peak, total_steps=max(2, int(total_steps)), pct_start=rise_fraction,
        anneal_strategy="cos", div_factor=peak, final_div_factor=1.0 / final_ratio, cycle_momentum=False)
    return {"scheduler": scheduler, "interval": "step"}


class TimmStepSchedule:
    """Mixin for LightningModules with a timm scheduler: step it per optimiser step."""

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        scheduler.step_update(num_updates=self.global_step)  # type: ignore[attr-defined]
