"""Low-rank maths of LRPET: rank rule, projection with energy transfer and BN rectification, and
factorisation of every Conv2d into two convolutions (``../shared/papers/lrpet.md`` section 1).

A conv weight W [N, C, k, k] is seen as the matrix M = W.view(N, C*k*k) (rows = output filters).

* ``rank_for_ratio``: r = int(m - m*p), m = min(N, C*k*k) (official ``--prun_goal`` rule).
* ``energy_transfer``: sigma'_i = sqrt(alpha)*sigma_i for i <= r, rho*sigma_i for i > r, with
  alpha = (sum sigma^2 - rho^2 sum_{i>r} sigma^2) / sum_{i<=r} sigma^2; rho = 0 keeps ||sigma||_2.
* ``project_conv_weight``: with BN rectification the SVD is taken of diag(a)*M, a = gamma/sqrt(var+eps)
  (the BN scale that follows the conv), and the result is mapped back with the regularised inverse
  diag(a/(a^2+1e-5)); without it, of M directly. Layers with sigma_1 < 1e-4 are left untouched.
* ``factorise_network``: SVD of the raw M -> Conv2d(C->r, k x k, original stride/padding, no bias,
  weights diag(sqrt(sigma)) V^T) followed by Conv2d(r->N, 1x1, weights U diag(sqrt(sigma)), the
  original bias). After a projection M has rank <= r, so the factorised net computes the projected
  net's function exactly (up to float rounding).

Only ``torch.linalg.svd(full_matrices=False)`` is used (the official numpy fallback transposes the
matrix and swaps U and V; paper-spec pitfall 3).
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

SKIP_BELOW_SIGMA = 1e-4  # official: a layer whose largest singular value is below this is not projected
BN_INVERSE_REGULARISER = 1e-5  # official regularised inverse of the BN scale: a / (a^2 + 1e-5)


def rank_for_ratio(*, rows: int, columns: int, prune_ratio: float) -> int:
    """Official uniform rank rule r = int(m - m*p), m = min(rows, columns); at least 1."""
    smaller = min(rows, columns)
    return max(1, int(smaller - smaller * prune_ratio))


def conv_ranks(network: nn.Module, *, prune_ratio: float) -> dict[str, int]:
    """Rank of every Conv2d (by module name) under the uniform rule."""
    return {name: rank_for_ratio(rows=module.out_channels, columns=module.weight[0].numel(), prune_ratio=prune_ratio)
            for name, module in network.named_modules() if isinstance(module, nn.Conv2d)}


def energy_transfer(singular_values: torch.Tensor, *, rank: int, residual_factor: float = 0.0) -> torch.Tensor:
    """Singular values after truncation to ``rank`` with the energy of the tail handed to the head.

    Every kept value is scaled by the same sqrt(alpha) (the official code's form), the tail is
    scaled by ``residual_factor`` (rho; 0 by default), and the total energy sum(sigma^2) is kept.
    """
    energy = singular_values.pow(2)
    head_energy = energy[:rank].sum()
    alpha = (energy.sum() - residual_factor ** 2 * energy[rank:].sum()) / head_energy
    return torch.cat([alpha.sqrt() * singular_values[:rank], residual_factor * singular_values[rank:]])


def plain_truncation(singular_values: torch.Tensor, *, rank: int, residual_factor: float = 0.0) -> torch.Tensor:
    """LRP without energy transfer (alpha = 1): keep the head, scale the tail by rho."""
    return torch.cat([singular_values[:rank], residual_factor * singular_values[rank:]])


def batchnorm_scale(batchnorm: nn.BatchNorm2d) -> torch.Tensor:
    """a = gamma / sqrt(running_var + eps): the per-channel scale BN applies to the conv output."""
    return batchnorm.weight.detach() / torch.sqrt(batchnorm.running_var + batchnorm.eps)


@torch.no_grad()
def project_matrix(matrix: torch.Tensor, *, rank: int, transfer_energy: bool = True, residual_factor: float = 0.0,
                   row_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Rank-``rank`` projection of ``matrix`` (optionally of diag(row_scale)*matrix, mapped back)."""
    scaled = matrix if row_scale is None else row_scale[:, None] * matrix
    left, singular_values, right_t = torch.linalg.svd(scaled, full_matrices=False)
    if singular_values[0] < SKIP_BELOW_SIGMA:
        return matrix.clone()
    shrink = energy_transfer if transfer_energy else plain_truncation
    projected = (left * shrink(singular_values, rank=rank, residual_factor=residual_factor)) @ right_t
    if row_scale is None:
        return projected
    return (row_scale / (row_scale.pow(2) + BN_INVERSE_REGULARISER))[:, None] * projected


def conv_batchnorm_pairs(network: nn.Module) -> list[tuple[str, nn.Conv2d, nn.BatchNorm2d]]:
    """Pair the i-th Conv2d with the i-th BatchNorm2d in module order (the official pairing).

    Right only when every conv is directly followed by its own BN (CIFAR ResNets, VGG-BN); a
    network with a different number of convs and BNs is refused rather than silently mispaired.
    """
    convs = [(name, module) for name, module in network.named_modules() if isinstance(module, nn.Conv2d)]
    norms = [module for module in network.modules() if isinstance(module, nn.BatchNorm2d)]
    if len(convs) != len(norms):
        raise ValueError(f"BN rectification pairs convs with BNs by order, but the network has {len(convs)} "
                         f"Conv2d and {len(norms)} BatchNorm2d; use bn_rectification=False for it")
    for (name, conv), norm in zip(convs, norms):
        if norm.num_features != conv.out_channels:
            raise ValueError(f"conv {name!r} ({conv.out_channels} outputs) is paired with a BN of {norm.num_features} channels")
    return [(name, conv, norm) for (name, conv), norm in zip(convs, norms)]


@torch.no_grad()
def project_network(network: nn.Module, *, ranks: dict[str, int], transfer_energy: bool = True,
                    bn_rectification: bool = True, residual_factor: float = 0.0) -> None:
    """Replace every conv weight (in place) by its rank-r projection; the final Linear is untouched."""
    if bn_rectification:
        pairs = [(name, conv, batchnorm_scale(norm)) for name, conv, norm in conv_batchnorm_pairs(network)]
    else:
        pairs = [(name, module, None) for name, module in network.named_modules() if isinstance(module, nn.Conv2d)]
    for name, conv, row_scale in pairs:
        weight = conv.weight
        matrix = weight.reshape(weight.shape[0], -1)
        projected = project_matrix(matrix, rank=ranks[name], transfer_energy=transfer_energy,
                                   residual_factor=residual_factor, row_scale=row_scale)
        weight.copy_(projected.reshape_as(weight))


class FactorisedConv2d(nn.Sequential):
    """Conv2d(C->r, k x k) followed by Conv2d(r->N, 1x1): a rank-r convolution."""

    def __init__(self, *, in_channels: int, out_channels: int, rank: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] | str = 0,
                 dilation: int | tuple[int, int] = 1, bias: bool = False) -> None:
        super().__init__()
        self.basis = nn.Conv2d(in_channels, rank, kernel_size=kernel_size, stride=stride, padding=padding,
                               dilation=dilation, bias=False)
        self.mixing = nn.Conv2d(rank, out_channels, kernel_size=1, bias=bias)

    @property
    def rank(self) -> int:
        return self.basis.out_channels

    @classmethod
    def like(cls, conv: nn.Conv2d, *, rank: int) -> "FactorisedConv2d":
        if conv.groups != 1:
            raise ValueError("grouped convolutions are not factorised")
        return cls(in_channels=conv.in_channels, out_channels=conv.out_channels, rank=rank,
                   kernel_size=conv.kernel_size, stride=conv.stride, padding=conv.padding,
                   dilation=conv.dilation, bias=conv.bias is not None)

    @classmethod
    @torch.no_grad()
    def from_conv(cls, conv: nn.Conv2d, *, rank: int) -> "FactorisedConv2d":
        """Rank-``rank`` truncated SVD of ``conv``'s raw weight matrix, split as U sqrt(S) | sqrt(S) V^T."""
        factorised = cls.like(conv, rank=rank).to(conv.weight.device, conv.weight.dtype)
        matrix = conv.weight.reshape(conv.out_channels, -1)
        left, singular_values, right_t = torch.linalg.svd(matrix, full_matrices=False)
        root = singular_values[:rank].sqrt()
        factorised.basis.weight.copy_((root[:, None] * right_t[:rank]).reshape_as(factorised.basis.weight))
        factorised.mixing.weight.copy_((left[:, :rank] * root).reshape_as(factorised.mixing.weight))
        if conv.bias is not None:
            factorised.mixing.bias.copy_(conv.bias)
        return factorised


