"""Maths of DOORPING / NAIVEATTACK on dataset condensation (DC): networks, triggers, gradient matching.

Pure functions and small ``nn.Module`` s, no trainer logic; the LightningModules that use them live
in ``modules/doorping/__init__.py`` (whose docstring cites the paper and lists the deviations). Everything
here follows ``liuyugeng/baadd`` ``DC/utils.py`` as summarised in ``papers/doorping.md``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# DC's get_loops: images per class -> (outer_loop, inner_loop).
DC_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def dc_loops(ipc: int) -> tuple[int, int]:
    """The official (outer_loop, inner_loop) for ``ipc``; raises for values DC has no entry for."""
    if ipc not in DC_LOOPS:
        raise ValueError(f"DC defines loops for ipc in {sorted(DC_LOOPS)}, not {ipc}; pass outer_loop/inner_loop")
    return DC_LOOPS[ipc]


# ---------------------------------------------------------------------------------------------
# Networks (DC's ConvNet without normalisation, and AlexNet with LRN)
# ---------------------------------------------------------------------------------------------
class ConvNet(nn.Module):
    """``depth`` × [conv3×3(width) → ReLU → avgpool 2] → FC 192 → ReLU → FC classes: baadd's
    ``DC/networks.py`` ConvNet (no norm layer by default, and a hidden FC 192, so ``layer=-2`` is that
    FC, not the last conv). The first conv pads by 3 for 1-channel inputs, as DC does for (Fashion-)MNIST."""

    def __init__(self, channels: int, num_classes: int, image_size: int = 32, width: int = 128, depth: int = 3,
                 hidden: int = 192) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels, size = channels, image_size
        for index in range(depth):
            padding = 3 if channels == 1 and index == 0 else 1
            layers += [nn.Conv2d(in_channels, width, kernel_size=3, padding=padding), nn.ReLU(), nn.AvgPool2d(2)]
            in_channels, size = width, (size + 2 * padding - 2) // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(width * size * size, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The flattened conv features (baadd's / DM's ``net.embed``)."""
        return self.features(images).flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(images))


