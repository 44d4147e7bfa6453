from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from datamodules.images import ImageClassificationDataModule
from modules.doorping import DistilledSetEvaluation, DoorpingDistillation, PerNetRate
from modules.doorping.distill import (AlexNet, ConvNet, dc_loops, distribution_match_distance, gradient_match_distance, layer_gradient_distance,
                                      neuron_activation, optimise_trigger, patch_mask, pixel_range, random_patch_trigger,
                                      second_to_last_weighted, select_neurons, stamp_trigger, trigger_loss_scale,
                                      white_patch_trigger)

MEAN, STD = (0.5,), (0.25,)


def _trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, **kwargs)


# -- triggers -----------------------------------------------------------------------------------
def test_patch_is_one_pixel_in_from_the_bottom_right_and_stamping_replaces_only_it():
    mask = patch_mask(channels=3, image_size=32, size=2)
    assert mask.sum() == 3 * 4
    assert mask[0, :, 29:31, 29:31].eq(1).all() and mask[0, :, 31, :].eq(0).all() and mask[0, :, :, 31].eq(0).all()
    images = torch.full((2, 3, 32, 32), 7.0)
    trigger = torch.arange(3 * 32 * 32, dtype=torch.float32).view(1, 3, 32, 32)
    stamped = stamp_trigger(images, trigger, mask)
    assert stamped[:, :, 29:31, 29:31].eq(trigger[:, :, 29:31, 29:31]).all()
    stamped[:, :, 29:31, 29:31] = 7.0
    assert stamped.eq(7.0).all()


def test_white_and_random_patch_values_in_normalised_space():
    mask = patch_mask(1, 8, 2)  # patch rows/cols 5, 6
    white = white_patch_trigger(mask, MEAN, STD)
    assert white[0, 0, 5, 5] == pytest.approx((1 - 0.5) / 0.25) and white[0, 0, 0, 0] == pytest.approx(-0.5 / 0.25)
    rand = random_patch_trigger(mask, MEAN, STD, generator=torch.Generator().manual_seed(0))
    patch = rand[mask.bool()]
    low, high = (1 / 255 - 0.5) / 0.25, (1 - 0.5) / 0.25  # ints in [1, 255] before ToTensor/Normalize
    assert patch.min() >= low - 1e-6 and patch.max() <= high + 1e-6
    assert rand[~mask.bool()].eq(-2.0).all()  # background of the zero image is -mean/std


# -- DOORPING neuron selection and trigger optimisation ---------------------------------------
def test_neuron_selection_on_hand_made_weights():
    linear = torch.tensor([[1.0, -1.0, 0.0], [0.5, 0.5, 0.5], [-3.0, 0.0, 0.1]])  # row sums of |W|: 2, 1.5, 3.1
    assert select_neurons(linear, 1).tolist() == [2]
    assert select_neurons(linear, 2).tolist() == [2, 0]
    conv = torch.zeros(3, 2, 2, 2)
    conv[1, 0, 0, 0], conv[1, 1, 1, 1], conv[2, 0, 1, 0] = -2.0, 1.5, 3.0  # channel sums 0, 3.5, 3
    assert select_neurons(conv, 1).tolist() == [1]


