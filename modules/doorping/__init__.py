"""DOORPING and NAIVEATTACK: backdoor attacks against dataset distillation (DC back-end).

Paper: Y. Liu, Z. Li, M. Backes, Y. Shen, Y. Zhang, "Backdoor Attacks Against Dataset
Distillation", NDSS 2023 (arXiv 2301.01197). Official code: liuyugeng/baadd (``DC/``), summarised
in ``papers/doorping.md``; the maths is in ``modules/doorping/distill.py``.

Two LightningModules, used as a cached stage and a method:

* ``DoorpingDistillation`` (stage, ``per_seed``): dataset condensation by gradient matching from the
  datamodule's training split. One Lightning epoch is one DC iteration: a fresh random network,
  then ``outer_loop`` × [per class: 1 − cos gradient distance between a real batch of class c and
  the synthetic images of c; one SGD step on the images (lr_img 0.1, momentum 0.5); unless last:
  ``inner_loop`` epochs of SGD (lr_net 0.01, batch 256) of the network on the synthetic set, then,
  for ``attack="doorping"``, the trigger update and re-stamping of the poisoned images]. Attacks:
  ``clean``; ``naive`` (a white 2×2 patch stamped once on ``portion`` of the training images,
  relabelled to ``target``); ``doorping`` (random-colour patch re-optimised on each inner network,
  see ``optimise_trigger``); ``trigger_steps=0`` gives the "static random patch" control. The
  artifact (``distilled.pt``) holds the synthetic images, labels, the final trigger and its mask.
  ``backend="dm"`` is the EXTENSION the paper spec describes (benchmark ``doorping_dm``; the paper
  has no DM back-end): distribution matching (Zhao & Bilen, WACV'23) — each iteration one SGD step
  (official lr_img 1.0) on Σ_c ‖mean embed(real_c) − mean embed(syn_c)‖² through a fresh random
  network whose weights are never trained, then DOORPING's trigger update on that network. No DSA
  augmentation (official DM uses it; baadd's DC has none, and equal augmentation isolates the back-end).
* ``DistilledSetEvaluation`` (method): trains ``num_nets`` fresh networks on the distilled set only
  (SGD lr 0.01, momentum 0.9, wd 5e-4, lr ×0.1 after half the epochs, batch 256, no augmentation)
  and tests them: ``cta`` (clean test accuracy), ``asr`` (triggered test images classified as the
  target, all images as in the official code) and ``asr_nontarget`` (images whose true class is
  not the target), each the mean over the nets (``*_std``: their spread). The clean arm's ASR uses
  the white patch (the base rate of a backdoor nobody planted). It writes a PNG grid of the
  distilled images (one row per class) and the trigger into ``artifact_dir``.

Deviations from the official code (each deliberate):

1. Scale per profile (iterations, ipc, loops, width, nets, epochs, data sizes) lives in the spec.
2. ConvNet is baadd's ``DC/networks.py`` one (conv blocks, then FC 192 → ReLU → FC), so ``layer=-2``
   is the hidden FC 192: the neuron is a row of its weight and the loss is the official element-wise
   MSE on its post-ReLU output (the official hook sees the tensor after the in-place ReLU, pitfall 3).
   The paper spec's pitfall 4 (conv fancy indexing) belongs to a ConvNet without that FC; for a conv
   layer this code picks the output channel by Σ|W| and keeps its whole activation map
   (``trigger_spatial="none"``, element-wise MSE; "mean"/"max" reduce it instead).
3. One forward hook per update, removed afterwards (pitfall 2). The official δ is unclamped (pitfall
   8); ``trigger_clamp_pixels`` projects it into the pixel range after every Adam step (DM, both
   ``cpu`` profiles; off in DC ``full``); ``trigger_max`` logs |δ| on the patch.
4. Seeds: every random draw (poison indices, networks, real batches, trigger init, synthetic init)
   comes from a generator seeded by the run seed (official: networks reseeded from the clock).
5. Under DDP every rank runs the same distillation (same seed, no gradient sync: updates use
   ``torch.autograd.grad``) and rank 0's artifact is published; the evaluation nets train on the
   same synthetic batches on every rank (identical averaged gradients) and the test set is sharded
   with torchmetrics-style synced counters.
6. The evaluation decays lr with ``MultiStepLR`` (momentum kept; the official recreates SGD) and
   trains ``max_epochs`` epochs (official: Epoch + 1).
7. Poisoned images move to class 0's index list, as in the official dataset classes; real batches
   are drawn without replacement per class, capped at the class size.
8. ``init="real"`` (the DC code's option; the baadd default is N(0,1) noise, kept in DC ``full``)
   draws the synthetic set from the class pools, class 0's holding the poisoned images.
9. Trigger stop rule. Official: stop once the loss is < 0.5 (absolute), kept in ``full``. A narrow
   net's small FC activations often pass that before the first Adam step, so
   ``trigger_stop_rule="relative"`` (``cpu``) divides the loss by mean(a0²) first: the official rule
   for a unit-scale activation; a dead neuron (a0 = 0) still stops at once.
10. ``trigger_steps`` caps Adam steps per update (official 1000); the ``cpu`` profiles use 50.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric

from modules.doorping.distill import (build_network, dc_loops, distribution_match_distance, gradient_match_distance,
                                      optimise_trigger, patch_mask, pixel_range, random_patch_trigger, stamp_trigger,
                                      white_patch_trigger)

ATTACKS = ("clean", "naive", "doorping")
BACKENDS = ("dc", "dm")


class PerNetRate(Metric):
    """Per-network rate hits/total over the test set (summed across DDP ranks)."""

    full_state_update = False

    def __init__(self, num_nets: int) -> None:
        super().__init__()
        self.add_state("hits", default=torch.zeros(num_nets), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(()), dist_reduce_fx="sum")

    def update(self, hits: torch.Tensor, include: torch.Tensor | None = None) -> None:
        """``hits`` [nets, B] booleans; ``include`` [B] picks the images that count."""
        include = torch.ones(hits.shape[1], dtype=torch.bool, device=hits.device) if include is None else include
        self.hits += (hits & include).sum(1).float()
        self.total += include.sum().float()

    def compute(self) -> torch.Tensor:
        return self.hits / self.total.clamp_min(1)


class DoorpingDistillation(pl.LightningModule):
    """DC (or DM) distillation with an optional backdoor; one training epoch = one DC/DM iteration."""

    def __init__(self, attack: str = "doorping", ipc: int = 10, outer_loop: int | None = None,
                 inner_loop: int | None = None, batch_real: int = 256, batch_train: int = 256, lr_img: float = 0.1,
                 lr_net: float = 0.01, arch: str = "convnet", width: int = 128, depth: int = 3,
                 target: int = 0, portion: float = 0.01, patch_size: int = 2, trigger_steps: int = 1000,
                 trigger_lr: float = 0.08, trigger_alpha: float = 10.0, trigger_stop_loss: float = 0.5,
                 trigger_stop_rule: str = "absolute",
                 trigger_topk: int = 1, trigger_clamp: tuple[float, float] | None = None,
                 trigger_clamp_pixels: bool = False, trigger_spatial: str = "none", init: str = "noise",
                 backend: str = "dc") -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        if init not in ("noise", "real"):
            raise ValueError(f"init must be noise or real, not {init!r}")
        if attack not in ATTACKS:
            raise ValueError(f"attack must be one of {ATTACKS}, not {attack!r}")
        # DM has no outer/inner loops; DC's defaults come from its get_loops table.
        needs_loops = backend == "dc" and (outer_loop is None or inner_loop is None)
        default_outer, default_inner = dc_loops(ipc) if needs_loops else (0, 0)
        self.save_hyperparameters()
        self.outer_loop, self.inner_loop = outer_loop or default_outer, inner_loop or default_inner
        self.automatic_optimization = False
        self.generator = torch.Generator().manual_seed(torch.initial_seed() % 2**63)
        self.trigger_updates = 0
        self.trigger_log: list[dict[str, float]] = []

    # -- data, poisoning and initial state --------------------------------------------------------
    def setup(self, stage: str) -> None:
        if hasattr(self, "synthetic"):
            return
        datamodule = self.trainer.datamodule
        datamodule.setup("fit")
        images_u8, labels = datamodule.splits["train"].tensors
        self.num_classes, channels, size = datamodule.num_classes, images_u8.shape[1], images_u8.shape[-1]
        self.mean, self.std = datamodule.mean, datamodule.std
        self.real = datamodule.to_model_input(images_u8, train=False)
        self.real_labels = labels.clone()
        self.mask = patch_mask(channels, size, self.hparams.patch_size)
        self.poisoned = torch.empty(0, dtype=torch.long)
        if self.hparams.attack == "doorping":
            self.trigger = random_patch_trigger(self.mask, self.mean, self.std, generator=self.generator)
        else:  # the clean arm stores the white patch too: its ASR is the base rate
            self.trigger = white_patch_trigger(self.mask, self.mean, self.std)
        if self.hparams.attack != "clean":
            count = int(round(self.hparams.portion * len(labels)))
            self.poisoned = torch.randperm(len(labels), generator=self.generator)[:count]
            self.real_labels[self.poisoned] = self.hparams.target
            self._restamp()
        self.class_index = [torch.nonzero(self.real_labels == c).flatten() for c in range(self.num_classes)]
        ipc = self.hparams.ipc
        if self.hparams.init == "real":  # DC's init=real: ipc random real images of each class (poisoned ones count in class 0)
            chosen = [index[torch.randperm(len(index), generator=self.generator)[:ipc]] for index in self.class_index]
            start = self.real[torch.cat(chosen)].clone()
        else:
            start = torch.randn(self.num_classes * ipc, channels, size, size, generator=self.generator)
        self.synthetic = nn.Parameter(start)
        self.register_buffer("synthetic_labels", torch.arange(self.num_classes).repeat_interleave(ipc))

    def _restamp(self) -> None:
        self.real[self.poisoned] = stamp_trigger(self.real[self.poisoned], self.trigger, self.mask)

    def _network(self) -> nn.Module:
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = build_network(self.hparams.arch, channels=self.synthetic.shape[1], num_classes=self.num_classes,
                                    image_size=self.synthetic.shape[-1], width=self.hparams.width,
                                    depth=self.hparams.depth)
        return network.to(self.device)

    def on_fit_start(self) -> None:
        self.real, self.mask, self.trigger = self.real.to(self.device), self.mask.to(self.device), self.trigger.to(self.device)
        self.image_optimiser = torch.optim.SGD([self.synthetic], lr=self.hparams.lr_img, momentum=0.5)

    def configure_optimizers(self):
        return None  # the synthetic images are stepped by a plain SGD (see on_fit_start, deviation 5)

    # -- one DC / DM iteration ----------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> None:
        network = self._network()
        if self.hparams.backend == "dm":
            # DM: one embedding-matching step on this iteration's random (untrained) network, then
            # the DOORPING trigger update on that same network.
            distance = self.distribution_match_step(network)
            if self.hparams.attack == "doorping" and self.hparams.trigger_steps > 0:
                self.update_trigger(network)
            self.log("distill/match_distance", distance, on_epoch=True, on_step=False)
            return
        for outer in range(self.outer_loop):
            distance = self.match_step(network)
            if outer == self.outer_loop - 1:
                break
            self.train_network(network, self.inner_loop)
            if self.hparams.attack == "doorping" and self.hparams.trigger_steps > 0:
                self.update_trigger(network)
        self.log("distill/match_distance", distance, on_epoch=True, on_step=False)

    def real_batch(self, label: int) -> torch.Tensor:
        index = self.class_index[label]
        chosen = index[torch.randperm(len(index), generator=self.generator)[:self.hparams.batch_real]]
        return self.real[chosen.to(self.real.device)]

    def match_step(self, network: nn.Module) -> torch.Tensor:
        parameters = list(network.parameters())
        total = self.synthetic.new_zeros(())
        ipc = self.hparams.ipc
        for label in range(self.num_classes):
            real = self.real_batch(label)
            target = torch.full((len(real),), label, device=real.device)
            grads_real = [g.detach() for g in torch.autograd.grad(F.cross_entropy(network(real), target), parameters)]
            syn = self.synthetic[label * ipc:(label + 1) * ipc]
            grads_syn = torch.autograd.grad(F.cross_entropy(network(syn), self.synthetic_labels[label * ipc:(label + 1) * ipc]),
                                            parameters, create_graph=True)
            total = total + gradient_match_distance(grads_real, list(grads_syn))
        (self.synthetic.grad,) = torch.autograd.grad(total, [self.synthetic])
        self.image_optimiser.step()
        return total.detach()

    def distribution_match_step(self, network: nn.Module) -> torch.Tensor:
        """DM: Σ_c ‖mean embed(real_c) − mean embed(syn_c)‖², one SGD step on the images; the
        network's weights stay fixed (no gradient is taken for them)."""
        network.requires_grad_(False)
        total = self.synthetic.new_zeros(())
        ipc = self.hparams.ipc
        for label in range(self.num_classes):
            with torch.no_grad():
                embed_real = network.embed(self.real_batch(label))
            embed_syn = network.embed(self.synthetic[label * ipc:(label + 1) * ipc])
            total = total + distribution_match_distance(embed_real, embed_syn)
        network.requires_grad_(True)
        (self.synthetic.grad,) = torch.autograd.grad(total, [self.synthetic])
        self.image_optimiser.step()
        return total.detach()

    def train_network(self, network: nn.Module, epochs: int) -> None:
        optimiser = torch.optim.SGD(network.parameters(), lr=self.hparams.lr_net)
        images, labels = self.synthetic.detach(), self.synthetic_labels
        for _ in range(epochs):
            order = torch.randperm(len(images), generator=self.generator).to(images.device)
            for start in range(0, len(images), self.hparams.batch_train):
                index = order[start:start + self.hparams.batch_train]
                loss = F.cross_entropy(network(images[index]), labels[index])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()

    def trigger_bounds(self) -> tuple[torch.Tensor, torch.Tensor] | tuple[float, float] | None:
        """Where δ is projected after each Adam step: the valid pixel range (``trigger_clamp_pixels``),
        a fixed (low, high), or nowhere (the official code, pitfall 8)."""
        if self.hparams.trigger_clamp_pixels:
            return tuple(bound.to(self.trigger.device) for bound in pixel_range(self.mean, self.std))
        return self.hparams.trigger_clamp

    def update_trigger(self, network: nn.Module) -> None:
        hp = self.hparams
        self.trigger, info = optimise_trigger(network, self.trigger, self.mask, steps=hp.trigger_steps, lr=hp.trigger_lr,
                                              alpha=hp.trigger_alpha, stop_loss=hp.trigger_stop_loss,
                                              stop_rule=hp.trigger_stop_rule, topk=hp.trigger_topk,
                                              clamp=self.trigger_bounds(), spatial=hp.trigger_spatial)
        self._restamp()
        self.trigger_updates += 1
        self.trigger_log.append(info)

    # -- artifact ----------------------------------------------------------------------------------
    def save_stage_artifact(self, folder: str | Path) -> Path:
        path = Path(folder) / "distilled.pt"
        torch.save({"images": self.synthetic.detach().cpu(), "labels": self.synthetic_labels.cpu(),
                    "trigger": self.trigger.cpu(), "mask": self.mask.cpu(), "target": self.hparams.target,
                    "attack": self.hparams.attack, "mean": self.mean, "std": self.std,
                    "num_classes": self.num_classes, "poisoned": len(self.poisoned),
                    "trigger_updates": self.trigger_updates, "trigger_log": self.trigger_log,
                    "trigger_adam_steps": int(sum(info["steps"] for info in self.trigger_log))}, path)
        return path


