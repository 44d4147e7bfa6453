"""DataLoader options every datamodule shares: what makes host-to-GPU input cheap.

Pinned (page-locked) host batches let Lightning's transfer to a CUDA device run asynchronously
(``non_blocking``), and persistent workers keep their decoded state between epochs instead of
re-forking each epoch. On a machine without CUDA pinning is off (it would only cost).
"""

from __future__ import annotations

from typing import Any

import torch


def loader_options(num_workers: int) -> dict[str, Any]:
    """``DataLoader`` keyword arguments for ``num_workers`` loader processes."""
    return {"num_workers": num_workers, "persistent_workers": num_workers > 0,
            "pin_memory": torch.cuda.is_available()}