def _replace_convs(network: nn.Module, make: Callable[[str, nn.Conv2d], nn.Module]) -> nn.Module:
    for name, module in list(network.named_modules()):
        if isinstance(module, nn.Conv2d) and not _inside_factorised(network, name):
            parent_name, _, child_name = name.rpartition(".")
            parent = network.get_submodule(parent_name) if parent_name else network
            setattr(parent, child_name, make(name, module))
    return network


def _inside_factorised(network: nn.Module, name: str) -> bool:
    parent_name = name.rpartition(".")[0]
    return bool(parent_name) and isinstance(network.get_submodule(parent_name), FactorisedConv2d)


def factorise_network(network: nn.Module, *, ranks: dict[str, int]) -> nn.Module:
    """A copy of ``network`` with every Conv2d replaced by its rank-r ``FactorisedConv2d``."""
    return _replace_convs(copy.deepcopy(network), lambda name, conv: FactorisedConv2d.from_conv(conv, rank=ranks[name]))


def factorised_architecture(network: nn.Module, *, ranks: dict[str, int]) -> nn.Module:
    """``network`` with every Conv2d replaced by a freshly Kaiming-initialised rank-r pair (in place)."""
    def make(name: str, conv: nn.Conv2d) -> FactorisedConv2d:
        factorised = FactorisedConv2d.like(conv, rank=ranks[name])
        # The pair has no nonlinearity in between, so the 1x1 mixing conv gets the linear gain:
        # the product then has the variance of one Kaiming-initialised (ReLU-gain) conv.
        nn.init.kaiming_normal_(factorised.basis.weight)
        nn.init.kaiming_normal_(factorised.mixing.weight, nonlinearity="linear")
        return factorised

    return _replace_convs(network, make)
