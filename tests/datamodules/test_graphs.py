from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

from datamodules.graphs import AttributedGraphDataModule, generate_attributed_sbm

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shared_data_dir() -> Path:
    data_dir = Path(os.environ.get("LITBENCH_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not (data_dir / "planetoid").is_dir():
        reason = f"shared test data not found at {data_dir / 'planetoid'} (set LITBENCH_TEST_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + "; CI=true requires it")
        pytest.skip(reason)
    return data_dir


def _edge_set(edge_index: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, edge_index.t().tolist()))


# -- Planetoid (real files from ../shared/data) -------------------------------------------------
PLANETOID_EXPECTED = {
    # name: (nodes, features, classes, directed edge entries, per-class node counts)
    "Cora": (2708, 1433, 7, 10556, [351, 217, 418, 818, 426, 298, 180]),
    "CiteSeer": (3327, 3703, 6, 9104, [264, 590, 668, 701, 596, 508]),
}


@pytest.mark.parametrize("dataset_name", ["Cora", "CiteSeer"])
def test_planetoid_shapes_match_source(dataset_name, shared_data_dir, tmp_path):
    num_nodes, num_features, num_classes, num_edges, class_counts = PLANETOID_EXPECTED[dataset_name]
    datamodule = AttributedGraphDataModule(dataset=dataset_name.lower(), data_dir=str(shared_data_dir),
                                           cache_dir=str(tmp_path / "cache"))
    datamodule.prepare_data()
    datamodule.setup("fit")
    graph = datamodule.graph
    assert datamodule.dataset_name == dataset_name
    assert (datamodule.num_nodes, datamodule.num_features, datamodule.num_classes) == (
        num_nodes, num_features, num_classes)
    assert graph.x.shape == (num_nodes, num_features) and graph.x.dtype == torch.float32
    assert graph.edge_index.shape == (2, num_edges)
    assert graph.y.dtype == torch.long and torch.bincount(graph.y).tolist() == class_counts
    assert graph.is_undirected() and not graph.has_self_loops()
    row_sums = graph.x.sum(dim=1)
    # CiteSeer's 15 isolated test ids have no feature row: they stay all-zero.
    assert int((row_sums == 0).sum()) == (15 if dataset_name == "CiteSeer" else 0)
    assert torch.allclose(row_sums[row_sums > 0], torch.ones(1), atol=1e-5)


def test_planetoid_cache_is_written_outside_the_data_dir(shared_data_dir, tmp_path):
    source_raw = shared_data_dir / "planetoid" / "Cora" / "raw"
    listing_before = sorted(path.name for path in (shared_data_dir / "planetoid" / "Cora").iterdir())
    cache_dir = tmp_path / "cache"
    datamodule = AttributedGraphDataModule(dataset="Cora", data_dir=str(shared_data_dir), cache_dir=str(cache_dir))
    datamodule.setup()
    cached_raw = cache_dir / "planetoid" / "Cora" / "raw"
    assert cached_raw.is_symlink() and cached_raw.resolve() == source_raw.resolve()
    assert any((cache_dir / "planetoid" / "Cora" / "processed").iterdir())
    assert sorted(path.name for path in (shared_data_dir / "planetoid" / "Cora").iterdir()) == listing_before
    # A second datamodule reuses the processed cache and sees the same graph.
    again = AttributedGraphDataModule(dataset="Cora", data_dir=str(shared_data_dir), cache_dir=str(cache_dir))
    again.setup()
    assert torch.equal(again.graph.edge_index, datamodule.graph.edge_index)


def test_planetoid_pyg_layout_and_env_defaults(shared_data_dir, tmp_path, monkeypatch):
    pyg_root = tmp_path / "pyg_root"
    (pyg_root / "Cora").mkdir(parents=True)
    (pyg_root / "Cora" / "raw").symlink_to(shared_data_dir / "planetoid" / "Cora" / "raw")
    monkeypatch.setenv("LITBENCH_DATA", str(pyg_root))
    monkeypatch.setenv("LITBENCH_CACHE", str(tmp_path / "env_cache"))
    datamodule = AttributedGraphDataModule(dataset="CORA")
    datamodule.setup()
    assert datamodule.num_nodes == 2708
    assert (tmp_path / "env_cache" / "planetoid" / "Cora" / "processed").is_dir()


def test_missing_planetoid_files_raise_one_line_error(tmp_path):
    datamodule = AttributedGraphDataModule(dataset="CiteSeer", data_dir=str(tmp_path / "empty"),
                                           cache_dir=str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError) as error:
        datamodule.setup()
    message = str(error.value)
    assert "\n" not in message
    for expected in ("ind.citeseer.x", "ind.citeseer.test.index", "planetoid/CiteSeer/raw",
                     "data.init_args.download=true", "--data-dir", "kimiyoung/planetoid"):
        assert expected in message


def test_download_goes_into_the_cache(shared_data_dir, tmp_path, monkeypatch):
    from torch_geometric.datasets import Planetoid

    def fake_download(dataset):  # stands in for PyG's fetch from the Planetoid GitHub release
        for file_name in dataset.raw_file_names:
            shutil.copy(shared_data_dir / "planetoid" / "Cora" / "raw" / file_name, dataset.raw_dir)

    monkeypatch.setattr(Planetoid, "download", fake_download)
    datamodule = AttributedGraphDataModule(dataset="Cora", data_dir=str(tmp_path / "empty"),
                                           cache_dir=str(tmp_path / "cache"), download=True)
    datamodule.setup()
    cached_raw = tmp_path / "cache" / "planetoid" / "Cora" / "raw"
    assert datamodule.num_nodes == 2708 and cached_raw.is_dir() and not cached_raw.is_symlink()
    assert (cached_raw / "ind.cora.graph").is_file()


def test_failed_download_is_a_one_line_error(tmp_path, monkeypatch):
    from torch_geometric.datasets import Planetoid

    def unreachable(dataset):
        raise OSError("[Errno 101] Network is unreachable\n(offline)")

    monkeypatch.setattr(Planetoid, "download", unreachable)
    monkeypatch.delenv("LITBENCH_DATA", raising=False)
    datamodule = AttributedGraphDataModule(dataset="PubMed", cache_dir=str(tmp_path / "cache"), download=True)
    with pytest.raises(RuntimeError) as error:
        datamodule.setup()
    message = str(error.value)
    assert "\n" not in message and "Network is unreachable" in message and "--data-dir" in message


@pytest.mark.parametrize("hook", ["prepare_data", "setup"])
def test_missing_array_dataset_raises_one_line_error(tmp_path, hook):
    """prepare_data (the pre-run check) already knows: a misspelt name like 'Coraa' stops before any run."""
    datamodule = AttributedGraphDataModule(dataset="acm", data_dir=str(tmp_path), cache_dir=str(tmp_path / "c"))
    with pytest.raises(FileNotFoundError) as error:
        getattr(datamodule, hook)()
    message = str(error.value)
    assert "\n" not in message
    assert "acm_feat.npy" in message and "acm_adj.npy" in message and "acm.zip" in message
    assert "Cora" in message  # the built-in names, for a misspelt one


# -- deep-graph-clustering array format ------------------------------------------------------------
def _small_array_dataset() -> dict[str, np.ndarray]:
    features = np.array([[1, 1, 0], [0, 2, 0], [0, 0, 3], [1, 0, 1]], dtype=np.float64)
    adjacency = np.zeros((4, 4), dtype=np.int64)
    adjacency[0, 1] = 1  # only one direction stored: must be symmetrised
    adjacency[2, 3] = adjacency[3, 2] = 1
    adjacency[1, 1] = 1  # self loop: must be dropped
    labels = np.array([5, 5, 9, 9])  # arbitrary ids: must become 0..K-1
    return {"feat": features, "adj": adjacency, "label": labels}


def _check_small_array_graph(datamodule: AttributedGraphDataModule) -> None:
    datamodule.setup()
    graph = datamodule.graph
    assert (datamodule.num_nodes, datamodule.num_features, datamodule.num_classes) == (4, 3, 2)
    assert _edge_set(graph.edge_index) == {(0, 1), (1, 0), (2, 3), (3, 2)}
    assert graph.y.tolist() == [0, 0, 1, 1]
    expected_features = torch.tensor([[0.5, 0.5, 0], [0, 1, 0], [0, 0, 1], [0.5, 0, 0.5]])
    assert torch.allclose(graph.x, expected_features)


def test_array_format_plain_files(tmp_path):
    folder = tmp_path / "graph_clustering"
    folder.mkdir()
    for part, array in _small_array_dataset().items():
        np.save(folder / f"toy_{part}.npy", array)
    _check_small_array_graph(AttributedGraphDataModule(dataset="TOY", data_dir=str(tmp_path),
                                                       cache_dir=str(tmp_path / "cache")))


def test_array_format_zip_with_one_hot_labels(tmp_path):
    arrays = _small_array_dataset()
    arrays["label"] = np.eye(2, dtype=np.int64)[[0, 0, 1, 1]]
    staging = tmp_path / "staging"
    staging.mkdir()
    folder = tmp_path / "graph_clustering" / "toy"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "toy.zip", "w") as archive:
        for part, array in arrays.items():
            np.save(staging / f"toy_{part}.npy", array)
            archive.write(staging / f"toy_{part}.npy", arcname=f"toy/toy_{part}.npy")
    _check_small_array_graph(AttributedGraphDataModule(dataset="toy", data_dir=str(tmp_path),
                                                       cache_dir=str(tmp_path / "cache")))


