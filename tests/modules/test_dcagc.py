from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from datamodules.graphs import AttributedGraphDataModule
from modules.dcagc.clustering import cluster_accuracy
from modules.dcagc import DCAGC, GAEKMeans, cluster_self_expression, official_threshold, threshold_coefficients
from modules.dcagc.losses import (
    coefficient_regulariser,
    contrastive_self_expression_loss,
    dual_contrastive_losses,
    embedding_nearest_neighbours,
    feature_reconstruction_loss,
    neighbourhood_contrast_loss,
)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


# -- losses against direct loop computations ------------------------------------------------------
def test_contrastive_self_expression_loss_matches_loop():
    generator = torch.Generator().manual_seed(0)
    embeddings, expressed = torch.randn(5, 3, generator=generator), torch.randn(5, 3, generator=generator)
    tau = 0.7

    def one_direction(u, v, i):
        theta = lambda a, b: math.exp(_cosine(a, b) / tau)  # noqa: E731
        denominator = sum(theta(u[i], v[j]) for j in range(5)) + sum(theta(u[i], u[j]) for j in range(5) if j != i)
        return -math.log(theta(u[i], v[i]) / denominator)

    expected = sum(one_direction(embeddings, expressed, i) + one_direction(expressed, embeddings, i)
                   for i in range(5)) / (2 * 5)
    assert float(contrastive_self_expression_loss(embeddings, expressed, tau)) == pytest.approx(expected, rel=1e-5)


def test_neighbourhood_contrast_loss_matches_loop():
    generator = torch.Generator().manual_seed(1)
    embeddings = torch.randn(6, 4, generator=generator)
    neighbours = torch.tensor([[1, 2], [0, 3], [4, 5], [1, 0], [5, 2], [4, 3]])
    tau = 0.5
    expected = 0.0
    for i in range(6):
        numerator = sum(math.exp(_cosine(embeddings[i], embeddings[j]) / tau) for j in neighbours[i].tolist())
        denominator = sum(math.exp(_cosine(embeddings[i], embeddings[j]) / tau) for j in range(6) if j != i)
        expected += -math.log(numerator / denominator) / 6
    assert float(neighbourhood_contrast_loss(embeddings, neighbours, tau)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("tau_neighbours", [0.7, 0.4])  # shared s(H, H) when τ = τ_n, separate otherwise
def test_fused_dual_contrastive_losses_equal_the_separate_ones(tau_neighbours):
    generator = torch.Generator().manual_seed(2)
    embeddings, expressed = torch.randn(9, 4, generator=generator), torch.randn(9, 4, generator=generator)
    neighbours = embedding_nearest_neighbours(embeddings, 3)
    fused = dual_contrastive_losses(embeddings, expressed, neighbours, tau=0.7, tau_neighbours=tau_neighbours)
    assert float(fused["instance"]) == pytest.approx(float(contrastive_self_expression_loss(embeddings, expressed, 0.7)), rel=1e-6)
    assert float(fused["neighbour"]) == pytest.approx(float(neighbourhood_contrast_loss(embeddings, neighbours, tau_neighbours)),
                                                      rel=1e-6)
    assert set(dual_contrastive_losses(embeddings, expressed, None, tau=1.0, tau_neighbours=1.0)) == {"instance"}
    assert set(dual_contrastive_losses(embeddings, expressed, neighbours, tau=1.0, tau_neighbours=1.0,
                                       instance=False)) == {"neighbour"}


def test_nearest_neighbours_exclude_self_even_with_ties():
    embeddings = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [3.5, 0.0]])
    neighbours = embedding_nearest_neighbours(embeddings, num_neighbours=2)
    # Nodes 0 and 1 coincide: each must get the other, never itself.
    assert [sorted(row) for row in neighbours.tolist()] == [[1, 2], [0, 2], [0, 1], [2, 4], [2, 3]]
    assert not (neighbours == torch.arange(5)[:, None]).any()


def test_sum_losses():
    coefficients = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    assert float(coefficient_regulariser(coefficients)) == pytest.approx(1 + 4 + 0.25)
    assert float(feature_reconstruction_loss(torch.ones(2, 3), torch.zeros(2, 3))) == pytest.approx(6.0)


