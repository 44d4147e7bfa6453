"""CMT training details: the masked-modal BatchNorm statistics (deviation 11 of ``modules/cmt``) and
the synthetic scenes' validation split used by the calibration sweeps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modules.cmt import CMT
from modules.cmt.model import PresentSampleBatchNorm2d

TINY = dict(embed_dim=16, num_layers=1, num_heads=2, ffn_dim=32, num_queries=8, depth_num=4,
            image_widths=(8, 8, 8, 8), bev_widths=(8, 8, 8))


def test_present_sample_batchnorm_takes_statistics_from_present_samples_only() -> None:
    torch.manual_seed(0)
    features = torch.randn(4, 3, 5, 5) * 2 + 1
    features[1] = 0.0  # a sample whose modality was zeroed
    present = torch.tensor([True, False, True, True])
    masked, plain = PresentSampleBatchNorm2d(3), torch.nn.BatchNorm2d(3)
    out = masked(features, present)
    reference = plain(features[present])
    assert torch.allclose(out[present], reference, atol=1e-5)
    assert torch.allclose(masked.running_mean, plain.running_mean) and torch.allclose(masked.running_var, plain.running_var)
    # The zeroed sample is normalised with the present samples' statistics (what eval does with running ones).
    mean, var = features[present].mean((0, 2, 3)), features[present].var((0, 2, 3), unbiased=False)
    assert torch.allclose(out[1], (-mean / (var + masked.eps).sqrt())[:, None, None].expand(3, 5, 5), atol=1e-5)
    # Nobody present: running statistics, no update; present=None is plain BatchNorm2d.
    before = masked.running_mean.clone()
    masked(features, torch.zeros(4, dtype=torch.bool))
    assert torch.equal(masked.running_mean, before)
    assert torch.allclose(PresentSampleBatchNorm2d(3)(features), torch.nn.BatchNorm2d(3)(features), atol=1e-6)


def test_present_sample_batchnorm_under_bf16_autocast_keeps_fp32_statistics() -> None:
    """bf16-mixed training (the GPU check's precision): a bf16 activation's statistics must update the
    fp32 running buffers (an in-place lerp of bf16 into fp32 raised), and the output is bf16 like
    BatchNorm2d's, close to the fp32 computation."""
    torch.manual_seed(0)
    features = torch.randn(4, 3, 5, 5) * 2 + 1
    present = torch.tensor([True, False, True, True])
    masked, reference = PresentSampleBatchNorm2d(3), PresentSampleBatchNorm2d(3)
    low = features.bfloat16()
    out = masked(low, present)
    expected = reference(low.float(), present)
    assert out.dtype == torch.bfloat16 and masked.running_mean.dtype == torch.float32
    assert torch.allclose(out.float(), expected, atol=3e-2)
    assert torch.allclose(masked.running_mean, reference.running_mean, atol=1e-6)


@pytest.mark.parametrize("bn_stats, zeroed_sample_counts", [("present", False), ("all", True)])
def test_masked_modal_training_keeps_zeroed_samples_out_of_the_backbone_statistics(
        bn_stats: str, zeroed_sample_counts: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from datamodules.synthetic_scenes import collate_scenes, generate_scene

    batch = collate_scenes([generate_scene(split_seed=0, split="train", index=i) for i in range(3)])
    torch.manual_seed(0)
    model = CMT(modalities="fusion", modal_mask=True, bn_stats=bn_stats, **TINY).train()
    # Fix ModalMask3D's draw: sample 1 loses its images (u > 0.75), sample 2 its points (0.5 < u <= 0.75).
    monkeypatch.setattr(torch, "rand", lambda *args, **kwargs: torch.tensor([0.1, 0.9, 0.6]))
    images, points, present = model.masked_inputs(batch)
    monkeypatch.undo()
    assert images[1].abs().sum() == 0 and points[2].abs().sum() == 0 and images[0].abs().sum() > 0
    model.network.tokens(images, points, batch["point_mask"], batch["lidar2img"], present=present)
    first_image_bn = model.network.image_backbone.blocks[0][1]
    # What the image BN would have recorded from the samples that kept their images (0 and 2) alone.
    reference = CMT(modalities="fusion", **TINY).network.image_backbone.blocks[0]
    reference.load_state_dict(model.network.image_backbone.blocks[0].state_dict())
    reference[1].reset_running_stats()
    reference.train()(((batch["images"][[0, 2]] - 0.5) / 0.25).flatten(0, 1))
    matches = torch.allclose(first_image_bn.running_mean, reference[1].running_mean, atol=1e-6)
    assert matches != zeroed_sample_counts


def test_validation_scenes_are_their_own_split() -> None:
    from datamodules.synthetic_scenes import SyntheticScenesDataModule

    data = SyntheticScenesDataModule(train_size=4, val_size=6, test_size=6, batch_size=2, eval_batch_size=6)
    val, test = next(iter(data.val_dataloader())), next(iter(data.test_dataloader()))
    assert len(data.val_dataloader().dataset) == 6 and len(data.test_dataloader().dataset) == 6
    # Same scene indices, different scenes: no val scene is a test (or train) scene.
    train_boxes = [scene["gt_boxes"] for scene in data.scenes("train", 4)]
    val_boxes = [scene["gt_boxes"] for scene in data.scenes("val", 6)]
    test_boxes = [scene["gt_boxes"] for scene in data.scenes("test", 6)]
    for boxes in val_boxes:
        assert not any(other.shape == boxes.shape and np.allclose(other, boxes) for other in test_boxes + train_boxes)
    assert not torch.equal(val["images"], test["images"])
    # Deterministic: a fresh datamodule serves the same validation scenes.
    again = SyntheticScenesDataModule(train_size=4, val_size=6, test_size=6, eval_batch_size=6)
    assert torch.equal(next(iter(again.val_dataloader()))["images"], val["images"])


def test_a_training_step_copies_to_the_host_a_fixed_number_of_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU every ``.cpu()`` is a stream sync: the matching must not copy once per sample and
    decoder layer (it did: B x L copies), whatever the batch size and depth."""
    from datamodules.synthetic_scenes import collate_scenes, generate_scene

    copies = []
    original_cpu = torch.Tensor.cpu

    def counting_cpu(tensor, *args, **kwargs):
        copies.append(tuple(tensor.shape))
        return original_cpu(tensor, *args, **kwargs)

    counts = {}
    for batch_size, layers in ((2, 1), (5, 3)):
        batch = collate_scenes([generate_scene(split_seed=0, split="train", index=i) for i in range(batch_size)])
        torch.manual_seed(0)
        model = CMT(modalities="fusion", modal_mask=False, **{**TINY, "num_layers": layers}).train()
        copies.clear()
        monkeypatch.setattr(torch.Tensor, "cpu", counting_cpu)
        loss = model.training_step(batch, 0)
        monkeypatch.undo()
        assert torch.isfinite(loss)
        counts[(batch_size, layers)] = len(copies)
    assert counts[(2, 1)] == counts[(5, 3)] == 2  # DN's GT counts, the cost matrices (padding marked in them)