def test_features_kept_raw_when_normalisation_is_off(tmp_path):
    arrays = _small_array_dataset()
    arrays["label"] = arrays["label"].reshape(-1, 1)  # a column of ids is not one-hot
    for part, array in arrays.items():
        np.save(tmp_path / f"toy_{part}.npy", array)
    datamodule = AttributedGraphDataModule(dataset="toy", data_dir=str(tmp_path), normalize_features=False)
    datamodule.setup()
    assert datamodule.graph.x[2].tolist() == [0.0, 0.0, 3.0]
    assert datamodule.graph.y.tolist() == [0, 0, 1, 1]


# -- synthetic SBM ---------------------------------------------------------------------------
def test_sbm_default_shapes_and_statistics():
    datamodule = AttributedGraphDataModule()
    datamodule.setup()
    graph = datamodule.graph
    assert datamodule.dataset_name == "sbm-synthetic"
    assert (datamodule.num_nodes, datamodule.num_features, datamodule.num_classes) == (300, 100, 3)
    assert torch.bincount(graph.y).tolist() == [100, 100, 100]
    assert graph.is_undirected() and not graph.has_self_loops()
    source, target = graph.edge_index
    intra_block_fraction = (graph.y[source] == graph.y[target]).float().mean().item()
    assert abs(intra_block_fraction - 0.7) < 0.06
    assert abs(graph.edge_index.size(1) / 300 - 6.0) < 0.8  # average degree
    assert torch.allclose(graph.x.sum(dim=1), torch.ones(300), atol=1e-5)