def test_second_to_last_weighted_layer():
    convnet = ConvNet(1, 10, 32, width=8, depth=3)
    # baadd's ConvNet ends in FC 192 -> ReLU -> FC classes, so layer=-2 is the hidden FC, not the last conv
    assert second_to_last_weighted(convnet) is convnet.classifier[0]
    assert convnet.classifier[0].out_features == 192 and convnet(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    alexnet = AlexNet(3, 10, 32)
    assert second_to_last_weighted(alexnet) is alexnet.classifier[2]  # FC 384 -> 192


def test_trigger_optimisation_changes_only_the_patch_and_raises_the_activation():
    torch.manual_seed(0)
    network = ConvNet(1, 10, 16, width=8, depth=2)
    mask = patch_mask(1, 16, 2)
    trigger = random_patch_trigger(mask, MEAN, STD, generator=torch.Generator().manual_seed(1))
    updated, info = optimise_trigger(network, trigger, mask, steps=30, stop_loss=0.0)
    assert updated[~mask.bool()].eq(trigger[~mask.bool()]).all()
    assert not updated[mask.bool()].eq(trigger[mask.bool()]).all()
    assert info["steps"] == 30 and info["activation"] > info["a0"] > 0
    # a loss below the stop threshold at the first step: no Adam step at all
    same, info = optimise_trigger(network, trigger, mask, steps=30, stop_loss=1e9)
    assert info["steps"] == 0 and same.eq(trigger).all()
    assert not network.classifier[0]._forward_hooks  # the hook is removed (pitfall 2)


def test_conv_activation_is_kept_element_wise_by_default():
    output = torch.tensor([[[[1.0, -2.0], [3.0, 0.0]], [[5.0, 5.0], [5.0, 5.0]]]])  # [1, 2 channels, 2, 2]
    neurons = torch.tensor([0])
    assert neuron_activation(output, neurons).tolist() == [[[[1.0, 0.0], [3.0, 0.0]]]]  # post-ReLU map
    assert neuron_activation(output, neurons, "mean").tolist() == [[1.0]]
    assert neuron_activation(output, neurons, "max").tolist() == [[3.0]]


def test_relative_stop_rule_moves_a_trigger_the_absolute_rule_stops_at_step_0():
    torch.manual_seed(0)
    network = ConvNet(1, 10, 16, width=8, depth=2)
    with torch.no_grad():  # a small-activation net: shrink the chosen FC so (alpha-1)^2 a0^2 < 0.5
        network.classifier[0].weight.mul_(0.01)
        network.classifier[0].bias.fill_(0.01)
    mask = patch_mask(1, 16, 2)
    trigger = random_patch_trigger(mask, MEAN, STD, generator=torch.Generator().manual_seed(1))
    _, absolute = optimise_trigger(network, trigger, mask, steps=20)
    assert absolute["steps"] == 0 and absolute["a0"] > 0
    moved, relative = optimise_trigger(network, trigger, mask, steps=20, stop_rule="relative")
    assert relative["steps"] == 20 and relative["activation"] > relative["a0"]
    assert not moved[mask.bool()].eq(trigger[mask.bool()]).all()
    goal = torch.tensor([[2.0, 4.0]])
    assert trigger_loss_scale(goal, 2.0, "relative") == pytest.approx((1 + 4) / 2)
    assert trigger_loss_scale(goal, 2.0, "absolute") == 1.0


def test_pixel_clamp_keeps_the_trigger_an_image():
    torch.manual_seed(0)
    network = ConvNet(3, 10, 16, width=8, depth=2)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    mask = patch_mask(3, 16, 2)
    trigger = random_patch_trigger(mask, mean, std, generator=torch.Generator().manual_seed(1))
    free, _ = optimise_trigger(network, trigger, mask, steps=200, lr=1.0, stop_loss=0.0, stop_rule="relative")
    low, high = pixel_range(mean, std)
    assert ((free < low - 1e-5) | (free > high + 1e-5)).any()  # unclamped, delta leaves the pixel range
    clamped, _ = optimise_trigger(network, trigger, mask, steps=200, lr=1.0, stop_loss=0.0, stop_rule="relative",
                                  clamp=(low, high))
    assert ((clamped >= low - 1e-6) & (clamped <= high + 1e-6)).all()
    assert torch.allclose(low.flatten(), torch.tensor([-2.5, -1.6, -1.0])) and torch.allclose(high.flatten(), torch.tensor([2.5, 2.4, 7 / 3]))


# -- gradient matching -------------------------------------------------------------------------
def test_gradient_distance_hand_computed():
    real = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]])
    syn = torch.tensor([[2.0, 0.0], [1.0, 0.0], [-3.0, -4.0]])  # cos 1, 0, -1 -> 0 + 1 + 2
    assert float(layer_gradient_distance(real, syn)) == pytest.approx(3.0, abs=1e-5)
    assert float(layer_gradient_distance(torch.ones(4), -torch.ones(4))) == 0.0  # biases contribute 0
    kernel_real = torch.zeros(2, 1, 2, 2)
    kernel_real[0, 0, 0, 0], kernel_real[1, 0, 1, 1] = 1.0, 1.0
    kernel_syn = kernel_real.clone()
    kernel_syn[1] = -kernel_syn[1]  # channel 0 identical, channel 1 opposite: 0 + 2
    total = gradient_match_distance([real, torch.ones(3), kernel_real], [syn, torch.zeros(3), kernel_syn])
    assert float(total) == pytest.approx(5.0, abs=1e-5)


