"""In-memory datasets that a DataLoader fetches a whole batch at a time, and a device-resident store.

A ``DataLoader`` over a plain ``TensorDataset`` indexes each sample, then ``default_collate`` stacks
them again: per batch, ``B`` small tensor copies and one ``torch.stack`` on the host. Since torch
2.0 the loader hands the whole index list to a dataset's ``__getitems__``; these datasets answer it
with one advanced-indexing op and ``keep_batch`` passes the result through, so a batch costs one
gather. The sampler is unchanged (RandomSampler / SequentialSampler + BatchSampler, or Lightning's
DistributedSampler under DDP), so a seed gives the same batches as the per-sample path.

``DeviceResidentImages`` goes one step further for data that fits on the accelerator (synthetic
sets, CIFAR-sized sets): every split's uint8 images sit in one tensor that moves to the device once;
loaders yield ``(global index, label)`` batches, and the datamodule's ``on_after_batch_transfer``
gathers the images on the device. No image crosses the host-device link after the first batch.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, TensorDataset


def keep_batch(batch):
    """``collate_fn`` for datasets whose ``__getitems__`` already returns a batch (module level: picklable)."""
    return batch


class BatchedTensorDataset(TensorDataset):
    """A ``TensorDataset`` whose loader fetches a batch with one gather (``__getitems__``)."""

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return tuple(tensor[index] for tensor in self.tensors)


class ResidentSplit(Dataset):
    """One split of a ``DeviceResidentImages`` store: item ``i`` is ``(offset + i, label_i)``."""

    def __init__(self, *, labels: torch.Tensor, offset: int) -> None:
        self.labels, self.offset = labels, offset

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        return self.offset + index, self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return index + self.offset, self.labels[index]


class DeviceResidentImages:
    """The images of several splits in one tensor that follows the batches to their device."""

    def __init__(self, splits: dict[str, TensorDataset]) -> None:
        self.offsets: dict[str, int] = {}
        parts, offset = [], 0
        for name, split in splits.items():
            self.offsets[name] = offset
            parts.append(split.tensors[0])
            offset += len(split)
        self.images = torch.cat(parts) if parts else torch.empty(0)
        self.labels = {name: split.tensors[1] for name, split in splits.items()}

    def split(self, name: str) -> ResidentSplit:
        return ResidentSplit(labels=self.labels[name], offset=self.offsets[name])

    def gather(self, indices: torch.Tensor) -> torch.Tensor:
        """The images at global ``indices``, on the indices' device (the store moves there once)."""
        if self.images.device != indices.device:
            self.images = self.images.to(indices.device)
        return self.images[indices]