def test_sbm_is_seeded_and_features_carry_class_signal():
    kwargs = dict(num_nodes=200, num_classes=4, num_features=40, average_degree=5.0, homophily=0.8,
                  feature_signal=0.6, words_per_node=10)
    first, second = generate_attributed_sbm(seed=3, **kwargs), generate_attributed_sbm(seed=3, **kwargs)
    other = generate_attributed_sbm(seed=4, **kwargs)
    assert torch.equal(first.x, second.x) and torch.equal(first.edge_index, second.edge_index)
    assert not torch.equal(first.x, other.x)
    assert set(first.x.unique().tolist()) == {0.0, 1.0}
    # Words of topic block c (features 10c..10c+9) are most frequent in class c.
    topic_counts = torch.stack([first.x[first.y == c].view(-1, 4, 10).sum(dim=(0, 2)) for c in range(4)])
    assert topic_counts.argmax(dim=1).tolist() == [0, 1, 2, 3]


def test_every_loader_yields_the_full_graph_once_and_on_every_ddp_rank():
    datamodule = AttributedGraphDataModule(sbm_num_nodes=60, sbm_num_features=20)
    datamodule.setup()
    assert not datamodule.has_validation_split
    for loader in (datamodule.train_dataloader(), datamodule.val_dataloader(), datamodule.test_dataloader()):
        batches = list(loader)
        assert len(batches) == 1 and torch.equal(batches[0].x, datamodule.graph.x)
    # The official protocol scores every node in test; there are no validation labels.
    assert "eval_mask" not in next(iter(datamodule.test_dataloader()))
    assert not next(iter(datamodule.val_dataloader())).eval_mask.any()
    # Lightning swaps in a DistributedSampler under DDP; with one item each rank still gets it.
    dataset = datamodule.train_dataloader().dataset
    for rank in (0, 1):
        assert list(DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=False)) == [0]


def test_shape_before_setup_is_a_clear_error():
    with pytest.raises(RuntimeError, match="setup"):
        _ = AttributedGraphDataModule().num_nodes


@pytest.mark.parametrize("dataset_name", ["Cora", "CiteSeer"])
def test_label_split_is_stratified_disjoint_and_the_same_for_every_run(dataset_name, shared_data_dir, tmp_path):
    """val_fraction holds out a class-stratified share of the labels for calibration; the graph
    itself (every node, every edge) is the same in every loader."""
    def split(**kwargs):
        datamodule = AttributedGraphDataModule(dataset=dataset_name, data_dir=str(shared_data_dir),
                                               cache_dir=str(tmp_path / "cache"), val_fraction=0.3, **kwargs)
        datamodule.setup()
        return datamodule, next(iter(datamodule.val_dataloader())), next(iter(datamodule.test_dataloader()))

    datamodule, val_graph, test_graph = split()
    num_nodes, _, _, num_edges, class_counts = PLANETOID_EXPECTED[dataset_name]
    assert datamodule.has_validation_split
    assert not (val_graph.eval_mask & test_graph.eval_mask).any() and (val_graph.eval_mask | test_graph.eval_mask).all()
    assert int(val_graph.eval_mask.sum()) == round(0.3 * num_nodes)
    val_counts = torch.bincount(val_graph.y[val_graph.eval_mask], minlength=len(class_counts))
    assert torch.allclose(val_counts.double(), 0.3 * torch.tensor(class_counts).double(), atol=1.0)  # stratified
    assert val_graph.edge_index.shape == test_graph.edge_index.shape == (2, num_edges)
    assert torch.equal(split()[1].eval_mask, val_graph.eval_mask)  # fixed split_seed: the same nodes
    assert not torch.equal(split(split_seed=1)[1].eval_mask, val_graph.eval_mask)


def test_val_fraction_out_of_range_is_a_clear_error():
    with pytest.raises(ValueError, match="val_fraction"):
        AttributedGraphDataModule(val_fraction=1.0)
