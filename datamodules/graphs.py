"""Attributed graphs for node clustering, served as one full graph per batch.

``AttributedGraphDataModule`` picks its source by ``dataset`` name (case-insensitive):

* ``"sbm-synthetic"`` (default; needs no files) — a seeded **attributed stochastic block model**:

  - *Structure.* ``sbm_num_nodes`` nodes are split as evenly as possible into ``sbm_num_classes``
    blocks. Each unordered pair is joined independently with probability ``p_in`` inside a block
    and ``p_out`` across blocks, chosen so that the expected degree is ``sbm_average_degree`` and
    the expected fraction of edges that stay inside a block (edge homophily) is
    ``sbm_homophily``: ``p_in = deg*h/(n/K - 1)``, ``p_out = deg*(1-h)/(n - n/K)``.
  - *Attributes.* Binary bag-of-words over ``sbm_num_features`` words. The vocabulary is cut into
    ``K`` disjoint topic blocks; class ``c``'s word distribution is the mixture
    ``sbm_feature_signal * uniform(topic block c) + (1 - sbm_feature_signal) * uniform(all words)``.
    Each node draws ``sbm_words_per_node`` words from its class distribution (with replacement)
    and its feature vector marks which words occurred, as in Cora/CiteSeer.
  - Defaults (n=300, K=3, d=100, degree 6, homophily 0.7, signal 0.3, 10 words) are meant to be
    learnable but not trivial: neither the features nor the edges alone should suffice, so that
    combining structure and attributes pays off.
  - ``sbm_seed`` fixes the graph; it does not follow the run seed, so every seed of a benchmark
    sees the same data.

* ``"Cora"``, ``"CiteSeer"``, ``"PubMed"`` — the Planetoid citation graphs in their original
  ``ind.<name>.{x,y,tx,ty,allx,ally,graph,test.index}`` files, read by
  ``torch_geometric.datasets.Planetoid``. The raw files are looked up in
  ``<data_dir>/planetoid/<Name>/raw/`` (litbench's shared-data layout) and then
  ``<data_dir>/<Name>/raw/`` (PyG's own layout). Because data folders may be read-only, Planetoid
  is pointed at ``<cache_dir>/planetoid`` where ``<Name>/raw`` is a symlink to the source raw
  folder; ``processed/`` is therefore written in the cache only. With ``download=True`` and no
  local files, PyG downloads the files from the Planetoid GitHub release into the cache.

* any other name, e.g. ``"acm"`` or ``"dblp"`` — the array format of the deep-graph-clustering
  collections: ``<name>_feat.npy`` (n×d features), ``<name>_adj.npy`` (dense n×n adjacency) and
  ``<name>_label.npy`` (n labels, or n×K one-hot), either as plain files or inside ``<name>.zip``,
  found directly in ``<data_dir>/``, in ``<data_dir>/graph_clustering/`` or in
  ``<data_dir>/graph_clustering/<name>/`` (file names are matched case-insensitively). The
  adjacency is symmetrised and self loops are dropped.

Features are row-normalised with PyG's ``NormalizeFeatures`` when ``normalize_features`` is true
(as the DCAGC code does): for count/binary features every non-empty row sums to 1. Note PyG's
rule divides by ``max(row sum, 1)`` after subtracting the global minimum, so rows whose sum is
below 1 (non-count features) are left unscaled.

``data_dir`` defaults to env ``LITBENCH_DATA``; ``cache_dir`` to env ``LITBENCH_CACHE``, else
``$XDG_CACHE_HOME/litbench`` (``~/.cache/litbench``).

Every dataloader (train, val, test) yields the single full graph once per epoch; under DDP each
rank gets the full graph (a distributed sampler pads the one-item dataset to one item per rank).

**Label split for calibration.** Clustering is unsupervised and always sees every node; labels are
only read to score it. With ``val_fraction > 0`` the labelled nodes are split once, stratified by
class with ``split_seed`` (the same split for every arm and run seed): the validation graph carries
``eval_mask`` = the validation nodes and the test graph ``eval_mask`` = the other nodes, so a
hyper-parameter chosen on validation scores (``litbench sweep``) never reads a test label. With
``val_fraction = 0`` (the official protocol: every node scored) the test graph has no
``eval_mask``, the validation graph's mask is empty and ``has_validation_split`` is false.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import warnings
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader
from torch_geometric.data import Data
from torch_geometric.transforms import NormalizeFeatures
from torch_geometric.utils import remove_self_loops, to_undirected

from datamodules.formats import DatasetFormat
from datamodules.full_graph import FullGraphDataModule
from datamodules.integrity import verify_md5

SBM_DATASET_NAME = "sbm-synthetic"
PLANETOID_NAMES = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
PLANETOID_RAW_PARTS = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
ARRAY_PARTS = ("feat", "adj", "label")


# md5 of the original release files (kimiyoung/planetoid, data/; identical in tkipf/gcn).
PLANETOID_MD5 = {
    "ind.citeseer.allx": "28486b4b9c4ee076b4eee2febd89ba86",
    "ind.citeseer.ally": "f0df7e5f859245e32987bfd224d01657",
    "ind.citeseer.graph": "5f88483d5f5cc2b26b987bbbfb695005",
    "ind.citeseer.test.index": "70af39d4dff8aaa5c63f8dc526b16534",
    "ind.citeseer.tx": "c25ab826a7e95c0922ab625de705f7df",
    "ind.citeseer.ty": "356894a73b7a7eff43c3580f2fcf92a4",
    "ind.citeseer.x": "baeb0100b5a8af8d41f928113ce0a4e5",
    "ind.citeseer.y": "8b99f50aa950fbbf9a7a2b71ff9cac97",
    "ind.cora.allx": "c9083193a57057dd1238321e140194d7",
    "ind.cora.ally": "125d70817fe1fdbfdcad991995e81579",
    "ind.cora.graph": "b37c419cec179f45834467630c278e4c",
    "ind.cora.test.index": "9b822cae1d01f41e8bf8782e20367c0e",
    "ind.cora.tx": "b29c36916768e1d2f55391c1aa9317ac",
    "ind.cora.ty": "48bf43f54fa5b86089a4bd0299795f10",
    "ind.cora.x": "190831eee19d8f330d89d94b40a65c5a",
    "ind.cora.y": "78344284e3ff7fd24eb9c307d51351eb",
}
PLANETOID_SOURCE = "the Planetoid GitHub release (kimiyoung/planetoid, data/)"


def planetoid_raw_file_names(name: str) -> list[str]:
    return [f"ind.{name.lower()}.{part}" for part in PLANETOID_RAW_PARTS]


def check_planetoid_raw_files(raw_dir: Path, name: str) -> None:
    """Read every raw file as PyG will (pickles with latin1, the index as integers) and raise one
    line naming the first file that is truncated or corrupt, before PyG's own traceback would."""
    import pickle

    for file_name in planetoid_raw_file_names(name):
        path = raw_dir / file_name
        try:
            if file_name.endswith("test.index"):
                lines = path.read_text().split()
                if not lines:
                    raise ValueError("the file is empty")
                for line in lines:
                    int(line)
            else:
                with open(path, "rb") as handle, warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)  # scipy.sparse.csr, named by the 2016 pickles
                    pickle.load(handle, encoding="latin1")
        except Exception as exc:  # noqa: BLE001 - any failure to read is the same bad-input case
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ValueError(f"dataset {name!r}: {path} cannot be read ({type(exc).__name__}: {reason}); the file "
                             f"is truncated or corrupt - replace it with the original from {PLANETOID_SOURCE}") from None


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Serialise cache preparation between processes (DDP ranks, a local worker pool)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock_file:
        try:
            import fcntl
        except ImportError:  # not POSIX: no inter-process lock, preparation is still idempotent
            yield
            return
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def generate_attributed_sbm(
    *,
    num_nodes: int,
    num_classes: int,
    num_features: int,
    average_degree: float,
    homophily: float,
    feature_signal: float,
    words_per_node: int,
    seed: int,
) -> Data:
    """Sample the attributed stochastic block model described in the module docstring."""
    if not 2 <= num_classes <= num_nodes // 2:
        raise ValueError(f"sbm needs 2 <= num_classes <= num_nodes/2, got K={num_classes}, n={num_nodes}")
    if num_features < num_classes:
        raise ValueError(f"sbm needs num_features >= num_classes, got d={num_features}, K={num_classes}")
    rng = np.random.default_rng(seed)
    labels = np.arange(num_nodes) % num_classes
    rng.shuffle(labels)

    block_size = num_nodes / num_classes
    p_in = min(1.0, average_degree * homophily / max(block_size - 1.0, 1.0))
    p_out = min(1.0, average_degree * (1.0 - homophily) / (num_nodes - block_size))
    rows, cols = np.triu_indices(num_nodes, k=1)
    same_block = labels[rows] == labels[cols]
    keep = rng.random(rows.shape[0]) < np.where(same_block, p_in, p_out)
    edge_index = to_undirected(torch.from_numpy(np.stack([rows[keep], cols[keep]])).long(), num_nodes=num_nodes)

    topic_of_word = np.arange(num_features) * num_classes // num_features  # contiguous topic blocks
    topic_sizes = np.bincount(topic_of_word, minlength=num_classes)
    word_probs = np.full((num_classes, num_features), (1.0 - feature_signal) / num_features)
    word_probs[topic_of_word, np.arange(num_features)] += feature_signal / topic_sizes[topic_of_word]
    features = np.zeros((num_nodes, num_features), dtype=np.float32)
    for class_id in range(num_classes):
        members = np.flatnonzero(labels == class_id)
        words = rng.choice(num_features, size=(members.size, words_per_node), p=word_probs[class_id])
        features[members[:, None], words] = 1.0
    return Data(x=torch.from_numpy(features), edge_index=edge_index, y=torch.from_numpy(labels).long())


