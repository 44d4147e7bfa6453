"""LRPET's low-rank maths against hand-computed values, the factorisation's exactness, the ResNet-56
compression numbers of the paper spec, DDP-consistent projection, and the modules on tiny data."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from benchmarks.spec import load_spec
from datamodules.images import ImageClassificationDataModule
from modules.common.classification import count_macs, count_parameters
from modules.lrpet.resnet_cifar import resnet_cifar
from modules.lrpet import LRPET, CifarResNetClassifier, FactorisedFromScratch, SVDTruncation
from modules.lrpet.lowrank import (FactorisedConv2d, conv_ranks, energy_transfer, factorise_network,
                                   factorised_architecture, plain_truncation, project_matrix, project_network,
                                   rank_for_ratio)


def _randomised_batchnorms(network: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BN scales/statistics so that BN rectification actually does something."""
    generator = torch.Generator().manual_seed(seed)
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            module.weight.data = 0.5 + torch.rand(size, generator=generator)
            module.bias.data = 0.1 * torch.randn(size, generator=generator)
            module.running_mean = 0.1 * torch.randn(size, generator=generator)
            module.running_var = 0.5 + torch.rand(size, generator=generator)
    return network


# -- rank rule and singular-value maths -------------------------------------------------------------
def test_rank_rule_matches_the_paper_spec_examples():
    # ResNet-56, p=0.8: 16-channel layers r=3, 32 r=6, 64 r=12, first conv (3->16, m=16) r=3.
    ranks = conv_ranks(resnet_cifar(depth=56), prune_ratio=0.8)
    assert ranks["conv1"] == 3 and ranks["layer1.0.conv1"] == 3
    assert ranks["layer2.0.conv1"] == 6 and ranks["layer2.4.conv2"] == 6
    assert ranks["layer3.0.conv1"] == 12 and ranks["layer3.8.conv2"] == 12
    # CPU profile, p=0.7: 4 / 9 / 19.
    assert [rank_for_ratio(rows=c, columns=9 * c, prune_ratio=0.7) for c in (16, 32, 64)] == [4, 9, 19]
    assert rank_for_ratio(rows=2, columns=2, prune_ratio=0.9) == 1  # clamped (official would give 0)


def test_energy_transfer_hand_computed():
    sigma = torch.tensor([3.0, 2.0, 1.0])
    # rho = 0: alpha = (9+4+1)/(9+4) = 14/13, the tail is dropped.
    root_alpha = math.sqrt(14 / 13)
    torch.testing.assert_close(energy_transfer(sigma, rank=2), torch.tensor([3 * root_alpha, 2 * root_alpha, 0.0]))
    # rho = 0.5: alpha = (14 - 0.25*1)/13, the tail keeps half its value.
    root_alpha = math.sqrt(13.75 / 13)
    torch.testing.assert_close(energy_transfer(sigma, rank=2, residual_factor=0.5),
                               torch.tensor([3 * root_alpha, 2 * root_alpha, 0.5]))
    torch.testing.assert_close(plain_truncation(sigma, rank=2), torch.tensor([3.0, 2.0, 0.0]))


@pytest.mark.parametrize("residual_factor", [0.0, 0.3])
def test_energy_is_preserved_after_transfer(residual_factor):
    sigma = torch.linalg.svdvals(torch.randn(16, 144, generator=torch.Generator().manual_seed(0)))
    transferred = energy_transfer(sigma, rank=4, residual_factor=residual_factor)
    assert float(transferred.norm()) == pytest.approx(float(sigma.norm()), rel=1e-6)