class DistilledSetEvaluation(pl.LightningModule):
    """Train ``num_nets`` fresh networks on a distilled set; test CTA and ASR (one epoch per epoch
    over the synthetic set, split into ``batch_size`` minibatches by ``limit_train_batches``)."""

    def __init__(self, distilled: str, num_nets: int = 10, arch: str = "convnet", width: int = 128, depth: int = 3,
                 lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4, batch_size: int = 256) -> None:
        super().__init__()
        self.save_hyperparameters()
        artifact = torch.load(distilled, map_location="cpu", weights_only=False)
        self.register_buffer("images", artifact["images"].float())
        self.register_buffer("labels", artifact["labels"].long())
        self.register_buffer("trigger", artifact["trigger"].float())
        self.register_buffer("mask", artifact["mask"].float())
        self.target, self.attack = int(artifact["target"]), artifact["attack"]
        self.mean, self.std = artifact["mean"], artifact["std"]
        self.trigger_updates = int(artifact["trigger_updates"])
        self.trigger_adam_steps = int(artifact.get("trigger_adam_steps", 0))
        channels, size = self.images.shape[1], self.images.shape[-1]
        self.nets = nn.ModuleList(build_network(arch, channels=channels, num_classes=int(artifact["num_classes"]),
                                                image_size=size, width=width, depth=depth) for _ in range(num_nets))
        self.generator = torch.Generator().manual_seed(torch.initial_seed() % 2**63)
        self.cta, self.asr, self.asr_nontarget = (PerNetRate(num_nets) for _ in range(3))
        self.order = torch.arange(len(self.labels))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of every net: [nets, B, classes]."""
        return torch.stack([net(images) for net in self.nets])

    def on_train_epoch_start(self) -> None:
        self.order = torch.randperm(len(self.labels), generator=self.generator)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        # The real batch is ignored: the victim sees only the distilled set. Summing the nets' losses
        # gives each net its own gradient (their parameters are disjoint).
        index = self.order[batch_idx * self.hparams.batch_size:(batch_idx + 1) * self.hparams.batch_size].to(self.device)
        logits = self(self.images[index])
        loss = F.cross_entropy(logits.flatten(0, 1), self.labels[index].repeat(len(self.nets)), reduction="sum")
        self.log("train/loss", loss / (len(index) * len(self.nets)), on_step=False, on_epoch=True)
        return loss / len(index)

    def configure_optimizers(self):
        optimiser = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum,
                                    weight_decay=self.hparams.weight_decay)
        milestone = max(1, (self.trainer.max_epochs or 2) // 2)
        return {"optimizer": optimiser, "lr_scheduler": torch.optim.lr_scheduler.MultiStepLR(optimiser, [milestone], 0.1)}

    def on_fit_start(self) -> None:
        steps = -(-len(self.labels) // self.hparams.batch_size)
        if self.trainer.limit_train_batches != steps:
            raise ValueError(f"set trainer.limit_train_batches={steps}: one epoch over {len(self.labels)} distilled "
                             f"images in batches of {self.hparams.batch_size}")
        if self.global_rank == 0 and getattr(self, "artifact_dir", None) is not None:
            self.save_grid(Path(self.artifact_dir))

    def save_grid(self, folder: Path) -> None:
        from torchvision.utils import save_image

        folder.mkdir(parents=True, exist_ok=True)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        pixels = (self.images.cpu() * std + mean).clamp(0, 1)
        ipc = int((self.labels == self.labels[0]).sum())
        save_image(pixels, folder / f"distilled_{self.attack}.png", nrow=ipc, padding=1)
        trigger = (stamp_trigger(torch.zeros_like(self.images[:1]).cpu() - mean / std, self.trigger.cpu(), self.mask.cpu())
                   * std + mean).clamp(0, 1)
        save_image(F.interpolate(trigger, scale_factor=4, mode="nearest"), folder / f"trigger_{self.attack}.png")

    def test_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        correct = self(images).argmax(-1) == labels
        hits = self(stamp_trigger(images, self.trigger, self.mask)).argmax(-1) == self.target
        self.cta.update(correct)
        self.asr.update(hits)
        self.asr_nontarget.update(hits, labels != self.target)

    def on_test_epoch_end(self) -> None:
        for name, metric in (("cta", self.cta), ("asr", self.asr), ("asr_nontarget", self.asr_nontarget)):
            per_net = metric.compute().reshape(-1)  # torchmetrics squeezes a 1-net result to 0-d
            self.log(f"test/{name}", per_net.mean())
            self.log(f"test/{name}_std", per_net.std() if len(per_net) > 1 else torch.zeros(()))
            metric.reset()
        patch = self.trigger[self.mask.bool()]
        self.log("test/trigger_max", patch.abs().max())
        self.log("test/trigger_updates", float(self.trigger_updates))
        self.log("test/trigger_adam_steps", float(self.trigger_adam_steps))
