"""A LightningModule base for image classifiers, plus parameter / MAC / throughput counters.

Subclasses build ``self.network`` (images ``[B, C, H, W]`` → logits) and ``configure_optimizers``;
this base owns the loss, the top-1 metrics and the efficiency numbers every vision benchmark
reports, so they are computed the same way for every paper:

* ``test/top1`` — ``torchmetrics`` multiclass accuracy (synchronised across DDP ranks);
* ``test/params_m`` — parameters of ``self.network`` in millions;
* ``test/macs_m`` — multiply–accumulates of one image at ``image_size``, in millions, from
  ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2). It counts convolutions, matmuls and
  attention, not element-wise ops, norms or activations — the convention of the papers' fvcore /
  thop tables;
* ``test/throughput`` — inference images/s at batch 64 on the model's device, eval mode, after
  warm-up (a property of the machine as much as the model: compare within one leaderboard run).
"""

from __future__ import annotations

import time

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchmetrics.classification import MulticlassAccuracy


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


@torch.no_grad()
def count_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply–accumulates of one forward pass on a zero input of ``input_shape`` (eval mode)."""
    was_training = module.training
    module.eval()
    parameter = next(module.parameters())
    counter = FlopCounterMode(display=False)
    with counter:
        module(torch.zeros(input_shape, device=parameter.device, dtype=parameter.dtype))
    module.train(was_training)
    return counter.get_total_flops() // 2


@torch.no_grad()
def measure_throughput(module: nn.Module, input_shape: tuple[int, ...], *, warmup: int = 2, repeats: int = 5) -> float:
    """Images per second of eval-mode forward passes on a batch of ``input_shape``."""
    was_training = module.training
    module.eval()
    parameter = next(module.parameters())
    batch = torch.randn(input_shape, device=parameter.device, dtype=parameter.dtype)
    for _ in range(warmup):
        module(batch)
    if parameter.device.type == "cuda":
        torch.cuda.synchronize(parameter.device)
    started = time.perf_counter()
    for _ in range(repeats):
        module(batch)
    if parameter.device.type == "cuda":
        torch.cuda.synchronize(parameter.device)
    module.train(was_training)
    return input_shape[0] * repeats / (time.perf_counter() - started)


class ImageClassifier(L.LightningModule):
    """Cross-entropy classifier base; see the module docstring for the metrics it logs."""

    network: nn.Module

    def __init__(self, *, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 label_smoothing: float = 0.0, throughput_batch_size: int = 64) -> None:
        super().__init__()
        self.num_classes, self.in_channels, self.image_size = num_classes, in_channels, image_size
        self.label_smoothing = label_smoothing
        self.throughput_batch_size = throughput_batch_size
        self.val_top1 = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_top1 = MulticlassAccuracy(num_classes=num_classes, average="micro")

    def setup(self, stage: str) -> None:
        # Lightning runs the datamodule's setup first, so its shape attributes are final here.
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            return
        expected = {"num_classes": self.num_classes, "in_channels": self.in_channels, "image_size": self.image_size}
        found = {key: getattr(datamodule, key, value) for key, value in expected.items()}
        if found != expected:
            raise ValueError(f"{type(self).__name__} is built for {expected} but the data give {found}; "
                             "set the model's init_args to match the dataset")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        loss = self.classification_loss(self(images), labels)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        self.val_top1(self(images), labels)
        self.log("val/top1", self.val_top1, prog_bar=True)

    def test_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        self.test_top1(self(images), labels)
        self.log("test/top1", self.test_top1)

    def on_test_epoch_end(self) -> None:
        one_image = (1, self.in_channels, self.image_size, self.image_size)
        batch = (self.throughput_batch_size, self.in_channels, self.image_size, self.image_size)
        self.log("test/params_m", count_parameters(self.network) / 1e6, sync_dist=True)
        self.log("test/macs_m", count_macs(self.network, one_image) / 1e6, sync_dist=True)
        self.log("test/throughput", measure_throughput(self.network, batch), sync_dist=True)