def test_projection_has_rank_r_and_keeps_the_frobenius_norm():
    matrix = torch.randn(32, 288, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    projected = project_matrix(matrix, rank=9)
    assert int(torch.linalg.matrix_rank(projected)) == 9
    assert float(projected.norm()) == pytest.approx(float(matrix.norm()), rel=1e-10)
    # Without energy transfer it is the Eckart-Young best rank-9 approximation: norm of the head only.
    left, sigma, right_t = torch.linalg.svd(matrix, full_matrices=False)
    torch.testing.assert_close(project_matrix(matrix, rank=9, transfer_energy=False),
                               (left[:, :9] * sigma[:9]) @ right_t[:9])


def test_bn_rectification_projects_the_bn_scaled_matrix_and_maps_back():
    generator = torch.Generator().manual_seed(2)
    matrix = torch.randn(8, 27, generator=generator, dtype=torch.float64)
    scale = 0.5 + torch.rand(8, generator=generator, dtype=torch.float64)
    projected = project_matrix(matrix, rank=3, row_scale=scale)
    # diag(a) M_new = a^2/(a^2+1e-5) * P(diag(a) M): the official regularised inverse, by hand.
    expected = (scale.pow(2) / (scale.pow(2) + 1e-5))[:, None] * project_matrix(scale[:, None] * matrix, rank=3)
    torch.testing.assert_close(scale[:, None] * projected, expected)
    assert int(torch.linalg.matrix_rank(projected)) == 3


def test_tiny_layers_are_left_untouched():
    matrix = torch.full((4, 9), 1e-6)
    torch.testing.assert_close(project_matrix(matrix, rank=1), matrix)


# -- factorisation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bn_rectification", [True, False])
def test_factorised_logits_equal_projected_logits(bn_rectification):
    torch.manual_seed(3)
    network = _randomised_batchnorms(resnet_cifar(depth=20), seed=3).eval()
    ranks = conv_ranks(network, prune_ratio=0.7)
    images = torch.randn(8, 3, 32, 32)
    # float64: the paper spec's atol 1e-4 on the maths itself (a float32 projection leaves tail
    # singular values at rounding level, which the factorisation then drops).
    exact = network.double()
    project_network(exact, ranks=ranks, bn_rectification=bn_rectification)
    with torch.no_grad():
        torch.testing.assert_close(factorise_network(exact, ranks=ranks)(images.double()), exact(images.double()),
                                   atol=1e-4, rtol=0)
    # float32 (what training uses), through 20 layers of an untrained net with logits ~10-20.
    network = _randomised_batchnorms(resnet_cifar(depth=20), seed=3).eval()
    project_network(network, ranks=ranks, bn_rectification=bn_rectification)
    factorised = factorise_network(network, ranks=ranks)
    with torch.no_grad():
        torch.testing.assert_close(factorised(images), network(images), atol=1e-4, rtol=1e-4)
    conv = factorised.layer2.get_submodule("0").conv1
    assert isinstance(conv, FactorisedConv2d) and conv.rank == 9 and conv.basis.stride == (2, 2)


def test_factorised_conv_keeps_the_bias():
    conv = nn.Conv2d(4, 6, kernel_size=3, padding=1, bias=True)
    factorised = FactorisedConv2d.from_conv(conv, rank=4)  # full rank (m = 6 > 4? no: m = min(6, 36) = 6)
    full = FactorisedConv2d.from_conv(conv, rank=6)
    images = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(full(images), conv(images), atol=1e-5, rtol=0)
        assert not torch.allclose(factorised(images), conv(images), atol=1e-3)


@pytest.mark.slow
def test_resnet56_compression_at_p08_matches_the_paper_spec():
    dense = resnet_cifar(depth=56)
    ranks = conv_ranks(dense, prune_ratio=0.8)
    factorised = factorise_network(dense, ranks=ranks)
    # Per layer r(C k^2 + N) parameters instead of N C k^2: summed by hand from the rank rule.
    expected_conv_params = sum(ranks[name] * (m.weight[0].numel() + m.out_channels)
                               for name, m in dense.named_modules() if isinstance(m, nn.Conv2d))
    factorised_convs = [m for m in factorised.modules() if isinstance(m, FactorisedConv2d)]
    assert sum(count_parameters(m) for m in factorised_convs) == expected_conv_params
    dense_macs, factorised_macs = count_macs(dense, (1, 3, 32, 32)), count_macs(factorised, (1, 3, 32, 32))
    assert dense_macs / 1e6 == pytest.approx(125.5, abs=0.5)
    assert 1 - factorised_macs / dense_macs == pytest.approx(0.791, abs=0.01)  # "~79.1% fewer FLOPs"
    assert 1 - count_parameters(factorised) / count_parameters(dense) == pytest.approx(0.78, abs=0.02)


def test_the_arm_given_the_readme_resnet56_row_has_that_rows_size():
    # paper_results puts the README's ResNet-56 row (0.39M params / 56.06M FLOPs) on `lrpet_p058`:
    # its configuration must build a network of that size, unlike the full profile's p = 0.8 `lrpet`.
    spec = load_spec(Path(__file__).resolve().parents[2] / "benchmarks" / "specs" / "lrpet.yaml")
    row = spec.paper_results["cifar10"]["lrpet_p058"]
    sizes = {}
    for method in ("lrpet_p058", "lrpet"):
        args = spec.methods[method].init_args
        dense = resnet_cifar(depth=args["depth"])
        factorised = factorised_architecture(dense, ranks=conv_ranks(dense, prune_ratio=args["prune_ratio"]))
        sizes[method] = (count_parameters(factorised) / 1e6, count_macs(factorised, (1, 3, 32, 32)) / 1e6)
    assert sizes["lrpet_p058"][0] == pytest.approx(row["params_m"], abs=0.005)
    assert sizes["lrpet_p058"][1] == pytest.approx(row["macs_m"], rel=0.02)
    assert sizes["lrpet"][1] < 0.5 * row["macs_m"]  # why the row is not `lrpet`'s


# -- the LightningModules on tiny generated data -----------------------------------------------------
def _tiny_data(**overrides) -> ImageClassificationDataModule:
    args = dict(dataset="generated", generated_train_size=96, generated_test_size=64, val_size=0, batch_size=32)
    return ImageClassificationDataModule(**{**args, **overrides})


def _trainer(**overrides) -> pl.Trainer:
    args = dict(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    return pl.Trainer(**{**args, **overrides})


@pytest.mark.slow
def test_lrpet_projects_on_schedule_and_tests_the_exact_factorisation():
    pl.seed_everything(0, verbose=False)
    model = LRPET(depth=8, prune_ratio=0.7, projection_interval=4)
    trainer = _trainer()
    trainer.fit(model, datamodule=_tiny_data())
    assert trainer.global_step == 6  # 3 batches x 2 epochs
    # At step 4, then once more after the last step (6), which was not a projection step.
    assert model.projections_done == 2 and model.last_projection_step == 6
    assert isinstance(model.network.conv1, FactorisedConv2d) and model.network.conv1.rank == 4
    metrics = trainer.test(model, datamodule=_tiny_data(), verbose=False)[0]
    assert metrics["test/top1"] == pytest.approx(metrics["test/top1_projected"], abs=1 / 64 + 1e-9)
    assert metrics["test/params_m"] * 1e6 == pytest.approx(count_parameters(model.network), abs=1)
    assert count_parameters(model.network) < 0.4 * count_parameters(resnet_cifar(depth=8))
    assert metrics["test/replica_divergence"] == 0.0  # one process: trivially; the DDP test runs two


def test_lrpet_does_not_project_twice_when_the_last_step_was_a_projection_step():
    model = LRPET(depth=8, prune_ratio=0.7, projection_interval=2)
    model.last_projection_step = model.global_step  # as if on_train_batch_end had just projected
    before = model.network.conv1.weight.detach().clone()
    model.on_train_end()
    assert model.projections_done == 0 and model.factorised
    torch.testing.assert_close(model.projected_network[0].conv1.weight, before)


def test_truncation_baselines_load_the_dense_stage(tmp_path):
    pl.seed_everything(0, verbose=False)
    dense = CifarResNetClassifier(depth=8)
    trainer = _trainer(max_epochs=1)
    trainer.fit(dense, datamodule=_tiny_data())
    checkpoint = dense.save_stage_artifact(tmp_path)
    images = torch.randn(4, 3, 32, 32)
    same = SVDTruncation(depth=8, dense_checkpoint=str(checkpoint), prune_ratio=None).eval()
    truncated = SVDTruncation(depth=8, dense_checkpoint=str(checkpoint), prune_ratio=0.7)
    with torch.no_grad():
        torch.testing.assert_close(same(images), dense.eval()(images))
    scratch = FactorisedFromScratch(depth=8, prune_ratio=0.7)
    assert count_parameters(truncated.network) == count_parameters(scratch.network) < count_parameters(dense.network)
    with pytest.raises(ValueError, match="depth"):
        SVDTruncation(depth=20, dense_checkpoint=str(checkpoint))


def test_networks_train_channels_last_with_unchanged_function_and_projection():
    pl.seed_everything(0, verbose=False)
    model = _randomised_batchnorms(LRPET(depth=8, prune_ratio=0.7).eval(), seed=3)
    reference = copy.deepcopy(model.network)  # NCHW
    model.configure_model()  # what Lightning calls before fit and test
    weight = model.network.layer1[0].conv1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(model(images), reference(images), atol=1e-5, rtol=1e-4)
    # The projection reads the weight in logical order, whatever its layout.
    model.project()
    project_network(reference, ranks=model.ranks)
    for name, conv in model.network.named_modules():
        if isinstance(conv, nn.Conv2d):
            torch.testing.assert_close(conv.weight, reference.get_submodule(name).weight, atol=1e-5, rtol=1e-4)
            assert conv.weight.is_contiguous(memory_format=torch.channels_last) or conv.weight.shape[-1] == 1