def test_dc_loop_table():
    assert dc_loops(1) == (1, 1) and dc_loops(10) == (10, 50) and dc_loops(50) == (50, 10)
    with pytest.raises(ValueError):
        dc_loops(7)


def _datamodule() -> ImageClassificationDataModule:
    return ImageClassificationDataModule(dataset="generated", generated_train_size=200, generated_test_size=100,
                                         val_size=0, augment=False, batch_size=50)


@pytest.mark.parametrize("attack, ipc, outer, iterations, updates", [
    ("doorping", 1, None, 2, 0),  # pitfall 1: ipc=1 -> outer_loop 1 -> the trigger is never updated
    ("doorping", 2, 3, 2, 4),  # (outer_loop - 1) updates per iteration
    ("naive", 2, 3, 1, 0),
])
@pytest.mark.slow
def test_dc_loop_counts_and_trigger_updates(attack, ipc, outer, iterations, updates):
    pl.seed_everything(0, verbose=False)
    stage = DoorpingDistillation(attack=attack, ipc=ipc, outer_loop=outer, inner_loop=None if outer is None else 2,
                                 batch_real=8, width=4, depth=2, trigger_steps=3, trigger_stop_loss=0.0, portion=0.05)
    calls = {"match": 0, "train": 0}
    match, train = stage.match_step, stage.train_network
    stage.match_step = lambda net: (calls.__setitem__("match", calls["match"] + 1), match(net))[1]
    stage.train_network = lambda net, epochs: (calls.__setitem__("train", calls["train"] + 1), train(net, epochs))[1]
    trainer = _trainer(max_epochs=iterations, limit_train_batches=1)
    trainer.fit(stage, datamodule=_datamodule())
    outer_loop = stage.outer_loop
    assert outer_loop == (1 if outer is None else outer)
    assert calls == {"match": iterations * outer_loop, "train": iterations * (outer_loop - 1)}
    assert stage.trigger_updates == updates
    assert len(stage.poisoned) == 10 and stage.real_labels[stage.poisoned].eq(0).all()
    # the poisoned real images carry the current trigger on the patch
    patch = stage.mask.bool().expand(len(stage.poisoned), -1, -1, -1)
    stamped = stage.real[stage.poisoned][patch]
    assert torch.allclose(stamped, stage.trigger.expand(len(stage.poisoned), -1, -1, -1)[patch])


def test_distribution_match_distance_hand_computed():
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # mean (2, 3)
    syn = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])  # mean (1, 1)
    assert distribution_match_distance(real, syn).item() == pytest.approx(1.0 + 4.0)
    net = ConvNet(channels=1, num_classes=3, image_size=8, width=4, depth=2)
    images = torch.randn(5, 1, 8, 8)
    assert torch.allclose(net.classifier(net.embed(images)), net(images))
    alex = AlexNet(channels=3, num_classes=4)
    assert alex.embed(torch.randn(2, 3, 32, 32)).shape == (2, 192)


@pytest.mark.parametrize("attack, updates", [("doorping", 3), ("naive", 0)])
def test_dm_backend_matches_embeddings_and_updates_the_trigger_once_per_iteration(attack, updates):
    pl.seed_everything(0, verbose=False)
    stage = DoorpingDistillation(backend="dm", attack=attack, ipc=2, lr_img=1.0, batch_real=16, width=4, depth=2,
                                 trigger_steps=3, trigger_stop_loss=0.0, portion=0.05, init="real")
    assert stage.outer_loop == 0 and stage.inner_loop == 0  # no DC loops (ipc=2 has no DC table entry)
    calls = {"train": 0}
    stage.train_network = lambda net, epochs: calls.__setitem__("train", calls["train"] + 1)
    _trainer(max_epochs=3, limit_train_batches=1).fit(stage, datamodule=_datamodule())
    assert calls["train"] == 0 and stage.trigger_updates == updates
    # the DM step lowers the embedding distance on a fixed network (a descent step on the images)
    network = stage._network()
    before = sum(distribution_match_distance(network.embed(stage.real[stage.class_index[c]]),
                                             network.embed(stage.synthetic[2 * c:2 * c + 2])) for c in range(10))
    weights = [p.detach().clone() for p in network.parameters()]
    stage.hparams.batch_real = 10_000  # the whole class, so the step targets the same means as `before`
    stage.image_optimiser = torch.optim.SGD([stage.synthetic], lr=0.1)
    stage.distribution_match_step(network)
    after = sum(distribution_match_distance(network.embed(stage.real[stage.class_index[c]]),
                                            network.embed(stage.synthetic[2 * c:2 * c + 2])) for c in range(10))
    assert after.item() < before.item()
    assert all(torch.equal(w, p) for w, p in zip(weights, network.parameters()))
    with pytest.raises(ValueError, match="backend"):
        DoorpingDistillation(backend="mtt")


