"""LRPET: Low-Rank Projection with Energy Transfer, and the baselines it is compared with.

Paper: K. Guo, Z. Lin, C. Chen, X. Xing, F. Liu, X. Xu, "Compact Model Training by Low-Rank
Projection with Energy Transfer", IEEE TNNLS 2024 (arXiv:2204.05566). Official code: BZQLin/LRPET
(``ImageClassification/cifar10/cifar10_train.py``), summarised in ``papers/lrpet.md``; the maths
(rank rule, energy transfer, BN rectification, factorisation) is in ``modules/lrpet/lowrank.py``.

Methods (all CIFAR ResNets from ``modules/lrpet/resnet_cifar.py``, SGD momentum 0.9, lr 0.1,
weight decay 1e-4, lr x0.1 at 50% and 75% of the epochs, cross-entropy):

* ``LRPET`` — the dense-parameterised net trained with plain SGD; every ``projection_interval``
  optimiser steps (``None``: after every epoch, the official CIFAR setting) each conv weight is
  replaced by its rank-r projection (energy transfer, BN rectification). The last projection comes
  after the last step; then every conv is factorised into Conv(C->r, kxk) + Conv(r->N, 1x1) and the
  test (top-1, params, MACs, throughput) is of that factorised network. ``test/top1_projected`` is
  the top-1 of the projected, not yet factorised, network (the two must agree: a check of the
  factorisation) and ``test/replica_divergence`` the largest weight difference between DDP replicas
(0.0 when the projection is rank-consistent). Ablations: ``transfer_energy=False`` (LRP, alpha = 1), ``bn_rectification=False``.
* ``CifarResNetClassifier`` — the dense baseline; also the dense stage that the two-stage baselines
  share (``save_stage_artifact`` writes the network, the harness caches it per config and seed).
* ``SVDTruncation`` — loads a dense stage artifact and tests it, dense (``prune_ratio=None``) or
  truncated: every conv factorised at rank r by truncated SVD of its raw weight (no training).
* ``SVDTruncationFineTune`` — the same truncation, then the factorised net is fine-tuned (lr 0.01).
* ``FactorisedFromScratch`` — the factorised architecture at the same ranks, trained from scratch.

Under DDP the projection must be the same on every rank: DDP keeps parameters equal, but each rank's
BN running statistics follow its own batches (DDP only copies rank 0's buffers at the next forward),
so BN rectification would scale each rank's weights differently and the replicas would drift apart
for good. Before projecting, every rank takes rank 0's BN statistics (the ones the next forward
would use anyway); after projecting, rank 0's projected weights are broadcast, so that even an SVD
that differs in the last bit between devices cannot split the replicas.

Deviations from the official code (each deliberate):

1. Reported accuracy is the factorised net's after the final projection; the official script tests
   full-rank weights before each projection and keeps the best epoch chosen on the test set
   (paper-spec pitfall 1). Nothing is selected with test labels here.
2. A layer whose largest singular value is < 1e-4 is left as it is at projection and factorised at
   rank r like every other layer (official: replaced by an identity ``nn.Sequential()``, pitfall 2).
3. The rank rule is clamped to r >= 1 (official int(m - m*p) can give 0 for tiny layers; it never
   does for the ResNets here). Projection timing is in optimiser steps (``global_step % interval``),
   with one extra projection after the last step when the last step was not a projection step.
4. Data normalisation uses the datamodule's CIFAR-10 std (0.2470, 0.2435, 0.2616) instead of the
   official (0.2023, 0.1994, 0.2010) (a per-channel input scale that BN absorbs).
5. Factorised-from-scratch initialisation (not in the official code): Kaiming-normal for the kxk
   conv, Kaiming-normal with the linear gain for the 1x1 conv.
6. Run seeds come from the harness (``seed_everything``) instead of the fixed seed 1.
7. The lr steps (x0.1) at 50% and 75% of the optimiser steps rather than at epochs 200 and 300:
   the same thing for the 400-epoch recipe, and the same shape for a profile of a few epochs.
8. SVD-truncate + fine-tune (not in the official code; paper-spec baseline 2): dense for E - E_ft
   epochs, plain truncated SVD of the raw weights, fine-tune at lr 0.01 with the same step decays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.distributed as dist
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from modules.common.classification import ImageClassifier
from modules.lrpet.resnet_cifar import resnet_cifar
from modules.lrpet.lowrank import conv_ranks, factorise_network, factorised_architecture, project_network

STAGE_FILE = "dense_network.pt"


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def broadcast_from_rank_zero(tensors: Sequence[torch.Tensor]) -> None:
    """Overwrite ``tensors`` on every rank with rank 0's values (a no-op outside DDP)."""
    if _distributed():
        for tensor in tensors:
            dist.broadcast(tensor, src=0)


