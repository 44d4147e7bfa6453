"""RELIANT's building blocks: the fairness surrogate and distillation losses (pure functions, tested
against hand-computed values and the official ``approx_func``) and CPF's student networks (MLP, PLP).

No trainer logic; the LightningModules that use them, and the docstring that cites the paper and
lists every deviation from the official code, are in ``modules/reliant/__init__.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from numpy.polynomial import legendre
from torch import nn
from torch_geometric.utils import scatter, softmax

# RELIANT's surrogate in the Legendre basis (coefficients of P_0..P_9), converted once to monomials.
STEP_SURROGATE_LEGENDRE = (0.5, 0.5, 0.0, -1 / 8, 0.0, 1 / 16, 0.0, -5 / 128, 0.0, 7 / 256)
STEP_SURROGATE_MONOMIAL = tuple(float(c) for c in legendre.leg2poly(STEP_SURROGATE_LEGENDRE))


# ----------------------------------------------------------------------------------------------
# RELIANT's losses (pure functions, tested against hand-computed values)
# ----------------------------------------------------------------------------------------------
def legendre_step_surrogate(probability: torch.Tensor) -> torch.Tensor:
    """f(p) = ½ + ½P₁(x) − ⅛P₃(x) + (1/16)P₅(x) − (5/128)P₇(x) + (7/256)P₉(x), x = 2p − 1.

    The Legendre series of a step at p = ½, truncated: a smooth, differentiable stand-in for the
    indicator [p > ½] (f(0)=0.074, f(½)=½, f(1)=0.926).
    """
    x = 2 * probability - 1
    value = torch.zeros_like(x)
    for coefficient in reversed(STEP_SURROGATE_MONOMIAL):  # Horner; differentiable, unlike torch.special's P_k
        value = value * x + coefficient
    return value


def fairness_surrogate_loss(probabilities: torch.Tensor, sensitive: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
    """Σ_c (mean_{i∈V, s=0} f(p_ic) − mean_{i∈V, s=1} f(p_ic))² over the boolean node set V."""
    smooth = legendre_step_surrogate(probabilities)
    group_means = [smooth[nodes & (sensitive == group)].mean(dim=0) for group in (0, 1)]
    return (group_means[0] - group_means[1]).pow(2).sum()


def distillation_l2_loss(probabilities: torch.Tensor, teacher_probabilities: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
    """CPF's ``my_loss``: the plain (unsquared, unaveraged) Frobenius norm of the difference."""
    return torch.linalg.matrix_norm(probabilities[nodes] - teacher_probabilities[nodes])


# ----------------------------------------------------------------------------------------------
# Students (CPF's MLP2 and PLP)
# ----------------------------------------------------------------------------------------------
class FeatureMLP(nn.Module):
    """CPF's ``MLP2``: Linear → ReLU → Linear with dropout before each Linear."""

    def __init__(self, in_features: int, hidden: int, out_features: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.hidden = nn.Linear(in_features, hidden)
        self.output = nn.Linear(hidden, out_features)

    def forward(self, features: torch.Tensor, edge_index: torch.Tensor | None = None, **_) -> torch.Tensor:
        return self.output(self.dropout(F.relu(self.hidden(self.dropout(features)))))


class PLPConv(nn.Module):
    """One parameterised label-propagation step (CPF's 'ind' PLPConv, see the module docstring)."""

    def __init__(self, num_nodes: int, in_features: int, hidden: int, num_classes: int, feat_drop: float,
                 attn_drop: float) -> None:
        super().__init__()
        self.attention = nn.Parameter(torch.empty(1, in_features))
        nn.init.xavier_normal_(self.attention, gain=nn.init.calculate_gain("relu"))
        self.mix_logit = nn.Parameter(torch.zeros(num_nodes, 1))  # β_v: label propagation vs feature MLP
        self.feat_drop, self.attn_drop = nn.Dropout(feat_drop), nn.Dropout(attn_drop)
        self.mlp = FeatureMLP(in_features, hidden, num_classes, feat_drop)

    def forward(self, features: torch.Tensor, edge_index: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        source, target = edge_index
        score = (self.feat_drop(features) * self.attention).sum(dim=-1)  # depends on the source only
        weight = self.attn_drop(softmax(score[source], target, num_nodes=features.size(0)))
        propagated = scatter(weight.unsqueeze(-1) * labels[source], target, dim=0, dim_size=features.size(0), reduce="sum")
        return F.relu(torch.sigmoid(self.mix_logit) * propagated + torch.sigmoid(-self.mix_logit) * self.mlp(features))


class PLP(nn.Module):
    """CPF's PLP student: one shared PLPConv applied ``num_layers - 1`` times with train nodes clamped."""

    def __init__(self, num_nodes: int, in_features: int, num_classes: int, num_layers: int = 10, hidden: int = 64,
                 feat_drop: float = 0.8, attn_drop: float = 0.2) -> None:
        super().__init__()
        self.num_layers, self.num_classes = num_layers, num_classes
        self.conv = PLPConv(num_nodes, in_features, hidden, num_classes, feat_drop, attn_drop)

    def forward(self, features: torch.Tensor, edge_index: torch.Tensor, labels: torch.Tensor,
                train_mask: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(labels, self.num_classes).float()
        clamp = train_mask.unsqueeze(-1)
        state = torch.where(clamp, one_hot, torch.full_like(one_hot, 1.0 / self.num_classes))
        for _ in range(self.num_layers - 1):
            state = torch.where(clamp, one_hot, self.conv(features, edge_index, state))
        return state  # logits; train nodes hold their one-hot labels
