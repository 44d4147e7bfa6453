"""Node-clustering metrics and non-trainable clustering baselines shared by graph-clustering papers.

Metrics (all from scikit-learn / scipy, none hand-rolled beyond the label matching):

* ``acc`` — clustering accuracy: the best one-to-one map from predicted clusters to classes,
  found with the Hungarian method (``scipy.optimize.linear_sum_assignment``) on the contingency
  matrix. When the number of predicted clusters differs from the number of classes the
  assignment is rectangular: surplus clusters (or classes) stay unmatched and their nodes count
  as errors. (The DCAGC/DAEGC evaluation code returns 0 in that case instead.)
* ``nmi`` — ``normalized_mutual_info_score`` (arithmetic normalisation, sklearn's default).
* ``ari`` — ``adjusted_rand_score``.
* ``f1`` — macro-F1 over the true classes after the same matching (``f1_score``).

Baselines are LightningModules with ``requires_fit = False``: the runner skips ``trainer.fit`` and
only calls ``trainer.test``; ``test_step`` clusters the full graph batch and logs ``test/acc``,
``test/nmi``, ``test/ari``, ``test/f1``, ``test/majority_share`` and ``test/clusters_found``, scored
on the test split's nodes (``graph.eval_mask`` when the datamodule holds validation nodes out). Their random state is
``torch.initial_seed() % 2**32``, i.e. the seed given to ``lightning.seed_everything``.
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans, SpectralClustering
from sklearn.metrics import adjusted_rand_score, f1_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix
from torch_geometric.data import Data
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import to_scipy_sparse_matrix
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from modules.common.sample_index import first_copies
from modules.common.trainer_access import attached_datamodule

CLUSTERING_METRIC_NAMES = ("acc", "nmi", "ari", "f1")
UNMATCHED_CLUSTER = -1


def _as_numpy_labels(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    return np.asarray(labels).reshape(-1)


def match_clusters_to_classes(y_true, y_pred) -> np.ndarray:
    """Relabel ``y_pred`` with the class each cluster is matched to (Hungarian, max overlap).

    Clusters left without a class (more clusters than classes) become ``UNMATCHED_CLUSTER``.
    """
    y_true, y_pred = _as_numpy_labels(y_true), _as_numpy_labels(y_pred)
    classes, true_ids = np.unique(y_true, return_inverse=True)
    clusters, pred_ids = np.unique(y_pred, return_inverse=True)
    overlap = contingency_matrix(true_ids, pred_ids)  # classes x clusters
    class_rows, cluster_cols = linear_sum_assignment(overlap, maximize=True)
    class_of_cluster = np.full(len(clusters), UNMATCHED_CLUSTER, dtype=np.int64)
    class_of_cluster[cluster_cols] = classes[class_rows]
    return class_of_cluster[pred_ids]


def cluster_accuracy(y_true, y_pred) -> float:
    """Accuracy after the best one-to-one cluster→class matching (rectangular when counts differ)."""
    y_true = _as_numpy_labels(y_true)
    if y_true.size == 0:
        return float("nan")
    return float(np.mean(match_clusters_to_classes(y_true, y_pred) == y_true))


def clustering_scores(y_true, y_pred) -> dict[str, float]:
    """``{acc, nmi, ari, f1, majority_share}`` for one hard clustering against the true labels.

    ``majority_share`` is the largest class's share of the nodes: the ACC of putting every node in
    one cluster, the trivial reference that a clustering must beat (a validity gate of the spec).
    """
    y_true, y_pred = _as_numpy_labels(y_true), _as_numpy_labels(y_pred)
    matched = match_clusters_to_classes(y_true, y_pred)
    _, class_counts = np.unique(y_true, return_counts=True)
    return {
        "majority_share": float(class_counts.max() / y_true.size),
        "acc": float(np.mean(matched == y_true)),
        "nmi": float(normalized_mutual_info_score(y_true, y_pred, average_method="arithmetic")),
        "ari": float(adjusted_rand_score(y_true, y_pred)),
        "f1": float(f1_score(y_true, matched, labels=np.unique(y_true), average="macro", zero_division=0)),
    }


class ClusteringMetrics(Metric):
    """torchmetrics wrapper around :func:`clustering_scores`; ``compute()`` returns a dict.

    The scores are not decomposable, so predictions are kept and concatenated across processes
    (``dist_reduce_fx="cat"``). Pass ``node_index`` when processes may see the same nodes (e.g.
    every DDP rank holding the full graph, or a distributed sampler padding the last batch):
    duplicates are then dropped before scoring, so the result does not depend on the world size.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("node_index", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor, node_index: torch.Tensor | None = None) -> None:
        preds, target = preds.reshape(-1).long(), target.reshape(-1).long()
        if preds.shape != target.shape:
            raise ValueError(f"preds and target differ in size: {tuple(preds.shape)} vs {tuple(target.shape)}")
        if node_index is None:
            node_index = torch.full_like(target, -1)  # -1: not deduplicated
        self.preds.append(preds)
        self.target.append(target)
        self.node_index.append(node_index.reshape(-1).long().to(target.device))

    def compute(self) -> dict[str, torch.Tensor]:
        preds = dim_zero_cat(self.preds).cpu().numpy()
        target = dim_zero_cat(self.target).cpu().numpy()
        node_index = dim_zero_cat(self.node_index).cpu().numpy()
        keep = first_copies(node_index)
        preds, target = preds[keep], target[keep]
        scores = clustering_scores(target, preds)
        return {name: torch.tensor(value, dtype=torch.float32) for name, value in scores.items()}


