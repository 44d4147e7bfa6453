from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from datamodules.fairness_graphs import FairGraphDataModule
from modules.reliant import FairDistillationStudent, GNNTeacher
from modules.reliant.blocks import PLP, PLPConv, distillation_l2_loss, fairness_surrogate_loss, legendre_step_surrogate


def _official_approx_func(s: torch.Tensor) -> torch.Tensor:
    """``approx_func`` of the official distill_dgl.py, expanded polynomials as written there."""
    x = 2 * s - 1
    return (1 / 2 + 1 / 2 * x - 1 / 8 / 2 * (5 * x**3 - 3 * x) + 1 / 16 / 8 * (63 * x**5 - 70 * x**3 + 15 * x)
            - 5 / 128 / 16 * (429 * x**7 - 693 * x**5 + 315 * x**3 - 35 * x)
            + 7 / 256 / 128 * (12155 * x**9 - 25740 * x**7 + 18018 * x**5 - 4620 * x**3 + 315 * x))


def test_legendre_surrogate_values_and_gradient():
    points = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    # Paper spec: f(0)=0.074, f(.25)=0.206, f(.5)=0.5, f(1)=0.926; f(1) = 1 - 1/8 + 1/16 - 5/128 + 7/256 exactly.
    assert legendre_step_surrogate(points).tolist() == pytest.approx([0.0742, 0.2057, 0.5, 0.9258], abs=1e-4)
    assert float(legendre_step_surrogate(torch.tensor(1.0, dtype=torch.float64))) == pytest.approx(237 / 256)
    grid = torch.linspace(0, 1, 101, dtype=torch.float64, requires_grad=True)
    assert torch.allclose(legendre_step_surrogate(grid), _official_approx_func(grid), atol=1e-12)
    legendre_step_surrogate(grid).sum().backward()  # differentiable (torch.special's P_k is not)
    assert grid.grad is not None and bool((grid.grad > 0).all())  # monotone S-curve on [0, 1]


def test_fairness_surrogate_loss_by_hand():
    probabilities = torch.tensor([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0], [0.5, 0.5], [0.25, 0.75]], dtype=torch.float64)
    sensitive = torch.tensor([0, 0, 1, 1, 1])
    nodes = torch.tensor([True, True, True, True, False])  # node 4 is outside V
    f0, fh, f1 = _official_approx_func(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)).tolist()
    # class 0: s=0 mean (f0 + fh)/2, s=1 mean (f1 + fh)/2; class 1 mirrored -> same squared gap twice.
    expected = 2 * ((f0 + fh) / 2 - (f1 + fh) / 2) ** 2
    assert float(fairness_surrogate_loss(probabilities, sensitive, nodes)) == pytest.approx(expected)


def test_distillation_loss_is_the_unsquared_frobenius_norm_on_the_given_nodes():
    student = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    teacher = torch.tensor([[0.6, 0.4], [0.2, 0.8], [0.0, 1.0]])
    nodes = torch.tensor([True, False, True])
    assert float(distillation_l2_loss(student, teacher, nodes)) == pytest.approx(math.sqrt(0.09 * 2 + 0.25 * 2))


def test_plp_propagation_matches_a_loop_and_clamps_train_nodes():
    torch.manual_seed(0)
    edge_index = torch.tensor([[0, 1, 1, 2, 2, 0, 0, 1, 2], [1, 0, 2, 1, 0, 2, 0, 1, 2]])  # triangle + self loops
    features = torch.randn(3, 4)
    labels = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.2, 0.8]])
    conv = PLPConv(num_nodes=3, in_features=4, hidden=5, num_classes=2, feat_drop=0.0, attn_drop=0.0).eval()
    score = features @ conv.attention.detach().squeeze(0)
    mlp = conv.mlp(features).detach()
    expected = torch.zeros(3, 2)
    for target in range(3):  # every node's in-neighbours are all three nodes
        weights = torch.softmax(score, dim=0)
        expected[target] = 0.5 * (weights[:, None] * labels).sum(0) + 0.5 * mlp[target]  # sigma(0) = 1/2
    assert torch.allclose(conv(features, edge_index, labels), expected.relu(), atol=1e-6)

    plp = PLP(num_nodes=3, in_features=4, num_classes=2, num_layers=4, feat_drop=0.0, attn_drop=0.0).eval()
    train_mask = torch.tensor([True, False, False])
    logits = plp(features, edge_index, torch.tensor([1, 0, 1]), train_mask)
    assert logits[0].tolist() == [0.0, 1.0]  # train node keeps its one-hot label


