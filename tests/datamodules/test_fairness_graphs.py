from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.data import Data

from datamodules.fairness_graph_files import _minmax, official_split, read_edge_file, read_fair_graph, similarity_edges
from datamodules.fairness_graphs import FairGraphDataModule, induced_node_subsample, snowball_node_subsample
from tests_support import shared_data_root


def _official_capped_half(labels: np.ndarray, seed: int, label_number: int):
    """The NIFTY/RELIANT loader code, verbatim in spirit: numpy arrays shuffled by python random."""
    random.seed(seed)
    label_idx_0, label_idx_1 = np.where(labels == 0)[0], np.where(labels == 1)[0]
    random.shuffle(label_idx_0)
    random.shuffle(label_idx_1)
    idx_train = np.append(label_idx_0[:min(int(0.5 * len(label_idx_0)), label_number // 2)],
                          label_idx_1[:min(int(0.5 * len(label_idx_1)), label_number // 2)])
    idx_val = np.append(label_idx_0[int(0.5 * len(label_idx_0)):int(0.75 * len(label_idx_0))],
                        label_idx_1[int(0.5 * len(label_idx_1)):int(0.75 * len(label_idx_1))])
    idx_test = np.append(label_idx_0[int(0.75 * len(label_idx_0)):], label_idx_1[int(0.75 * len(label_idx_1)):])
    return idx_train, idx_val, idx_test


def test_official_split_reproduces_the_loader_code():
    labels = (np.random.default_rng(3).random(1234) < 0.3).astype(int)
    for ours, theirs in zip(official_split(labels, rule="capped_half", seed=20, label_number=300),
                            _official_capped_half(labels, seed=20, label_number=300)):
        np.testing.assert_array_equal(ours, theirs)
    train, val, test = official_split(labels, rule="thirty_twenty_fifty", seed=20)
    counts = np.bincount(labels)
    assert len(train) == int(0.3 * counts[0]) + int(0.3 * counts[1])
    assert len(set(train) | set(val) | set(test)) == len(labels)  # 30/20/50 covers every node


def test_similarity_edges_on_a_hand_computed_line():
    # Points 0, 1, 3, 10 on a line. Node 0: nearest d=1 (sim 1/2), threshold 0.6 -> sim > 0.3 <=> d < 2.33: {1}.
    # Node 1: nearest d=1 -> {0} (d=2 to node 2 gives 1/3 > 0.3: also kept). Node 3 (id 2): nearest d=2 (sim 1/3)
    # -> sim > 0.2 <=> d < 4: {1, 0 (d=3)}. Node 10 (id 3): nearest d=7 (1/8) -> d < 12.33: {2, 1 (d=9), 0 (d=10)}.
    edges = {tuple(edge) for edge in similarity_edges(np.array([[0.0], [1.0], [3.0], [10.0]]), threshold=0.6).tolist()}
    assert edges == {(0, 1), (1, 0), (1, 2), (2, 1), (2, 0), (3, 2), (3, 1), (3, 0)}


def test_german_matches_source_md_and_rebuilds_its_edge_file():
    root = shared_data_root("fair_german/german.csv")
    datamodule = FairGraphDataModule("German", data_dir=str(root), cache_dir=None)
    graph, split = read_fair_graph("German", root, cache_root=Path("/nonexistent"))
    assert graph.x.shape == (1000, 27)  # 30 columns - label - OtherLoansAtStore - PurposeOfLoan
    assert graph.y.bincount().tolist() == [300, 700]
    assert graph.sensitive.bincount().tolist() == [690, 310]  # Female = 1
    assert [len(split[part]) for part in ("train", "val", "test")] == [500, 250, 250]
    assert graph.edge_index.size(1) == 44484  # 2 x 21,742 undirected pairs + 1,000 self loops
    assert datamodule.dataset_name == "German"
    # NIFTY built german_edges.txt from the min-max scaled table at t=0.8: we rebuild it exactly.
    table = pd.read_csv(root / "fair_german" / "german.csv")
    table["Gender"] = (table["Gender"] == "Female").astype(int)
    table = table.drop(columns=["GoodCustomer", "OtherLoansAtStore", "PurposeOfLoan"]).astype(float)
    for column in ("LoanAmount", "Age", "LoanDuration"):
        table[column] = _minmax(table[column])
    rebuilt = {tuple(edge) for edge in similarity_edges(table.to_numpy(), threshold=0.8).tolist()}
    shipped = {tuple(edge) for edge in read_edge_file(root / "fair_german" / "german_edges.txt").tolist()}
    assert rebuilt == shipped


def test_bail_matches_source_md_and_paper_edge_count(tmp_path: Path):
    root = shared_data_root("fair_bail/bail.csv")
    datamodule = FairGraphDataModule("bail", data_dir=str(root), cache_dir=str(tmp_path))
    datamodule.setup()
    graph = datamodule.graph
    assert graph.x.shape == (18876, 18)
    assert graph.y.bincount().tolist() == [11772, 7104]
    assert graph.sensitive.bincount().tolist() == [9317, 9559]
    assert graph.edge_index.size(1) == 642616  # the DGL count (symmetrised + self loops) of the paper spec
    assert torch.allclose(graph.x.sum(dim=1), torch.ones(18876), atol=1e-5)  # row-normalised
    assert [int(graph[f"{part}_mask"].sum()) for part in ("train", "val", "test")] == [5662, 3776, 9438]
    assert not (graph.train_mask & graph.test_mask).any()
    assert (tmp_path / "fair_graphs").is_dir()  # the processed cache went to cache_dir
    small = induced_node_subsample(graph, 500, seed=0)
    assert small.num_nodes == 500 and int(small.edge_index.max()) < 500
    assert small.train_mask.sum() + small.val_mask.sum() + small.test_mask.sum() == 500
    # The cpu profile's snowball sample keeps Bail's degree structure; a uniform sample divides it.
    mean_degree = lambda g: g.edge_index.size(1) / g.num_nodes  # noqa: E731 (with self loops)
    uniform = induced_node_subsample(graph, 5000, seed=0)
    snowball = snowball_node_subsample(graph, 5000, ball_size=50, seed=0)
    assert snowball.num_nodes == 5000 and mean_degree(graph) == pytest.approx(34.04, abs=0.01)
    assert mean_degree(uniform) < 10 < 20 < mean_degree(snowball)
    assert abs(float(snowball.y.float().mean() - graph.y.float().mean())) < 0.05  # label rate kept


def test_credit_table_reads_with_a_dropped_in_edge_file(tmp_path: Path):
    root = shared_data_root("fair_credit/credit.csv")
    (tmp_path / "credit").mkdir()
    (tmp_path / "credit" / "credit.csv").symlink_to(root / "fair_credit" / "credit.csv")
    (tmp_path / "credit" / "credit_edges.txt").write_text("0 1\n1 2\n29999 0\n")  # a user's own edge file
    graph, split = read_fair_graph("Credit", tmp_path, cache_root=tmp_path)
    assert graph.x.shape == (30000, 13)  # 15 columns - label - Single
    assert graph.y.bincount().tolist() == [6636, 23364]
    assert graph.sensitive.bincount().tolist() == [27315, 2685]
    assert [len(split[part]) for part in ("train", "val", "test")] == [1000, 7500, 7500]
    assert graph.edge_index.size(1) == 30000 + 6
    assert float(graph.x.min()) == -1.0 and float(graph.x.max()) == 1.0


def test_pokec_format_maps_user_ids_and_skips_unlabelled(tmp_path: Path):
    folder = tmp_path / "pokec"
    folder.mkdir()
    pd.DataFrame({"user_id": [10, 20, 30, 40, 50, 60], "region": [0, 1, 0, 1, 0, 1], "age": [20, 30, 40, 50, 60, 70],
                  "I_am_working_in_field": [-1, 0, 1, 2, 0, 1]}).to_csv(folder / "region_job.csv", index=False)
    (folder / "region_job_relationship.txt").write_text("10\t20\n30\t60\n")
    graph, split = read_fair_graph("pokec_z", tmp_path, cache_root=tmp_path)
    assert graph.x.shape == (6, 1)  # user_id, region and the label are not features
    assert graph.y.tolist() == [0, 0, 1, 1, 0, 1]  # -1 (unlabelled) stays out of every split; 2 -> 1
    assert 0 not in set(np.concatenate(list(split.values())).tolist())
    assert {(0, 1), (1, 0), (2, 5)} <= {tuple(e) for e in graph.edge_index.T.tolist()}


def test_missing_files_name_what_to_get(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"bail\.csv.*chirag126/nifty"):
        FairGraphDataModule("Bail", data_dir=str(tmp_path), cache_dir=str(tmp_path)).prepare_data()
    with pytest.raises(ValueError, match="unknown fairness dataset"):
        read_fair_graph("nope", tmp_path, cache_root=tmp_path)


def test_generated_graph_is_biased_and_homophilous():
    datamodule = FairGraphDataModule()
    datamodule.setup()
    graph = datamodule.graph
    sensitive, labels = graph.sensitive, graph.y
    label_gap = labels[sensitive == 1].float().mean() - labels[sensitive == 0].float().mean()
    assert 0.25 < float(label_gap) < 0.55  # synthetic_label_bias = 0.4
    source, target = graph.edge_index[:, graph.edge_index[0] != graph.edge_index[1]]
    assert 0.7 < float((labels[source] == labels[target]).float().mean()) < 0.9  # homophily 0.8
    assert 0.7 < float((sensitive[source] == sensitive[target]).float().mean()) < 0.9
    assert graph.x.shape == (400, 19) and torch.equal(graph.x[:, 16].long(), sensitive)  # s sits before 2 noise columns
    assert int(graph.train_mask.sum()) == 199 or int(graph.train_mask.sum()) == 200


def _path_graph(num_nodes: int) -> Data:
    line = torch.arange(num_nodes - 1)
    edge_index = torch.cat([torch.stack([line, line + 1]), torch.stack([line + 1, line]),
                            torch.arange(num_nodes).repeat(2, 1)], dim=1)
    return Data(x=torch.arange(num_nodes).float().unsqueeze(1), edge_index=edge_index, y=torch.arange(num_nodes))


def test_snowball_balls_are_connected_and_capped():
    graph = _path_graph(100)
    # One ball of 10 on a path is a run of 10 consecutive nodes (BFS grows both ways from its root).
    ball = snowball_node_subsample(graph, 10, ball_size=10, seed=3)
    assert ball.y.tolist() == list(range(int(ball.y[0]), int(ball.y[0]) + 10))
    assert ball.edge_index.size(1) == 9 * 2 + 10  # the induced path keeps every edge
    # Balls of 5: 20 kept nodes in runs of at most 5 (adjacent balls may touch).
    kept = snowball_node_subsample(graph, 20, ball_size=5, seed=3).y.tolist()
    assert len(kept) == 20 and len(set(kept)) == 20
    assert torch.equal(snowball_node_subsample(graph, 20, ball_size=5, seed=3).y, torch.tensor(kept))  # seeded
    # ball_size 1 degenerates to the first roots of the seeded permutation (a uniform sample).
    roots = snowball_node_subsample(graph, 30, ball_size=1, seed=0)
    assert roots.y.tolist() == sorted(np.random.default_rng(0).permutation(100)[:30].tolist())


def test_subsample_split_keep_and_redraw():
    full = FairGraphDataModule(synthetic_num_nodes=400)
    full.setup()
    for split in ("keep", "redraw"):
        datamodule = FairGraphDataModule(synthetic_num_nodes=400, max_nodes=150, subsample_split=split)
        datamodule.setup()
        graph = datamodule.graph
        assert graph.num_nodes == 150
        if split == "redraw":  # the generated graph's rule (per class 50 / 25 / 25 %) on the subgraph
            expected = official_split(graph.y.numpy(), rule="capped_half", seed=0, label_number=150)
            assert [int(graph[f"{part}_mask"].sum()) for part in ("train", "val", "test")] == [len(ids) for ids in expected]
            assert graph.train_mask.nonzero().flatten().tolist() == sorted(expected[0].tolist())
        else:  # the kept nodes keep their own masks: find each kept node in the full graph by its features
            rows = [int((full.graph.x == row).all(dim=1).nonzero()) for row in graph.x]
            assert torch.equal(graph.train_mask, full.graph.train_mask[rows])
    with pytest.raises(ValueError, match="subsample"):
        FairGraphDataModule(subsample="metis")


def _copy_dataset(name: str, tmp_path: Path) -> Path:
    import shutil

    source = shared_data_root(f"{name}/{name.removeprefix('fair_')}.csv") / name
    shutil.copytree(source, tmp_path / name)
    for path in (tmp_path / name).iterdir():
        path.chmod(0o644)
    return tmp_path


@pytest.mark.parametrize(("dataset", "file_name", "damage", "message"), [
    ("fair_german", "german_edges.txt", "half the lines", "is not the published file"),  # trained silently before
    ("fair_german", "german.csv", "empty", "is not the published file"),
    ("fair_bail", "bail_edges.txt.gz", "truncated gzip", "cannot be read"),
    ("fair_credit", "credit.csv", "garbled bytes", "is not the published file"),
])
def test_damaged_nifty_files_stop_prepare_data_with_one_line(tmp_path: Path, dataset: str, file_name: str,
                                                             damage: str, message: str) -> None:
    root = _copy_dataset(dataset, tmp_path)
    path = root / dataset / file_name
    data = path.read_bytes()
    if damage == "half the lines":
        lines = data.splitlines(keepends=True)
        path.write_bytes(b"".join(lines[: len(lines) // 2]))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated gzip":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(data[:100] + b"\xff\xfe\x00garbage" + data[110:])
    datamodule = FairGraphDataModule(dataset=dataset.removeprefix("fair_").capitalize(), data_dir=str(root),
                                     cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError) as error:
        datamodule.prepare_data()
    assert message in str(error.value) and file_name in str(error.value) and "\n" not in str(error.value)
    assert "NIFTY" in str(error.value)


def test_an_unknown_csv_that_does_not_parse_names_the_file(tmp_path: Path) -> None:
    from datamodules.fairness_graph_files import read_feature_table

    (tmp_path / "x.csv").write_bytes(b"a,b\n1,2,3,4\n\xff\xfe")
    with pytest.raises(ValueError, match="x.csv cannot be read as a NIFTY csv"):
        read_feature_table(tmp_path / "x.csv")


# -- the presets and your own graph: one description (FairDatasetFormat) -------------------------
def test_presets_are_descriptions_and_graph_format_overrides_them() -> None:
    from dataclasses import replace

    from datamodules.fairness_graph_files import FORMATS, resolve_format

    assert resolve_format("Bail") == FORMATS["bail"] == resolve_format("recidivism")
    assert resolve_format("Bail", {"split_seed": 3}) == replace(FORMATS["bail"], split_seed=3)
    assert FORMATS["german"].protected_value == "Female" and FORMATS["pokec_z"].edge_ids == "id"
    own = resolve_format("mine", {"label": "y", "sensitive": "s", "drop": ["note"]})
    assert (own.key, own.table_name, own.edge_name, own.folders, own.drop) == \
        ("mine", "mine.csv", "mine_edges.txt", ("fair_mine", "mine"), ("note",))


@pytest.mark.parametrize("description, message", [
    (None, r"unknown fairness dataset 'mine' and no description of it: the presets are fair-sbm-synthetic, German"),
    ({"label": "y"}, r"missing sensitive"),
    ({"label": "y", "sensitive": "s", "colour": "red"}, r"unknown field\(s\) colour"),
    ({"label": "y", "sensitive": "s", "split": "random"}, r"split must be one of capped_half"),
    ({"label": "y", "sensitive": "s", "edge_ids": "id"}, r"edge_ids='id' needs id_column"),
])
def test_an_incomplete_description_is_one_line(description, message) -> None:
    with pytest.raises(ValueError, match=message) as error:
        FairGraphDataModule("mine", graph_format=description)
    assert "\n" not in str(error.value)


def test_own_graph_with_ids_text_sensitive_and_its_own_file_names(tmp_path: Path) -> None:
    folder = tmp_path / "loans"
    folder.mkdir()
    pd.DataFrame({"uid": [7, 3, 9, 4, 5, 8], "amount": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                  "sex": ["F", "M", "f", "M", "F", "M"], "repaid": [1, 0, 1, 1, 0, 0]}).to_csv(
        folder / "table.csv", index=False)
    (folder / "links.tsv").write_text("7\t3\n9\t8\n")
    datamodule = FairGraphDataModule("loans", data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), graph_format={
        "label": "repaid", "sensitive": "sex", "protected_value": "F", "id_column": "uid", "edge_ids": "id",
        "features_file": "table.csv", "edges_file": "links.tsv", "split": "thirty_twenty_fifty"})
    datamodule.setup()
    graph = datamodule.graph
    assert graph.x.shape == (6, 2)  # amount and sex (s stays a feature, as in Bail); uid is an id, not a feature
    assert graph.sensitive.tolist() == [1, 0, 1, 0, 1, 0] and graph.y.tolist() == [1, 0, 1, 1, 0, 0]
    assert {(0, 1), (1, 0), (2, 5), (5, 2)} <= {tuple(e) for e in graph.edge_index.T.tolist()}
    assert datamodule.dataset_name == "loans"


def test_text_sensitive_column_without_protected_value_names_the_fix(tmp_path: Path) -> None:
    (tmp_path / "g").mkdir()
    pd.DataFrame({"a": [0.0, 1.0], "s": ["x", "y"], "y": [0, 1]}).to_csv(tmp_path / "g" / "g.csv", index=False)
    (tmp_path / "g" / "g_edges.txt").write_text("0 1\n")
    with pytest.raises(ValueError, match="protected_value"):
        read_fair_graph("g", tmp_path, tmp_path, FairGraphDataModule("g", graph_format={"label": "y", "sensitive": "s"}).format)