def _find_array_files(name: str, data_dir: Path) -> dict[str, tuple[Path, str | None]] | None:
    """Locate ``<name>_{feat,adj,label}.npy`` plain or in ``<name>.zip``: part -> (file, zip member)."""
    wanted = {f"{name.lower()}_{part}.npy": part for part in ARRAY_PARTS}
    for folder in (data_dir, data_dir / "graph_clustering", data_dir / "graph_clustering" / name.lower()):
        if not folder.is_dir():
            continue
        entries = {entry.name.lower(): entry for entry in folder.iterdir()}
        plain = {wanted[key]: (entries[key], None) for key in wanted if key in entries}
        if len(plain) == len(ARRAY_PARTS):
            return plain
        archive = entries.get(f"{name.lower()}.zip")
        if archive is not None and archive.is_file():
            with zipfile.ZipFile(archive) as zipped:
                members = {Path(member).name.lower(): member for member in zipped.namelist()}
            zipped_parts = {wanted[key]: (archive, members[key]) for key in wanted if key in members}
            if len(zipped_parts) == len(ARRAY_PARTS):
                return zipped_parts
    return None


def _load_npy(path: Path, zip_member: str | None) -> np.ndarray:
    if zip_member is None:
        return np.load(path, allow_pickle=False)
    with zipfile.ZipFile(path) as zipped:
        return np.load(io.BytesIO(zipped.read(zip_member)), allow_pickle=False)