def _fit(module: pl.LightningModule, datamodule: FairGraphDataModule, epochs: int) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu", deterministic=True)
    trainer.fit(module, datamodule=datamodule)
    return trainer


@pytest.mark.parametrize("conv", ["gcn", "sage"])
def test_teacher_follows_its_module_to_a_new_device_or_dtype(conv: str):
    """The GPU runs failed because a CPU-built sparse adjacency (and GCN's cached normalisation)
    stayed behind when the module moved. Without a GPU, a dtype move exercises the same rule: after
    ``.double()`` every tensor forward touches must be float64, and the output must match the
    float32 one, which it cannot if a stale float32 cache is used."""
    datamodule = FairGraphDataModule(synthetic_num_nodes=60)
    datamodule.setup()
    graph = datamodule.graph
    from torch_geometric.nn.models import GCN, GraphSAGE

    teacher = GNNTeacher(conv=conv)
    shared = dict(in_channels=graph.x.size(1), hidden_channels=8, num_layers=2, out_channels=2, dropout=0.0)
    # the layers configure_model builds, without a trainer to read the shape from
    teacher.model = GCN(**shared, cached=True) if conv == "gcn" else GraphSAGE(**shared, aggr="mean", root_weight=False)
    teacher.eval()
    single = teacher(graph)
    teacher.double()
    double_graph = graph.clone()
    double_graph.x = graph.x.double()
    output = teacher(double_graph)
    assert output.dtype == torch.float64
    assert torch.allclose(output.float(), single, atol=1e-5)


@pytest.fixture(scope="module")
def teacher_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    pl.seed_everything(0, verbose=False)
    datamodule = FairGraphDataModule()
    teacher = GNNTeacher(dropout=0.5, patience=100)
    trainer = _fit(teacher, datamodule, epochs=30)
    path = teacher.save_stage_artifact(tmp_path_factory.mktemp("teacher"))
    return path, trainer.test(teacher, datamodule=datamodule, verbose=False)[0]


def test_teacher_learns_and_writes_its_soft_labels(teacher_artifact):
    path, metrics = teacher_artifact
    assert metrics["test/acc"] > 0.75  # chance is ~0.5 on the generated graph
    artifact = torch.load(path, weights_only=True)
    assert artifact["soft_labels"].shape == (400, 2)
    assert torch.allclose(artifact["soft_labels"].sum(1), torch.ones(400), atol=2e-4)  # rounded to 4 decimals


def test_reliant_student_is_fairer_than_the_vanilla_student(teacher_artifact):
    path, teacher_metrics = teacher_artifact
    results = {}
    for name, options in {"vanilla": dict(proxy_mode="none", alpha=0.0),
                          "reliant": dict(proxy_mode="learnable", alpha=1000.0)}.items():
        pl.seed_everything(0, verbose=False)
        datamodule = FairGraphDataModule()
        student = FairDistillationStudent(teacher_path=str(path), num_layers=3, patience=100, **options)
        trainer = _fit(student, datamodule, epochs=15)
        results[name] = trainer.test(student, datamodule=datamodule, verbose=False)[0]
        if name == "reliant":
            # Only the learnable proxy feeds the last two feature columns; it stays a per-node n x 2 tensor.
            assert student.proxy.shape == (400, 2)
    assert results["vanilla"]["test/teacher_agreement"] > 0.8  # the student mimics its teacher
    assert results["vanilla"]["test/acc"] > 0.7
    # The generated graph is strongly biased (ΔSP of the vanilla student ≈ 0.7): RELIANT must cut it.
    assert results["reliant"]["test/sp"] < results["vanilla"]["test/sp"] - 0.1
