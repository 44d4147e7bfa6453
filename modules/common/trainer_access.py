"""What a LightningModule may read from the Trainer it is attached to (shared by DCAGC and RELIANT)."""

from __future__ import annotations

import lightning.pytorch as pl


def attached_datamodule(module: pl.LightningModule):
    """The datamodule of the Trainer the module is attached to, or None."""
    try:
        return getattr(module.trainer, "datamodule", None)
    except RuntimeError:  # not attached to a Trainer
        return None