# -- DSC-Net post-processing -----------------------------------------------------------------------
def test_threshold_rule_and_thrc_on_hand_computed_matrix():
    assert official_threshold(7) == pytest.approx(0.34) and official_threshold(6) == pytest.approx(0.35)
    assert official_threshold(40) == pytest.approx(0.1)
    coefficients = np.array([[4.0, -1.0, 1.0, 0.0],
                             [3.0, 6.0, -2.0, 0.0],
                             [1.0, 1.0, 0.0, 0.0]])
    # rho=0.5. col 0: total 8, 4 is not > 4, 4+3 > 4 -> keep {4, 3}. col 1: 6 > 4 -> keep {6}.
    # col 2: total 3, |-2| > 1.5 -> keep {-2}. col 3 is all zero and stays zero.
    expected = np.array([[4.0, 0.0, 0.0, 0.0],
                         [3.0, 6.0, -2.0, 0.0],
                         [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(threshold_coefficients(coefficients, 0.5), expected)
    np.testing.assert_array_equal(threshold_coefficients(coefficients, 1.0), coefficients)


def test_thrc_matches_column_loop_on_random_matrix():
    rng = np.random.default_rng(0)
    coefficients = rng.normal(size=(30, 30))
    expected = np.zeros_like(coefficients)
    for column in range(30):
        magnitude = np.abs(coefficients[:, column])
        kept_mass = 0.0
        for row in np.argsort(-magnitude):
            expected[row, column] = coefficients[row, column]
            kept_mass += magnitude[row]
            if kept_mass > 0.34 * magnitude.sum():
                break
    np.testing.assert_array_equal(threshold_coefficients(coefficients, 0.34), expected)


def test_post_processing_recovers_block_diagonal_self_expression():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    coefficients = (labels[:, None] == labels[None, :]) * rng.uniform(0.5, 1.0, size=(60, 60))
    coefficients += rng.uniform(0.0, 0.05, size=(60, 60))
    predicted = cluster_self_expression(coefficients, 3, subspace_dim=2, power=8, threshold=0.35, random_state=0)
    assert cluster_accuracy(labels, predicted) == 1.0


# -- model ---------------------------------------------------------------------------------------
def test_model_shapes_init_and_lazy_build_guard():
    model = DCAGC(hidden=8, num_nodes=12, num_features=5, num_clusters=3)
    assert torch.all(model.coefficients == 1e-8) and model.coefficients.shape == (12, 12)
    assert [conv.out_channels for conv in model.encoder.convs] == [16, 8]
    assert [conv.out_channels for conv in model.decoder.convs] == [16, 5]
    assert model.encoder.activation is not model.decoder.activation
    coefficients = model.coefficients
    model.configure_model()  # already built: must not replace the parameters
    assert model.coefficients is coefficients
    embeddings, expressed, reconstruction = model(torch.rand(12, 5), torch.tensor([[0, 1, 2], [1, 2, 0]]))
    assert embeddings.shape == expressed.shape == (12, 8) and reconstruction.shape == (12, 5)
    zero_diagonal = DCAGC(hidden=8, num_nodes=4, num_features=3, num_clusters=2, zero_diagonal=True)
    assert torch.all(zero_diagonal.self_expression_matrix().diagonal() == 0)


def test_ablation_weight_zero_drops_the_term():
    graph = AttributedGraphDataModule(sbm_num_nodes=40, sbm_num_features=10)
    graph.setup()
    model = DCAGC(hidden=4, num_nodes=40, num_features=10, num_clusters=3, weight_neighbour=0.0)
    terms = model.loss_terms(graph.graph)
    assert set(terms) == {"instance", "coefficient", "reconstruction"}
    assert terms["coefficient"].item() == pytest.approx(40 * 40 * 1e-16, rel=1e-3)


def _trainer(max_epochs: int, tmp_path, check_val_every_n_epoch: int = 1) -> pl.Trainer:
    return pl.Trainer(max_epochs=max_epochs, check_val_every_n_epoch=check_val_every_n_epoch, accelerator="cpu",
                      logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=tmp_path)


def test_tiny_dcagc_learns_better_than_chance_and_reuses_last_clustering(tmp_path, monkeypatch):
    pl.seed_everything(0, verbose=False)
    datamodule = AttributedGraphDataModule(sbm_num_nodes=150, sbm_num_features=60, sbm_homophily=0.8,
                                           sbm_feature_signal=0.5)
    model = DCAGC(hidden=32, lr=1e-2)
    trainer = _trainer(max_epochs=30, tmp_path=tmp_path, check_val_every_n_epoch=10)
    trainer.fit(model, datamodule=datamodule)
    assert sorted(model.clusterings) == [10, 20, 30]
    # The official protocol holds out no validation labels, so validation only clusters.
    assert "val/acc" not in trainer.callback_metrics

    calls = []
    original_cluster = model.cluster
    monkeypatch.setattr(model, "cluster", lambda k: calls.append(k) or original_cluster(k))
    (results,) = trainer.test(model, datamodule=datamodule, verbose=False)
    assert calls == []  # epoch 30 was just clustered in validation: C unchanged, result reused
    assert set(results) == {"test/acc", "test/nmi", "test/ari", "test/f1", "test/clusters_found", "test/majority_share",
                            "test/acc_label_selected", "test/nmi_label_selected", "test/ari_label_selected"}
    assert results["test/acc"] == pytest.approx(cluster_accuracy(datamodule.graph.y, model.clusterings[30]))
    assert results["test/clusters_found"] == 3
    # Chance ACC for 3 balanced classes of 50 is about 0.4.
    assert results["test/acc"] > 0.7 and results["test/nmi"] > 0.3
    for name in ("acc", "nmi", "ari"):
        assert results[f"test/{name}_label_selected"] >= results[f"test/{name}"] - 1e-6


def test_test_step_clusters_when_no_validation_ran(tmp_path, monkeypatch):
    pl.seed_everything(0, verbose=False)
    datamodule = AttributedGraphDataModule(sbm_num_nodes=60, sbm_num_features=20)
    model = DCAGC(hidden=8, lr=1e-2)
    trainer = _trainer(max_epochs=3, tmp_path=tmp_path, check_val_every_n_epoch=100)
    trainer.fit(model, datamodule=datamodule)
    calls = []
    original_cluster = model.cluster
    monkeypatch.setattr(model, "cluster", lambda k: calls.append(k) or original_cluster(k))
    (results,) = trainer.test(model, datamodule=datamodule, verbose=False)
    assert calls == [3]
    # Only one clustering happened, so the label-selected values are the final ones.
    for name in ("acc", "nmi", "ari"):
        assert results[f"test/{name}_label_selected"] == pytest.approx(results[f"test/{name}"])
    # The lazily built layers come back from a checkpoint, with the clusterings kept for the
    # label-selected protocol.
    trainer.save_checkpoint(tmp_path / "dcagc.ckpt")
    restored = DCAGC.load_from_checkpoint(tmp_path / "dcagc.ckpt")
    assert torch.equal(restored.coefficients, model.coefficients)
    assert list(restored.clusterings) == [3]
    assert np.array_equal(restored.clusterings[3], model.clusterings[3])


def test_validation_and_test_score_disjoint_nodes_of_one_clustering(tmp_path):
    """With val_fraction the same clustering of every node is scored on the validation nodes in
    validation and on the others in test; label-selected values come from the test nodes only."""
    pl.seed_everything(0, verbose=False)
    datamodule = AttributedGraphDataModule(sbm_num_nodes=150, sbm_num_features=60, sbm_homophily=0.8,
                                           sbm_feature_signal=0.5, val_fraction=0.4)
    model = DCAGC(hidden=16, lr=1e-2)
    trainer = _trainer(max_epochs=20, tmp_path=tmp_path, check_val_every_n_epoch=10)
    trainer.fit(model, datamodule=datamodule)
    assert sorted(model.clusterings) == [10, 20]
    val_acc = float(trainer.callback_metrics["val/acc"])
    (results,) = trainer.test(model, datamodule=datamodule, verbose=False)
    predicted, labels = model.clusterings[20], datamodule.graph.y.numpy()
    val_nodes = datamodule.val_nodes.numpy()
    test_nodes = np.setdiff1d(np.arange(150), val_nodes)
    assert val_acc == pytest.approx(cluster_accuracy(labels[val_nodes], predicted[val_nodes]))
    assert results["test/acc"] == pytest.approx(cluster_accuracy(labels[test_nodes], predicted[test_nodes]))
    best_test_acc = max(cluster_accuracy(labels[test_nodes], model.clusterings[step][test_nodes]) for step in (10, 20))
    assert results["test/acc_label_selected"] == pytest.approx(best_test_acc)


def test_gae_kmeans_learns_better_than_chance(tmp_path):
    pl.seed_everything(0, verbose=False)
    datamodule = AttributedGraphDataModule()
    model = GAEKMeans()
    trainer = _trainer(max_epochs=100, tmp_path=tmp_path)
    trainer.limit_val_batches = 0
    trainer.fit(model, datamodule=datamodule)
    (results,) = trainer.test(model, datamodule=datamodule, verbose=False)
    assert set(results) == {"test/acc", "test/nmi", "test/ari", "test/f1", "test/clusters_found", "test/majority_share"}
    assert results["test/acc"] > 0.6 and results["test/ari"] > 0.2
