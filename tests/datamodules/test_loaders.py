"""Every datamodule's loaders pin host memory when a CUDA device is there (asynchronous copies) and
keep their worker processes between epochs."""

from __future__ import annotations

import pytest
import torch

from datamodules.images import ImageClassificationDataModule
from datamodules.loaders import loader_options


@pytest.mark.parametrize("cuda", [True, False])
def test_loader_options_pin_only_with_cuda_and_keep_workers(monkeypatch: pytest.MonkeyPatch, cuda: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert loader_options(2) == {"num_workers": 2, "persistent_workers": True, "pin_memory": cuda}
    assert loader_options(0) == {"num_workers": 0, "persistent_workers": False, "pin_memory": cuda}


def test_an_image_loader_pins_its_batches_on_a_cuda_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    datamodule = ImageClassificationDataModule("generated", generated_train_size=40, generated_test_size=20, val_size=0, batch_size=4)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    assert loader.pin_memory and loader.batch_size == 4