def require_array_files(name: str, data_dir: Path) -> dict[str, tuple[Path, str | None]]:
    """The located ``.npy`` triple of ``name``, or a one-line FileNotFoundError saying where to put it."""
    located = _find_array_files(name, data_dir)
    if located is None:
        raise FileNotFoundError(
            f"dataset {name!r}: expected {name.lower()}_feat.npy, {name.lower()}_adj.npy and "
            f"{name.lower()}_label.npy (plain or inside {name.lower()}.zip) in {data_dir}, "
            f"{data_dir / 'graph_clustering'} or {data_dir / 'graph_clustering' / name.lower()}; "
            f"pass --data-dir to the folder that holds them (known generated/Planetoid names: "
            f"{SBM_DATASET_NAME}, {', '.join(PLANETOID_NAMES.values())})"
        )
    return located


def read_array_graph(name: str, data_dir: Path) -> Data:
    """Read the deep-graph-clustering ``.npy`` triple into a ``Data`` (undirected, no self loops)."""
    located = require_array_files(name, data_dir)
    features = _load_npy(*located["feat"]).astype(np.float32)
    adjacency = _load_npy(*located["adj"])
    labels = _load_npy(*located["label"])
    if labels.ndim == 2 and labels.shape[1] > 1:  # one-hot (an n×1 column is plain ids)
        labels = labels.argmax(axis=1)
    _, labels = np.unique(labels.reshape(-1), return_inverse=True)  # dense ids 0..K-1
    num_nodes = features.shape[0]
    if adjacency.shape != (num_nodes, num_nodes) or labels.shape[0] != num_nodes:
        raise ValueError(
            f"dataset {name!r}: inconsistent shapes feat {features.shape}, adj {adjacency.shape}, "
            f"label {labels.shape}; expected (n, d), (n, n), (n,)"
        )
    edge_index = torch.from_numpy(np.stack(np.nonzero(adjacency))).long()
    edge_index, _ = remove_self_loops(edge_index)
    edge_index = to_undirected(edge_index, num_nodes=num_nodes)
    return Data(x=torch.from_numpy(features), edge_index=edge_index, y=torch.from_numpy(labels).long())


