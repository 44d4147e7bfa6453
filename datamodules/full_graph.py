"""Base for datamodules that serve one whole graph per batch (node clustering, node classification).

Every dataloader (train, val, test, predict) yields the single full graph once per epoch. Under
DDP each rank gets the full graph: Lightning's distributed sampler pads the one-item dataset to one
item per rank. Subclasses set ``self.graph`` in ``setup`` and may override ``num_classes``.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
from torch.utils.data import DataLoader
from torch_geometric.data import Data

from datamodules.paths import default_cache_dir


def _first_item(items: list[Data]) -> Data:
    return items[0]


class FullGraphDataModule(pl.LightningDataModule):
    graph: Data | None = None
    data_dir: str | None = None
    cache_dir: str | None = None

    @property
    def data_root(self) -> Path | None:
        """``data_dir``, else env ``LITBENCH_DATA``, else None."""
        root = self.data_dir or os.environ.get("LITBENCH_DATA")
        return Path(root).expanduser() if root else None

    @property
    def cache_root(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()

    def _require_graph(self) -> Data:
        if self.graph is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before reading the graph or its shape")
        return self.graph

    @property
    def num_nodes(self) -> int:
        return int(self._require_graph().num_nodes)

    @property
    def num_features(self) -> int:
        return int(self._require_graph().x.size(1))

    @property
    def num_classes(self) -> int:
        return int(self._require_graph().y.max().item()) + 1

    @staticmethod
    def _one_graph_loader(graph: Data) -> DataLoader:
        return DataLoader([graph], batch_size=1, shuffle=False, collate_fn=_first_item)

    def _full_graph_loader(self) -> DataLoader:
        return self._one_graph_loader(self._require_graph())

    def train_dataloader(self) -> DataLoader:
        return self._full_graph_loader()

    def val_dataloader(self) -> DataLoader:
        return self._full_graph_loader()

    def test_dataloader(self) -> DataLoader:
        return self._full_graph_loader()

    def predict_dataloader(self) -> DataLoader:
        return self._full_graph_loader()
