"""DCAGC's losses (``modules/dcagc/__init__.py``): GRACE's instance contrast between H and Ĥ = C·H, the
neighbourhood contrast over the k nearest neighbours in H, and the two regularisers. Pure functions,
so that tests can compare them with direct loop computations. ``dual_contrastive_losses`` is what
the model calls: it builds each n×n similarity matrix once per step (deviation 7 of the model)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_similarities(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    return F.normalize(left, dim=1) @ F.normalize(right, dim=1).T


def _scaled(similarities: torch.Tensor, tau: float) -> torch.Tensor:
    return similarities if tau == 1 else similarities / tau  # τ = 1 (official): skip an n×n pass


def _without_diagonal(logits: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(torch.eye(logits.size(0), dtype=torch.bool, device=logits.device), float("-inf"))


def _grace_loss(between: torch.Tensor, within_anchor: torch.Tensor, within_other: torch.Tensor) -> torch.Tensor:
    """GRACE's symmetric loss from the n×n logits ``between`` = s(H, Ĥ) and the diagonal-masked
    ``within_*`` = s(H, H), s(Ĥ, Ĥ). The direction anchored at Ĥ uses s(Ĥ, H) = between.T: its row
    sums are ``between``'s column sums, so that matrix is never formed. Each denominator is the
    log-sum-exp of the two blocks combined with logaddexp instead of one over their concatenation
    (no n×2n copy); mathematically identical to the official loss."""
    positive = between.diagonal()
    anchored_at_embeddings = torch.logaddexp(torch.logsumexp(between, dim=1), torch.logsumexp(within_anchor, dim=1))
    anchored_at_expressed = torch.logaddexp(torch.logsumexp(between, dim=0), torch.logsumexp(within_other, dim=1))
    return 0.5 * ((anchored_at_embeddings - positive) + (anchored_at_expressed - positive)).mean()


def contrastive_self_expression_loss(embeddings: torch.Tensor, expressed: torch.Tensor, tau: float) -> torch.Tensor:
    """GRACE's loss between H and Ĥ=CH: positives are (h_i, ĥ_i), negatives all other pairs."""
    return _grace_loss(_scaled(cosine_similarities(embeddings, expressed), tau),
                       _without_diagonal(_scaled(cosine_similarities(embeddings, embeddings), tau)),
                       _without_diagonal(_scaled(cosine_similarities(expressed, expressed), tau)))


@torch.no_grad()
def embedding_nearest_neighbours(embeddings: torch.Tensor, num_neighbours: int) -> torch.Tensor:
    """Indices [n, k] of each node's k nearest other nodes by Euclidean distance (self excluded)."""
    distances = torch.cdist(embeddings, embeddings)
    distances.fill_diagonal_(float("inf"))
    return distances.topk(num_neighbours, dim=1, largest=False).indices


def _neighbourhood_loss(within: torch.Tensor, neighbour_index: torch.Tensor) -> torch.Tensor:
    """From the diagonal-masked logits s(H, H): mean_i −log(Σ_{j∈N(i)} e^{s_ij} / Σ_{j≠i} e^{s_ij})."""
    return (torch.logsumexp(within, dim=1) - torch.logsumexp(within.gather(1, neighbour_index), dim=1)).mean()


def neighbourhood_contrast_loss(embeddings: torch.Tensor, neighbour_index: torch.Tensor, tau: float) -> torch.Tensor:
    """mean_i −log( Σ_{j∈N(i)} e^{s_ij} / Σ_{j≠i} e^{s_ij} ), s_ij = cos(h_i, h_j)/τ."""
    return _neighbourhood_loss(_without_diagonal(_scaled(cosine_similarities(embeddings, embeddings), tau)),
                               neighbour_index)


def dual_contrastive_losses(embeddings: torch.Tensor, expressed: torch.Tensor, neighbour_index: torch.Tensor | None,
                            *, tau: float, tau_neighbours: float, instance: bool = True) -> dict[str, torch.Tensor]:
    """The unweighted ``instance`` (GRACE between H and Ĥ, if ``instance``) and ``neighbour`` (if
    ``neighbour_index`` is given) losses, equal to ``contrastive_self_expression_loss`` and
    ``neighbourhood_contrast_loss``. The n×n matrices dominate DCAGC's step on CiteSeer (n = 3,327),
    so they are built once: both losses share s(H, H) when τ = τ_n (the official setting)."""
    within_embeddings = {}

    def within(tau_value: float) -> torch.Tensor:
        if tau_value not in within_embeddings:
            within_embeddings[tau_value] = _without_diagonal(_scaled(cosine_similarities(embeddings, embeddings), tau_value))
        return within_embeddings[tau_value]

    losses = {}
    if instance:
        losses["instance"] = _grace_loss(_scaled(cosine_similarities(embeddings, expressed), tau), within(tau),
                                         _without_diagonal(_scaled(cosine_similarities(expressed, expressed), tau)))
    if neighbour_index is not None:
        losses["neighbour"] = _neighbourhood_loss(within(tau_neighbours), neighbour_index)
    return losses


def coefficient_regulariser(coefficients: torch.Tensor) -> torch.Tensor:
    return coefficients.pow(2).sum()


def feature_reconstruction_loss(features: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    return (features - reconstruction).pow(2).sum()