class AlexNet(nn.Module):
    """DC/DD ``AlexNet`` for 32×32 inputs: two conv5×5(64) blocks with LRN, then FC 384 → 192 → classes."""

    def __init__(self, channels: int, num_classes: int, image_size: int = 32) -> None:
        super().__init__()
        if image_size != 32:
            raise ValueError("AlexNet expects 32x32 inputs (resize the data to 32)")
        norm = dict(size=4, alpha=0.001 / 9.0, beta=0.75, k=1.0)
        self.features = nn.Sequential(
            nn.Conv2d(channels, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1), nn.LocalResponseNorm(**norm),
            nn.Conv2d(64, 64, 5, padding=2), nn.ReLU(), nn.LocalResponseNorm(**norm), nn.MaxPool2d(3, 2, padding=1))
        self.classifier = nn.Sequential(nn.Linear(64 * 8 * 8, 384), nn.ReLU(), nn.Linear(384, 192), nn.ReLU(),
                                        nn.Linear(192, num_classes))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The input of the last linear layer (DM's AlexNet ``embed``: features → FC 384 → FC 192)."""
        return self.classifier[:-1](self.features(images).flatten(1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images).flatten(1))


def build_network(arch: str, *, channels: int, num_classes: int, image_size: int, width: int = 128,
                  depth: int = 3) -> nn.Module:
    if arch == "convnet":
        return ConvNet(channels, num_classes, image_size, width=width, depth=depth)
    if arch == "alexnet":
        return AlexNet(channels, num_classes, image_size)
    raise ValueError(f"unknown arch {arch!r}; choose convnet or alexnet")


# ---------------------------------------------------------------------------------------------
# Gradient matching (DC, dis_metric="ours")
# ---------------------------------------------------------------------------------------------
def layer_gradient_distance(grad_real: torch.Tensor, grad_syn: torch.Tensor) -> torch.Tensor:
    """Σ over output rows of (1 − cos(g_real,row, g_syn,row)); conv kernels flattened per output
    channel; 1-D parameters (biases) contribute 0. The 1e-6 in the denominator is DC's."""
    if grad_real.dim() == 1:
        return grad_real.new_zeros(())
    real, syn = grad_real.flatten(1), grad_syn.flatten(1)
    cosine = (real * syn).sum(-1) / (real.norm(dim=-1) * syn.norm(dim=-1) + 1e-6)
    return (1 - cosine).sum()


def gradient_match_distance(grads_real: list[torch.Tensor], grads_syn: list[torch.Tensor]) -> torch.Tensor:
    return sum(layer_gradient_distance(real, syn) for real, syn in zip(grads_real, grads_syn))


# ---------------------------------------------------------------------------------------------
# Distribution matching (DM, Zhao & Bilen WACV'23; the extension back-end, not in the paper)
# ---------------------------------------------------------------------------------------------
def distribution_match_distance(embed_real: torch.Tensor, embed_syn: torch.Tensor) -> torch.Tensor:
    """‖mean embedding of the real batch − mean embedding of the synthetic images‖² for one class
    (DM's per-class term; the loss is its sum over classes)."""
    return ((embed_real.mean(0) - embed_syn.mean(0)) ** 2).sum()


# ---------------------------------------------------------------------------------------------
# Triggers
# ---------------------------------------------------------------------------------------------
def patch_mask(channels: int, image_size: int, size: int = 2) -> torch.Tensor:
    """M [1, C, H, W]: 1 on rows/cols [W−s−1, W−1) (one pixel in from the bottom-right corner)."""
    mask = torch.zeros(1, channels, image_size, image_size)
    mask[..., image_size - size - 1:image_size - 1, image_size - size - 1:image_size - 1] = 1
    return mask


def normalised(pixels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8-scale values [.., C, H, W] → ToTensor + Normalize space."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (pixels.float() / 255 - mean_t) / std_t


def white_patch_trigger(mask: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """NAIVEATTACK's trigger: patch pixels 255 before normalisation (background as a black image)."""
    return normalised(mask[0] * 255, mean, std).unsqueeze(0)


def random_patch_trigger(mask: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """DOORPING's initial trigger (DC): random ints in [1, 255] on the patch of a zero image, normalised."""
    values = torch.randint(1, 256, mask.shape[1:], generator=generator).float() * mask[0]
    return normalised(values, mean, std).unsqueeze(0)


def stamp_trigger(images: torch.Tensor, trigger: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x ← x ⊙ (1 − M) + δ ⊙ M (all in normalised space)."""
    mask = mask.to(images)
    return images * (1 - mask) + trigger.to(images) * mask


def second_to_last_weighted(network: nn.Module) -> nn.Module:
    """The module owning the 2nd weight met walking the parameters from the end, biases skipped
    (baadd ``layer=-2``): the hidden FC 192 of ConvNet, the FC 384→192 of AlexNet."""
    weighted = [module for module in network.modules()
                if isinstance(getattr(module, "weight", None), torch.Tensor) and module.weight.dim() >= 2]
    if len(weighted) < 2:
        raise ValueError("the network needs at least two weighted layers")
    return weighted[-2]


def select_neurons(weight: torch.Tensor, topk: int = 1) -> torch.Tensor:
    """Indices of the ``topk`` output units with the largest Σ|W| over all incoming dimensions
    (rows of a linear weight; output channels of a conv kernel, the variant of pitfall 4)."""
    return weight.detach().abs().flatten(1).sum(1).topk(topk).indices


def neuron_activation(output: torch.Tensor, neurons: torch.Tensor, spatial: str = "none") -> torch.Tensor:
    """Post-ReLU activation of the chosen units (the official hook sees the tensor after the in-place
    ReLU). A conv channel keeps its whole activation map with ``spatial="none"`` (the official loss is
    an element-wise MSE over the map), or is reduced over space by "mean" / "max".
    Returns [B, topk] for a linear layer, [B, topk, H, W] or [B, topk] for a conv layer."""
    if spatial not in ("none", "mean", "max"):
        raise ValueError(f"spatial must be none, mean or max, not {spatial!r}")
    selected = F.relu(output)[:, neurons]
    if selected.dim() == 2 or spatial == "none":
        return selected
    return selected.flatten(2).amax(-1) if spatial == "max" else selected.flatten(2).mean(-1)


def pixel_range(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel bounds [1, C, 1, 1] of valid pixels (0..1 before Normalize) in normalised space."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return -mean_t / std_t, (1 - mean_t) / std_t


def trigger_loss_scale(goal: torch.Tensor, alpha: float, stop_rule: str) -> float:
    """What the trigger loss is divided by before the stop test: 1 for the official absolute rule;
    for ``"relative"`` the mean squared starting activation mean(a0²), so the test reads the same
    for any activation scale (equal to the official one when mean(a0²) = 1). A dead start (a0 = 0)
    gives 0 and, as in the official code, stops the update at once."""
    if stop_rule == "absolute":
        return 1.0
    if stop_rule == "relative":
        return float((goal / alpha).pow(2).mean())
    raise ValueError(f"stop_rule must be absolute or relative, not {stop_rule!r}")


def optimise_trigger(network: nn.Module, trigger: torch.Tensor, mask: torch.Tensor, *, steps: int = 1000,
                     lr: float = 0.08, alpha: float = 10.0, stop_loss: float = 0.5, stop_rule: str = "absolute",
                     topk: int = 1,
                     clamp: tuple[torch.Tensor | float, torch.Tensor | float] | None = None,
                     spatial: str = "none") -> tuple[torch.Tensor, dict[str, float]]:
    """DOORPING's trigger update on the current network: Adam(lr, betas (0.9, 0.99)) on δ with
    gradients masked to the patch, loss MSE(a_k*(δ), α·a₀) for the trigger image alone (element-wise
    over the chosen channel's activation map by default, as the official hook output is), stop once
    the loss (divided by ``trigger_loss_scale``) is below ``stop_loss``. ``clamp`` = (low, high), scalars or per-channel [1, C, 1, 1]
    tensors, projects δ back after every step. One forward hook, removed afterwards (pitfall 2).
    Returns the new trigger and {steps, a0, activation, loss} (a0 / activation: means over the map)."""
    layer = second_to_last_weighted(network)
    neurons = select_neurons(layer.weight, topk)
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda module, inputs, output: captured.append(output))
    was_training = network.training
    network.eval()
    mask = mask.to(trigger)
    delta = trigger.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([delta], lr=lr, betas=(0.9, 0.99))
    requires_grad = [p.requires_grad for p in network.parameters()]
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    try:
        goal, loss, taken, activation = None, torch.zeros(()), 0, torch.zeros(())
        for taken in range(steps + 1):
            captured.clear()
            network(delta)
            activation = neuron_activation(captured[-1], neurons, spatial)
            if goal is None:
                goal = alpha * activation.detach()
                scale = trigger_loss_scale(goal, alpha, stop_rule)
            loss = F.mse_loss(activation, goal)
            if scale == 0 or loss.item() < stop_loss * scale or taken == steps:
                break
            optimiser.zero_grad()
            loss.backward()
            delta.grad.mul_(mask)
            optimiser.step()
            if clamp is not None:
                with torch.no_grad():
                    low, high = (torch.as_tensor(bound, dtype=delta.dtype, device=delta.device) for bound in clamp)
                    delta.copy_(torch.maximum(torch.minimum(delta, high), low))
    finally:
        handle.remove()
        network.train(was_training)
        for parameter, flag in zip(network.parameters(), requires_grad):
            parameter.requires_grad_(flag)
    info = {"steps": float(taken), "a0": float(goal.mean()) / alpha, "activation": float(activation.detach().mean()),
            "loss": float(loss.detach())}
    return delta.detach(), info


def attack_hits(logits: torch.Tensor, labels: torch.Tensor, target: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted == target, true label != target) per image, the two parts of both ASR variants."""
    return logits.argmax(-1) == target, labels != target