def test_clean_artifact_keeps_the_white_patch_for_the_base_rate(tmp_path):
    pl.seed_everything(0, verbose=False)
    stage = DoorpingDistillation(attack="clean", ipc=2, outer_loop=2, inner_loop=1, batch_real=8, width=4, depth=2)
    dm = _datamodule()
    _trainer(max_epochs=1, limit_train_batches=1).fit(stage, datamodule=dm)
    artifact = torch.load(stage.save_stage_artifact(tmp_path), weights_only=False)
    assert artifact["images"].shape == (20, 3, 32, 32) and artifact["labels"].tolist() == [c for c in range(10) for _ in (0, 1)]
    assert artifact["poisoned"] == 0
    assert torch.allclose(artifact["trigger"], white_patch_trigger(artifact["mask"], dm.mean, dm.std))


# -- metrics -------------------------------------------------------------------------------------
def test_per_net_rate_hand_made():
    rate = PerNetRate(num_nets=2)
    hits = torch.tensor([[True, True, False, True], [False, False, False, True]])
    rate.update(hits, torch.tensor([False, True, True, True]))
    assert rate.compute().tolist() == pytest.approx([2 / 3, 1 / 3])


class _PatchDetector(nn.Module):
    """Predicts class 0 when the bottom-right patch is bright, else class 1 (or always 1)."""

    def __init__(self, sees_trigger: bool) -> None:
        super().__init__()
        self.sees_trigger = sees_trigger
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        bright = (images[:, 0, -3, -3] > 1.0) & self.sees_trigger
        logits = torch.zeros(len(images), 3)
        logits[:, 1] = 1.0
        logits[bright, 0] = 2.0
        return logits


def _hand_made_artifact(tmp_path) -> str:
    """A 3-image distilled set with NAIVEATTACK's white 2x2 patch on 8x8 images."""
    mask = patch_mask(1, 8, 2)
    path = tmp_path / "distilled.pt"
    torch.save({"images": torch.zeros(3, 1, 8, 8), "labels": torch.tensor([0, 1, 2]), "trigger": white_patch_trigger(mask, MEAN, STD),
                "mask": mask, "target": 0, "attack": "naive", "mean": MEAN, "std": STD, "num_classes": 3,
                "poisoned": 1, "trigger_updates": 0, "trigger_log": []}, path)
    return str(path)


def test_evaluation_cta_and_asr_on_a_hand_made_case(tmp_path):
    path = _hand_made_artifact(tmp_path)
    module = DistilledSetEvaluation(path, num_nets=2, width=4, depth=1)
    module.nets = nn.ModuleList([_PatchDetector(True), _PatchDetector(False)])
    images, labels = torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 1, 2])
    result = _trainer().test(module, dataloaders=DataLoader(TensorDataset(images, labels), batch_size=3), verbose=False)[0]
    assert result["test/cta"] == pytest.approx(0.5)  # both nets predict 1 on clean images: 2 of 4
    assert result["test/asr"] == pytest.approx(0.5)  # net 1: 4/4, net 2: 0/4
    assert result["test/asr_std"] == pytest.approx(2 ** 0.5 / 2)
    assert result["test/asr_nontarget"] == pytest.approx(0.5)  # net 1: 3/3, net 2: 0/3
    assert result["test/trigger_max"] == pytest.approx(2.0)


def test_evaluation_with_a_single_net(tmp_path):
    # torchmetrics squeezes a 1-element result to 0-d; the per-net statistics must still work
    path = _hand_made_artifact(tmp_path)
    module = DistilledSetEvaluation(path, num_nets=1, width=4, depth=1)
    module.nets = nn.ModuleList([_PatchDetector(True)])
    images, labels = torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 1, 2])
    result = _trainer().test(module, dataloaders=DataLoader(TensorDataset(images, labels), batch_size=3), verbose=False)[0]
    assert result["test/cta"] == pytest.approx(0.5) and result["test/asr"] == pytest.approx(1.0)
    assert result["test/asr_std"] == 0.0 and result["test/asr_nontarget"] == pytest.approx(1.0)