def batchnorm_statistics(network: nn.Module) -> list[torch.Tensor]:
    return [buffer for module in network.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)
            for buffer in (module.running_mean, module.running_var)]


def conv_weights(network: nn.Module) -> list[torch.Tensor]:
    return [module.weight for module in network.modules() if isinstance(module, nn.Conv2d)]


def project_network_on_all_ranks(network: nn.Module, **projection: object) -> None:
    """``project_network`` with the same result on every DDP rank (see the module docstring)."""
    broadcast_from_rank_zero(batchnorm_statistics(network))
    project_network(network, **projection)
    broadcast_from_rank_zero([weight.data for weight in conv_weights(network)])


@torch.no_grad()
def replica_divergence(network: nn.Module) -> float:
    """Largest |x - x_rank0| over every parameter and buffer on any rank (0.0 outside DDP)."""
    if not _distributed():
        return 0.0
    largest = torch.zeros((), device=next(network.parameters()).device)
    for tensor in list(network.parameters()) + list(network.buffers()):
        reference = tensor.detach().clone()
        dist.broadcast(reference, src=0)
        largest = torch.maximum(largest, (tensor.detach() - reference).abs().max().float())
    dist.all_reduce(largest, op=dist.ReduceOp.MAX)
    return float(largest)


class CifarResNetClassifier(ImageClassifier):
    """A dense CIFAR ResNet trained with the official SGD + step schedule (the dense baseline)."""

    def __init__(self, *, depth: int = 20, widths: Sequence[int] = (16, 32, 64), num_classes: int = 10,
                 in_channels: int = 3, image_size: int = 32, lr: float = 0.1, momentum: float = 0.9,
                 weight_decay: float = 1e-4, lr_milestones: Sequence[float] = (0.5, 0.75), lr_decay: float = 0.1,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                         label_smoothing=label_smoothing)
        self.save_hyperparameters()
        self.network = resnet_cifar(depth=depth, widths=tuple(widths), num_classes=num_classes, in_channels=in_channels)

    def use_channels_last(self) -> None:
        """Store every conv weight channels-last (NHWC); ``forward`` feeds NHWC images.

        Why: on CPU (oneDNN) the ResNet-20 training step is ~70% convolution, and NHWC convolutions
        and BNs took ~20-25% less time per step than NCHW in a profiled step. The logical shapes and
        values are unchanged (the projection reshapes by logical order), only the memory layout.
        """
        self.network.to(memory_format=torch.channels_last)

    def configure_model(self) -> None:
        self.use_channels_last()  # before the strategy wraps the model (DDP's buckets see NHWC grads)

    def on_test_start(self) -> None:
        self.use_channels_last()  # also a network built or swapped after fit (factorised, loaded)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images.contiguous(memory_format=torch.channels_last))

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.SGD(self.network.parameters(), lr=hp.lr, momentum=hp.momentum,
                                    weight_decay=hp.weight_decay)
        # Milestones are fractions of the run's optimiser steps, so a scaled-down profile keeps the
        # schedule's shape (official: epochs 200 and 300 of 400 = steps at 0.5 and 0.75 of the run).
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        milestones = sorted({max(1, round(fraction * total_steps)) for fraction in hp.lr_milestones})
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=hp.lr_decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def save_stage_artifact(self, folder: str | Path) -> Path:
        """The trained dense network (architecture + weights) for the truncation baselines."""
        path = Path(folder) / STAGE_FILE
        if self.global_rank == 0:  # every rank builds the stage; one writes the shared file
            torch.save({"depth": self.hparams.depth, "widths": list(self.hparams.widths),
                        "state_dict": self.network.state_dict()}, path)
        return path