def scored_nodes(graph: Data) -> torch.Tensor:
    """Ids of the nodes whose labels this split may read: ``graph.eval_mask`` when the datamodule
    split the labels into validation and test nodes, else every node (the official protocol)."""
    mask = getattr(graph, "eval_mask", None)
    if mask is None:
        return torch.arange(graph.num_nodes, device=graph.y.device)
    return mask.nonzero().view(-1).to(graph.y.device)


def score_clustering(graph: Data, predicted: np.ndarray | torch.Tensor) -> dict[str, float]:
    """:func:`clustering_scores` of a clustering of every node, on the split's scored nodes."""
    nodes = scored_nodes(graph).cpu().numpy()
    if nodes.size == 0:
        raise ValueError("no labelled nodes to score in this split (the validation split is empty: "
                         "val_fraction = 0); set data.init_args.val_fraction > 0 to score on validation nodes")
    return clustering_scores(_as_numpy_labels(graph.y)[nodes], _as_numpy_labels(predicted)[nodes])


def score_and_log(module: pl.LightningModule, metric: ClusteringMetrics, prefix: str, graph: Data,
                  predicted: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Score a clustering of every node on the split's scored nodes (:func:`scored_nodes`), log
    ``<prefix>/{acc,nmi,ari,f1,majority_share,clusters_found}`` and return them."""
    nodes = scored_nodes(graph)
    if nodes.numel() == 0:
        score_clustering(graph, predicted)  # raises the one-line explanation
    predicted = torch.as_tensor(_as_numpy_labels(predicted), device=graph.y.device)
    metric.reset()
    metric.update(predicted[nodes], graph.y[nodes], node_index=nodes)
    scores = {name: float(value) for name, value in metric.compute().items()}
    metric.reset()
    scores["clusters_found"] = float(torch.unique(predicted).numel())  # over every clustered node
    # Every rank clustered the same full graph with the same seed: the values agree across ranks.
    module.log_dict({f"{prefix}/{name}": value for name, value in scores.items()}, batch_size=1, sync_dist=True)
    return scores


def seed_from_torch() -> int:
    """The seed ``lightning.seed_everything`` set, as a numpy/sklearn random state."""
    return int(torch.initial_seed() % 2**32)


def resolve_num_clusters(module: pl.LightningModule, graph: Data, num_clusters: int | None) -> int:
    """K as given, else the datamodule's ``num_classes``, else the number of label values."""
    if num_clusters is not None:
        return int(num_clusters)
    datamodule = attached_datamodule(module)
    if datamodule is not None and hasattr(datamodule, "num_classes"):
        return int(datamodule.num_classes)
    return int(torch.unique(graph.y).numel())


def low_pass_filtered_features(graph: Data, power: int) -> torch.Tensor:
    """``(I - L_sym/2)^power X`` with ``L_sym`` from the self-loop-normalised adjacency (SGC/AGC)."""
    edge_index, edge_weight = gcn_norm(graph.edge_index, num_nodes=graph.num_nodes, add_self_loops=True)
    propagation = torch.sparse_coo_tensor(edge_index, edge_weight, (graph.num_nodes, graph.num_nodes),
                                          check_invariants=True).coalesce()
    # I - L_sym/2 = (I + D^-1/2 (A+I) D^-1/2) / 2. In fp32 even under bf16 autocast: CUDA has no
    # bf16 sparse addmm, and k-means wants the precision anyway.
    filtered = graph.x.float()
    with torch.autocast(device_type=filtered.device.type, enabled=False):
        for _ in range(power):
            filtered = 0.5 * (filtered + torch.sparse.mm(propagation, filtered))
    return filtered


class _FullGraphClusteringBaseline(pl.LightningModule):
    """Shared plumbing: no parameters to fit, clustering happens in ``test_step``."""

    requires_fit = False

    def __init__(self, num_clusters: int | None = None) -> None:
        super().__init__()
        self.num_clusters = num_clusters
        self.test_metrics = ClusteringMetrics()

    def cluster(self, graph: Data, num_clusters: int, random_state: int) -> np.ndarray:
        raise NotImplementedError

    def test_step(self, batch: Data, batch_idx: int) -> None:
        num_clusters = resolve_num_clusters(self, batch, self.num_clusters)
        predicted = self.cluster(batch, num_clusters=num_clusters, random_state=seed_from_torch())
        score_and_log(self, self.test_metrics, "test", batch, predicted)

    def configure_optimizers(self):
        return None


class KMeansClustering(_FullGraphClusteringBaseline):
    """k-means (sklearn, ``n_init`` restarts) on the node features as the datamodule serves them."""

    def __init__(self, n_init: int = 10, max_iter: int = 300, num_clusters: int | None = None) -> None:
        super().__init__(num_clusters=num_clusters)
        self.save_hyperparameters()
        self.n_init = n_init
        self.max_iter = max_iter

    def cluster(self, graph: Data, num_clusters: int, random_state: int) -> np.ndarray:
        kmeans = KMeans(n_clusters=num_clusters, n_init=self.n_init, max_iter=self.max_iter, random_state=random_state)
        return kmeans.fit_predict(graph.x.detach().cpu().numpy())


class SpectralClusteringAdjacency(_FullGraphClusteringBaseline):
    """sklearn spectral clustering on the (binary, symmetric) adjacency as a precomputed affinity.

    Structure only; on graphs with many connected components (Cora has 78) the leading
    eigenvectors pick out small components, which is what this baseline is meant to show.
    """

    def __init__(self, assign_labels: str = "kmeans", eigen_solver: str = "arpack",
                 num_clusters: int | None = None) -> None:
        super().__init__(num_clusters=num_clusters)
        self.save_hyperparameters()
        self.assign_labels = assign_labels
        self.eigen_solver = eigen_solver

    def cluster(self, graph: Data, num_clusters: int, random_state: int) -> np.ndarray:
        adjacency = to_scipy_sparse_matrix(graph.edge_index.cpu(), num_nodes=graph.num_nodes).tocsr()
        adjacency = sp.csr_matrix((adjacency + adjacency.T) > 0, dtype=np.float64)
        spectral = SpectralClustering(n_clusters=num_clusters, affinity="precomputed", eigen_solver=self.eigen_solver,
                                      assign_labels=self.assign_labels, random_state=random_state)
        return spectral.fit_predict(adjacency)


class KMeansSmoothedFeatures(_FullGraphClusteringBaseline):
    """k-means on low-pass filtered features ``(I - L_sym/2)^power X`` (the AGC/SGC graph filter).

    ``power`` is fixed (no per-dataset selection with an intra-cluster criterion as AGC does);
    the default 12 is AGC's choice for Cora.
    """

    def __init__(self, power: int = 12, n_init: int = 10, num_clusters: int | None = None) -> None:
        super().__init__(num_clusters=num_clusters)
        self.save_hyperparameters()
        self.power = power
        self.n_init = n_init

    def cluster(self, graph: Data, num_clusters: int, random_state: int) -> np.ndarray:
        filtered = low_pass_filtered_features(graph, power=self.power)
        kmeans = KMeans(n_clusters=num_clusters, n_init=self.n_init, random_state=random_state)
        return kmeans.fit_predict(filtered.detach().cpu().numpy())