class AttributedGraphDataModule(FullGraphDataModule):
    """One attributed graph (features, undirected edges, labels) for full-graph node clustering.

    See the module docstring for the sources, the sub-paths read under ``data_dir`` and the
    synthetic generator. After ``setup()``: ``graph`` (``Data`` with ``x`` float [n, d],
    ``edge_index`` long [2, E] undirected, ``y`` long [n]), ``num_nodes``, ``num_features``,
    ``num_classes`` and ``dataset_name``.
    """

    def __init__(
        self,
        dataset: str = SBM_DATASET_NAME,
        data_dir: str | None = None,
        cache_dir: str | None = None,
        normalize_features: bool = True,
        download: bool = False,
        sbm_num_nodes: int = 300,
        sbm_num_classes: int = 3,
        sbm_num_features: int = 100,
        sbm_average_degree: float = 6.0,
        sbm_homophily: float = 0.7,
        sbm_feature_signal: float = 0.3,
        sbm_words_per_node: int = 10,
        sbm_seed: int = 0,
        val_fraction: float = 0.0,
        split_seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.save_hyperparameters()
        self.dataset = dataset
        self.data_dir = data_dir
        self.cache_dir = cache_dir
        self.normalize_features = normalize_features
        self.download = download
        self.sbm_kwargs = dict(
            num_nodes=sbm_num_nodes,
            num_classes=sbm_num_classes,
            num_features=sbm_num_features,
            average_degree=sbm_average_degree,
            homophily=sbm_homophily,
            feature_signal=sbm_feature_signal,
            words_per_node=sbm_words_per_node,
            seed=sbm_seed,
        )
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.graph: Data | None = None
        self.val_nodes: torch.Tensor | None = None

    @property
    def has_validation_split(self) -> bool:
        return self.val_fraction > 0

    @staticmethod
    def dataset_formats() -> list[DatasetFormat]:
        return [
            DatasetFormat(name="Planetoid citation graphs (ind.<name>.* files, via torch_geometric)",
                          presets=tuple(PLANETOID_NAMES.values()),
                          layout="<data-dir>/planetoid/<Name>/raw/ind.<name>.{x,y,tx,ty,allx,ally,graph,test.index} "
                                 "(or PyG's <data-dir>/<Name>/raw/)"),
            DatasetFormat(name="deep-graph-clustering arrays (.npy triple)", presets=(),
                          layout="<data-dir>/NAME_feat.npy (n x d), NAME_adj.npy (dense n x n), NAME_label.npy (n, or "
                                 "n x K one-hot), plain or inside NAME.zip; also in <data-dir>/graph_clustering/ or "
                                 "<data-dir>/graph_clustering/NAME/",
                          own_data_args={}, own_name="mygraph",
                          notes=("the name alone describes it: no init_args needed",)),
        ]

    @property
    def dataset_name(self) -> str:
        key = self.dataset.lower()
        if key == SBM_DATASET_NAME:
            return SBM_DATASET_NAME
        return PLANETOID_NAMES.get(key, self.dataset)

    # -- shape attributes (valid after setup) -------------------------------------------------
    # -- Planetoid -----------------------------------------------------------------------------
    def _planetoid_source_raw_dir(self, name: str) -> Path | None:
        if self.data_root is None:
            return None
        expected = planetoid_raw_file_names(name)
        for raw_dir in (self.data_root / "planetoid" / name / "raw", self.data_root / name / "raw"):
            if all((raw_dir / file_name).is_file() for file_name in expected):
                return raw_dir.resolve()
        return None

    def _prepare_planetoid_cache(self, name: str) -> Path:
        """Make ``<cache>/planetoid/<Name>/raw`` hold (a link to) the raw files; return the root."""
        planetoid_root = self.cache_root / "planetoid"
        cached_raw = planetoid_root / name / "raw"
        source_raw = self._planetoid_source_raw_dir(name)
        if source_raw is not None:
            if cached_raw.is_symlink() and Path(os.readlink(cached_raw)) == source_raw:
                return planetoid_root
            if cached_raw.is_symlink() or cached_raw.exists():
                # A different source (or an earlier download) was cached: its processed/ is stale.
                _remove_path(cached_raw)
                _remove_path(planetoid_root / name / "processed")
            cached_raw.parent.mkdir(parents=True, exist_ok=True)
            cached_raw.symlink_to(source_raw, target_is_directory=True)
            return planetoid_root
        expected = planetoid_raw_file_names(name)
        if cached_raw.is_dir() and all((cached_raw / file_name).is_file() for file_name in expected):
            return planetoid_root  # left by an earlier download (or data dir) and still complete
        if self.download:
            if cached_raw.is_symlink():  # dangling link to a vanished source: let PyG download
                cached_raw.unlink()
            return planetoid_root
        searched = (
            f"{self.data_root / 'planetoid' / name / 'raw'} or {self.data_root / name / 'raw'}"
            if self.data_root is not None
            else "<data_dir>/planetoid/" + name + "/raw (no data dir given: --data-dir or env LITBENCH_DATA)"
        )
        raise FileNotFoundError(
            f"dataset {name!r}: expected Planetoid raw files {', '.join(expected)} in {searched}; "
            f"get them from the Planetoid GitHub release (kimiyoung/planetoid, data/) by passing "
            f"--set data.init_args.download=true (PyG downloads them into {cached_raw}), or point "
            f"--data-dir at a folder holding planetoid/{name}/raw/"
        )

    def _load_planetoid(self, name: str) -> Data:
        from torch_geometric.datasets import Planetoid

        with _exclusive_lock(self.cache_root / "planetoid" / f".{name}.lock"):
            planetoid_root = self._prepare_planetoid_cache(name)
            raw_dir = planetoid_root / name / "raw"
            downloading = not all((raw_dir / file_name).is_file() for file_name in planetoid_raw_file_names(name))
            if not downloading:
                source = raw_dir.resolve()  # name the user's file, not the cache's link to it
                # The release md5s first: unpickling a damaged file can ask for any amount of memory
                # (a garbled array header), so only files that match (or have no known md5) are parsed.
                known = {source / f: PLANETOID_MD5[f] for f in planetoid_raw_file_names(name) if f in PLANETOID_MD5}
                verify_md5(known, cache_dir=self.cache_root, fix=f"replace it with the original from {PLANETOID_SOURCE}")
                check_planetoid_raw_files(source, name)
            try:
                dataset = Planetoid(root=str(planetoid_root), name=name)
            except Exception as error:
                if not downloading:
                    raise
                reason = " ".join(str(error).split()) or type(error).__name__
                raise RuntimeError(
                    f"dataset {name!r}: downloading the Planetoid files into {raw_dir} failed ({reason}); "
                    f"check the network, or pass --data-dir to a folder holding planetoid/{name}/raw/"
                ) from error
        data = dataset[0]
        return Data(x=data.x, edge_index=data.edge_index, y=data.y)

    # -- LightningDataModule hooks ---------------------------------------------------------------
    def prepare_data(self) -> None:
        # Runs on one process per node before setup(): build PyG's processed/ cache once so DDP
        # ranks only read it.
        key = self.dataset.lower()
        if key in PLANETOID_NAMES:
            self._load_planetoid(PLANETOID_NAMES[key])
        elif key != SBM_DATASET_NAME:
            self._require_array_files()  # an unknown name or missing files: one line before any run

    def _require_array_files(self) -> dict[str, tuple[Path, str | None]]:
        if self.data_root is None:
            raise FileNotFoundError(
                f"dataset {self.dataset!r}: not a built-in dataset ({SBM_DATASET_NAME}, "
                f"{', '.join(PLANETOID_NAMES.values())}) and no data dir given; pass --data-dir (or env "
                f"LITBENCH_DATA) to a folder holding {self.dataset.lower()}_feat.npy, _adj.npy, _label.npy "
                f"(or {self.dataset.lower()}.zip), optionally under graph_clustering/"
            )
        return require_array_files(self.dataset, self.data_root)

    def load_graph(self) -> Data:
        key = self.dataset.lower()
        if key == SBM_DATASET_NAME:
            graph = generate_attributed_sbm(**self.sbm_kwargs)
        elif key in PLANETOID_NAMES:
            graph = self._load_planetoid(PLANETOID_NAMES[key])
        else:
            self._require_array_files()
            graph = read_array_graph(self.dataset, self.data_root)
        graph.x = graph.x.float()
        if self.normalize_features:
            graph = NormalizeFeatures()(graph)
        return graph

    def setup(self, stage: str | None = None) -> None:
        if self.graph is None:
            self.graph = self.load_graph()
            self.val_nodes = validation_nodes(self.graph.y, val_fraction=self.val_fraction, seed=self.split_seed)

    # -- loaders: the full graph, with the nodes whose labels this split may score -----------------
    def _graph_scored_on(self, mask: torch.Tensor | None) -> DataLoader:
        graph = self._require_graph()
        if mask is not None:
            graph = copy.copy(graph)  # shares the tensors; only the mask differs between splits
            graph.eval_mask = mask
        return self._one_graph_loader(graph)

    def val_dataloader(self) -> DataLoader:
        mask = torch.zeros(self.num_nodes, dtype=torch.bool)
        mask[self.val_nodes] = True
        return self._graph_scored_on(mask)

    def test_dataloader(self) -> DataLoader:
        if not self.has_validation_split:
            return self._graph_scored_on(None)
        mask = torch.ones(self.num_nodes, dtype=torch.bool)
        mask[self.val_nodes] = False
        return self._graph_scored_on(mask)


def validation_nodes(labels: torch.Tensor, *, val_fraction: float, seed: int) -> torch.Tensor:
    """Ids of a class-stratified ``val_fraction`` of the nodes (empty when it is 0)."""
    if val_fraction <= 0:
        return torch.zeros(0, dtype=torch.long)
    node_ids = np.arange(labels.numel())
    val_ids, _ = train_test_split(node_ids, train_size=val_fraction, stratify=labels.cpu().numpy(), random_state=seed)
    return torch.from_numpy(np.sort(val_ids)).long()



def _remove_path(path: Path) -> None:
    import shutil

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