class LRPET(CifarResNetClassifier):
    """Dense-parameterised training with periodic low-rank projection, factorised at the end."""

    def __init__(self, *, prune_ratio: float = 0.7, projection_interval: int | None = None,
                 transfer_energy: bool = True, bn_rectification: bool = True, residual_factor: float = 0.0,
                 **base: object) -> None:
        super().__init__(**base)
        self.save_hyperparameters()
        self.ranks = conv_ranks(self.network, prune_ratio=prune_ratio)
        self.last_projection_step = -1
        self.projections_done = 0
        self.factorised = False
        self.projected_network: tuple[nn.Module, ...] = ()  # a tuple so it is not a registered submodule
        self.test_top1_projected = MulticlassAccuracy(num_classes=self.num_classes, average="micro")

    def project(self) -> None:
        hp = self.hparams
        project_network_on_all_ranks(self.network, ranks=self.ranks, transfer_energy=hp.transfer_energy,
                                     bn_rectification=hp.bn_rectification, residual_factor=hp.residual_factor)
        self.last_projection_step = self.global_step
        self.projections_done += 1

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        interval = self.hparams.projection_interval
        if interval and self.global_step % interval == 0:
            self.project()

    def on_train_epoch_end(self) -> None:
        if not self.hparams.projection_interval:
            self.project()

    def on_train_end(self) -> None:
        if self.last_projection_step != self.global_step:
            self.project()  # the last operation before factorisation must be a projection
        self.factorise()

    def factorise(self) -> None:
        """Swap the projected dense net for its exact factorisation (what is tested and counted)."""
        if self.factorised:
            return
        self.projected_network = (self.network,)
        self.network = factorise_network(self.network, ranks=self.ranks)
        self.factorised = True

    def on_test_start(self) -> None:
        if not self.factorised:  # tested without fit (e.g. from a checkpoint): project, then factorise
            self.project()
            self.factorise()
        super().on_test_start()
        # Not a registered submodule, so Lightning's eval()/to() do not reach it.
        self.projected_network[0].eval().to(self.device)

    def test_step(self, batch, batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        images, labels = batch
        projected_logits = self.projected_network[0](images.contiguous(memory_format=torch.channels_last))
        self.test_top1_projected(projected_logits, labels)
        self.log("test/top1_projected", self.test_top1_projected)

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self.log("test/projections", float(self.projections_done))
        # The same on every rank by construction; 0.0 proves the replicas tested one network.
        self.log("test/replica_divergence", replica_divergence(self.network))


class FactorisedFromScratch(CifarResNetClassifier):
    """The factorised architecture (every conv a rank-r pair, ranks as LRPET's) trained from scratch."""

    def __init__(self, *, prune_ratio: float = 0.7, **base: object) -> None:
        super().__init__(**base)
        self.save_hyperparameters()
        self.network = factorised_architecture(self.network, ranks=conv_ranks(self.network, prune_ratio=prune_ratio))


class SVDTruncation(CifarResNetClassifier):
    """A trained dense net (a stage artifact), tested as it is or SVD-truncated to rank r (no training)."""

    requires_fit = False

    def __init__(self, *, dense_checkpoint: str | None = None, prune_ratio: float | None = 0.7, **base: object) -> None:
        super().__init__(**base)
        self.save_hyperparameters()
        if dense_checkpoint is None:
            raise ValueError(f"{type(self).__name__} needs dense_checkpoint: declare the dense stage "
                             "(stages: [{name: dense, ..., pass_as: dense_checkpoint}]) in the spec")
        artifact = torch.load(dense_checkpoint, map_location="cpu", weights_only=True)
        built = {"depth": self.hparams.depth, "widths": list(self.hparams.widths)}
        if {key: artifact[key] for key in built} != built:
            raise ValueError(f"dense checkpoint {dense_checkpoint} holds {artifact['depth']}/{artifact['widths']}, "
                             f"this method is built for {built}; give the stage the same depth and widths")
        self.network.load_state_dict(artifact["state_dict"])
        if prune_ratio is not None:
            self.network = factorise_network(self.network, ranks=conv_ranks(self.network, prune_ratio=prune_ratio))


class SVDTruncationFineTune(SVDTruncation):
    """SVD truncation of the dense stage, then fine-tuning of the factorised net (lr 0.01 by default)."""

    requires_fit = True

    def __init__(self, *, lr: float = 0.01, **truncation: object) -> None:
        super().__init__(lr=lr, **truncation)
