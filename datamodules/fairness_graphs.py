"""Fairness graphs (NIFTY format) for binary node classification with a binary sensitive attribute.

``FairGraphDataModule`` serves one graph per dataset as a single full-graph batch with
``x`` [n, d] float, ``edge_index`` [2, E] (symmetric, **with self loops**: the A+I the NIFTY and
RELIANT loaders build), ``y`` [n] long in {0, 1}, ``sensitive`` [n] long in {0, 1} and boolean
``train_mask`` / ``val_mask`` / ``test_mask``. Names are case-insensitive.

Real datasets are read from their original files by ``datamodules/fairness_graph_files.py`` (its
docstring lists the files, columns, features and splits of German, Bail, Credit and Pokec-z/n,
and how missing edge files are rebuilt). Those five are presets of one description,
``FairDatasetFormat``; any other graph of the format (a features csv with a binary label and a
binary sensitive column, an edge list of row numbers or of an id column) is read from its name plus
``graph_format`` = the fields that describe it, e.g. ``{label: y, sensitive: s}`` for
``<data_dir>/<name>/<name>.csv`` + ``<name>_edges.txt`` (``litbench datasets reliant`` lists them).

``"fair-sbm-synthetic"`` (default, no files) is a seeded fairness SBM: s ~ Bernoulli(1/2);
P(y=1 | s) = 1/2 ± ``synthetic_label_bias``/2 (s=1 is favoured); edges are drawn inside and across
the four (y, s) blocks so that an expected ``synthetic_homophily`` of a node's edges join the same
label and ``synthetic_sensitive_homophily`` the same group, independently; features are
``synthetic_num_features`` Gaussians whose first half is shifted by ±``synthetic_label_signal``
(label) and whose next quarter by ±``synthetic_sensitive_signal`` (group), then s itself, then
two pure-noise columns (the last two, which RELIANT overwrites with its proxy, as TIME/FILE on
Bail). Split per class 50/25/25 % from ``synthetic_seed``.

``max_nodes`` (off by default; the ``cpu`` profile sets it) keeps the subgraph induced by that many
nodes when a graph is larger, drawn once with ``subsample_seed``. ``subsample="snowball"`` (default)
takes breadth-first balls of up to ``subsample_ball_size`` nodes around uniformly drawn roots
(:func:`snowball_node_subsample`): most neighbours of a kept node are kept, so the mean degree stays
close to the full graph's (Bail 34 → 24, Credit 110 → 55 at 5,000 nodes and balls of 50), where a
uniform node sample (``"uniform"``, :func:`induced_node_subsample`) divides it by the sampling
fraction (Bail 34 → 5 at 3,000 nodes). ``subsample_split="keep"`` keeps the kept nodes' official
split; ``"redraw"`` applies the dataset's official split rule to the subgraph's labels (for Credit's
rule, per class min(50 %, 500) / 25 / 25 %, the train part keeps its official 1,000 nodes instead of
shrinking with the graph).

``cache_dir`` defaults to env ``LITBENCH_CACHE`` (else ``~/.cache/litbench``); the processed graph
is cached there keyed by the source files' sizes and mtimes. Every dataloader yields the single
full graph; under DDP every rank gets the same graph, so full-batch gradients equal one process's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.utils import subgraph

from datamodules.fairness_graph_files import (DISPLAY_NAMES, SYNTHETIC_NAME, FairDatasetFormat, graph_edge_index,
                                              official_split, read_fair_graph, resolve_dataset_key, resolve_format,
                                              source_fingerprint)
from datamodules.formats import DatasetFormat
from datamodules.full_graph import FullGraphDataModule
from datamodules.graphs import _exclusive_lock


def generate_fair_sbm(*, num_nodes: int, num_features: int, average_degree: float, homophily: float,
                      sensitive_homophily: float, label_bias: float, label_signal: float, sensitive_signal: float,
                      seed: int) -> tuple[Data, dict[str, np.ndarray]]:
    """The generated fairness graph of the module docstring; returns (graph without masks, split)."""
    rng = np.random.default_rng(seed)
    sensitive = rng.integers(0, 2, num_nodes)
    labels = (rng.random(num_nodes) < 0.5 + label_bias * (sensitive - 0.5)).astype(np.int64)
    same_label = labels[:, None] == labels[None, :]
    same_group = sensitive[:, None] == sensitive[None, :]
    # Expected share of a node's edges inside each relation, split by the two homophilies.
    share = np.where(same_label, homophily, 1 - homophily) * np.where(same_group, sensitive_homophily, 1 - sensitive_homophily)
    # Per-pair probability = degree · share / (partners a node has in that relation on average).
    relation_count = np.zeros_like(share)
    for label_match in (True, False):
        for group_match in (True, False):
            mask = (same_label == label_match) & (same_group == group_match)
            relation_count[mask] = max(mask.sum() / num_nodes, 1.0)
    probability = np.clip(average_degree * share / relation_count, 0.0, 1.0)
    upper = np.triu(rng.random((num_nodes, num_nodes)) < probability, k=1)
    edges = np.argwhere(upper)
    features = rng.normal(size=(num_nodes, num_features)).astype(np.float32)
    half, quarter = num_features // 2, num_features // 4
    features[:, :half] += label_signal * (2 * labels[:, None] - 1)
    features[:, half:half + quarter] += sensitive_signal * (2 * sensitive[:, None] - 1)
    noise_columns = rng.normal(size=(num_nodes, 2)).astype(np.float32)
    x = np.concatenate([features, sensitive[:, None].astype(np.float32), noise_columns], axis=1)
    split = official_split(labels, rule="capped_half", seed=seed, label_number=num_nodes)
    graph = Data(x=torch.from_numpy(x), edge_index=graph_edge_index(edges, num_nodes),
                 y=torch.from_numpy(labels), sensitive=torch.from_numpy(sensitive.astype(np.int64)))
    return graph, dict(zip(("train", "val", "test"), split))


def _masks(num_nodes: int, split: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    masks = {}
    for part, ids in split.items():
        mask = torch.zeros(num_nodes, dtype=torch.bool)
        mask[torch.as_tensor(ids, dtype=torch.long)] = True
        masks[f"{part}_mask"] = mask
    return masks


def _induced_subgraph(graph: Data, keep: torch.Tensor) -> Data:
    edge_index, _ = subgraph(keep, graph.edge_index, relabel_nodes=True, num_nodes=graph.num_nodes)
    node_attributes = {key: value[keep] for key, value in dict(graph).items() if key != "edge_index"}
    return Data(edge_index=edge_index, **node_attributes)


def induced_node_subsample(graph: Data, num_nodes: int, *, seed: int) -> Data:
    """The subgraph induced by ``num_nodes`` nodes drawn uniformly without replacement (fixed seed).

    Features, labels, s and the official split of the kept nodes are unchanged; the degree shrinks
    by the sampling fraction.
    """
    keep = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(graph.num_nodes, num_nodes, replace=False)))
    return _induced_subgraph(graph, keep)


def snowball_node_subsample(graph: Data, num_nodes: int, *, ball_size: int, seed: int) -> Data:
    """The subgraph induced by breadth-first balls around uniformly drawn roots (fixed seed).

    Roots are visited in a random order; from each root not yet kept, whole BFS levels of unkept
    neighbours are added (a level that overflows the ball is cut to a random subset) until the ball
    has ``ball_size`` nodes or ``num_nodes`` are kept. Interior nodes keep all their neighbours, so
    the degree structure survives far better than under :func:`induced_node_subsample`; many small
    balls from uniform roots keep the label and group rates close to the full graph's.
    """
    rng = np.random.default_rng(seed)
    source, target = graph.edge_index.numpy()
    order = np.argsort(source, kind="stable")
    neighbours = target[order]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(source, minlength=graph.num_nodes))])
    kept = np.zeros(graph.num_nodes, dtype=bool)
    total = 0
    for root in rng.permutation(graph.num_nodes):
        if total >= num_nodes:
            break
        if kept[root]:
            continue
        room = min(ball_size, num_nodes - total) - 1
        kept[root], frontier = True, np.array([root])
        while room > 0 and frontier.size:
            level = np.unique(np.concatenate([neighbours[offsets[node]:offsets[node + 1]] for node in frontier]))
            level = rng.permutation(level[~kept[level]])[:room]
            kept[level], frontier, room = True, level, room - level.size
        total = int(kept.sum())
    return _induced_subgraph(graph, torch.from_numpy(np.flatnonzero(kept)))


class FairGraphDataModule(FullGraphDataModule):
    """One fairness graph, full-graph batches (see the module docstring for datasets and formats).

    After ``setup()``: ``graph``, ``num_nodes``, ``num_features``, ``num_classes`` (2),
    ``dataset_name``.
    """

    def __init__(self, dataset: str = SYNTHETIC_NAME, data_dir: str | None = None, cache_dir: str | None = None,
                 synthetic_num_nodes: int = 400, synthetic_num_features: int = 16,
                 synthetic_average_degree: float = 8.0, synthetic_homophily: float = 0.8,
                 synthetic_sensitive_homophily: float = 0.8, synthetic_label_bias: float = 0.4,
                 synthetic_label_signal: float = 0.5, synthetic_sensitive_signal: float = 0.5,
                 synthetic_seed: int = 0, max_nodes: int | None = None, subsample: str = "snowball",
                 subsample_ball_size: int = 50, subsample_split: str = "keep", subsample_seed: int = 0,
                 graph_format: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.dataset = dataset
        # The built-in datasets are presets of FairDatasetFormat; graph_format describes any other
        # graph of the format (or overrides fields of a preset). An unknown name fails here, at once.
        self.format: FairDatasetFormat | None = None if resolve_dataset_key(dataset) == SYNTHETIC_NAME \
            else resolve_format(dataset, graph_format)
        self.data_dir = data_dir
        self.cache_dir = cache_dir
        self.synthetic_kwargs = dict(num_nodes=synthetic_num_nodes, num_features=synthetic_num_features,
                                     average_degree=synthetic_average_degree, homophily=synthetic_homophily,
                                     sensitive_homophily=synthetic_sensitive_homophily, label_bias=synthetic_label_bias,
                                     label_signal=synthetic_label_signal, sensitive_signal=synthetic_sensitive_signal,
                                     seed=synthetic_seed)
        if subsample not in ("snowball", "uniform") or subsample_split not in ("keep", "redraw"):
            raise ValueError(f"subsample must be 'snowball' or 'uniform' and subsample_split 'keep' or 'redraw', "
                             f"got {subsample!r}, {subsample_split!r}")
        self.max_nodes, self.subsample_seed = max_nodes, subsample_seed
        self.subsample, self.subsample_ball_size, self.subsample_split = subsample, subsample_ball_size, subsample_split
        self.graph: Data | None = None

    @staticmethod
    def dataset_formats() -> list[DatasetFormat]:
        return [DatasetFormat(
            name="NIFTY csv + edge list (fairness graph)", presets=tuple(DISPLAY_NAMES.values()),
            layout="<data-dir>/NAME/NAME.csv (one row per node: feature columns, a binary label column, a binary "
                   "sensitive column) + NAME_edges.txt (whitespace-separated node pairs: 0-based csv rows, or ids "
                   "of graph_format.id_column with edge_ids: id; .gz/.zip too); also found in <data-dir>/fair_NAME/ "
                   "or <data-dir>/. Presets: fair_german/, fair_bail/, fair_credit/, fair_pokec/ (NIFTY files)",
            own_data_args={"graph_format.label": "y", "graph_format.sensitive": "s"}, own_name="mygraph",
            notes=("optional graph_format fields: features_file, edges_file, id_column, edge_ids (row|id), "
                   "split (capped_half|thirty_twenty_fifty|labelled_half), split_seed, label_number, "
                   "feature_scaling (none|row_sum|minmax_columns|minmax_all_but_sensitive), minmax_columns, drop, "
                   "sensitive_in_features, protected_value (a text sensitive column), build_threshold",
                   "graph_format fields given with a preset's name override that preset's"))]

    @property
    def dataset_name(self) -> str:
        key = resolve_dataset_key(self.dataset)
        return SYNTHETIC_NAME if key == SYNTHETIC_NAME else DISPLAY_NAMES.get(key, self.dataset)

    @property
    def _cache_stem(self) -> str:
        return f"{resolve_dataset_key(self.dataset)}-{source_fingerprint(self.dataset, self.data_root, self.format)}"

    def load_graph(self) -> Data:
        if resolve_dataset_key(self.dataset) == SYNTHETIC_NAME:
            graph, split = generate_fair_sbm(**self.synthetic_kwargs)
            return Data(**dict(graph), **_masks(graph.num_nodes, split))
        cached = self.cache_root / "fair_graphs" / f"{self._cache_stem}.pt"
        with _exclusive_lock(cached.with_suffix(".lock")):
            if cached.is_file():
                return Data(**torch.load(cached, weights_only=True))
            graph, split = read_fair_graph(self.dataset, self.data_root, self.cache_root, self.format)
            graph = Data(**dict(graph), **_masks(graph.num_nodes, split))
            temporary = cached.with_suffix(".partial.pt")
            torch.save(dict(graph), temporary)
            temporary.rename(cached)
        return graph

    def prepare_data(self) -> None:
        # Preflight (and one process per node under DDP): fail fast on missing files, build the cache.
        if resolve_dataset_key(self.dataset) != SYNTHETIC_NAME:
            self.load_graph()

    def setup(self, stage: str | None = None) -> None:
        if self.graph is None:
            graph = self.load_graph()
            if self.max_nodes is not None and graph.num_nodes > self.max_nodes:
                graph = self._subsample(graph)
            self.graph = graph

    def _subsample(self, graph: Data) -> Data:
        if self.subsample == "uniform":
            graph = induced_node_subsample(graph, self.max_nodes, seed=self.subsample_seed)
        else:
            graph = snowball_node_subsample(graph, self.max_nodes, ball_size=self.subsample_ball_size,
                                            seed=self.subsample_seed)
        if self.subsample_split == "redraw":
            graph.update(_masks(graph.num_nodes, dict(zip(("train", "val", "test"), self._split_rule(graph.y)))))
        return graph

    def _split_rule(self, labels: torch.Tensor) -> tuple[np.ndarray, ...]:
        """The dataset's official split rule (and seed) applied to ``labels``."""
        key = resolve_dataset_key(self.dataset)
        if key == SYNTHETIC_NAME:
            return official_split(labels.numpy(), rule="capped_half", seed=self.synthetic_kwargs["seed"],
                                  label_number=labels.numel())
        fmt = self.format
        return official_split(labels.numpy(), rule=fmt.split, seed=fmt.split_seed, label_number=fmt.label_number)

    @property
    def num_classes(self) -> int:
        return 2
