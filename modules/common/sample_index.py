"""Counting each sample once after a DDP gather.

A DistributedSampler pads the last ranks with repeated samples, and every rank may hold the same
full graph: metrics that keep per-sample ``cat`` states also keep a sample index (-1: not to be
deduplicated) and score only the positions ``first_copies`` returns.
"""

from __future__ import annotations

import numpy as np


def first_copies(sample_index: np.ndarray) -> np.ndarray:
    """Positions to keep: the first copy of each index >= 0 (in index order), then every -1 position."""
    sample_index = np.asarray(sample_index)
    indexed = sample_index >= 0
    _, first_seen = np.unique(sample_index[indexed], return_index=True)
    return np.concatenate([np.flatnonzero(indexed)[first_seen], np.flatnonzero(~indexed)])
