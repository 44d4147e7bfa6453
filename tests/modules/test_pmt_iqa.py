"""PMT-IQA: the IQA correlation metrics on known values, the progressive task-weight schedule (values
and direction, also inside a Trainer), the official lr rule and Adam reset, grade binning, MS shapes."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from scipy import stats
from torch.utils.data import DataLoader, TensorDataset

from modules.pmt_iqa.iqa_metrics import IQACorrelations, fit_logistic, iqa_correlations, logistic_4, logistic_5
from modules.pmt_iqa import (PMTIQA, MultiScaleFeatures, SingleTaskRegressionIQA, official_lr_factor,
                             quality_grades, task_weights)

TINY = {"backbone": "resnet18", "backbone_kwargs": {"channels": [8, 16, 32, 64], "stem_width": 8}}


def test_srcc_plcc_on_a_hand_computed_case() -> None:
    # ranks differ in two adjacent swaps: SRCC = 1 - 6*4/(5*24) = 0.8; PLCC = 8/10 = 0.8 (sum of
    # centred products 8, both variances 10)
    values = iqa_correlations(torch.tensor([1.0, 2, 3, 4, 5]), torch.tensor([2.0, 1, 4, 3, 5]))
    assert values["srcc"] == pytest.approx(0.8) and values["plcc"] == pytest.approx(0.8)
    # a monotone but non-linear relation: SRCC 1, raw PLCC below 1 (scipy as the reference)
    x = torch.tensor([0.0, 1, 2, 3, 4, 5, 6])
    y = x ** 3
    values = iqa_correlations(x, y)
    assert values["srcc"] == pytest.approx(1.0)
    assert values["plcc"] == pytest.approx(stats.pearsonr(x.numpy(), y.numpy())[0], abs=1e-6) and values["plcc"] < 0.95


def test_logistic_fit_recovers_an_exact_logistic_relation() -> None:
    x = np.linspace(-3, 3, 60)
    y = logistic_5(x, 80.0, 3.0, 0.3, 1.0, 40.0)  # a VQEG-style sigmoid with a linear term
    raw = stats.pearsonr(x, y)[0]
    values = iqa_correlations(torch.from_numpy(x), torch.from_numpy(y))
    assert raw < 0.98 and values["plcc"] == pytest.approx(raw, abs=1e-6)
    assert values["plcc_logistic"] == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(fit_logistic(x, y), y, atol=1e-3)
    # the 4-parameter form on its own family; a decreasing relation maps with a negative slope
    y4 = logistic_4(x, 5.0, 1.0, 0.5, 0.7)
    assert np.allclose(fit_logistic(x, y4, parameters=4), y4, atol=1e-3)
    assert stats.pearsonr(fit_logistic(x, -y), -y)[0] == pytest.approx(1.0, abs=1e-6)


def test_metric_accumulates_batches_like_one_call() -> None:
    generator = torch.Generator().manual_seed(0)
    predictions, labels = torch.rand(40, generator=generator), torch.rand(40, generator=generator)
    metric = IQACorrelations()
    metric.update(predictions[:15], labels[:15])
    metric.update(predictions[15:], labels[15:])
    assert metric.compute() == pytest.approx(iqa_correlations(predictions, labels))
    assert metric.compute()["plcc_logistic"] >= abs(metric.compute()["plcc"]) - 1e-9


def test_metric_counts_an_image_repeated_by_ddp_padding_once() -> None:
    generator = torch.Generator().manual_seed(1)
    predictions, labels = torch.rand(9, generator=generator), torch.rand(9, generator=generator)
    metric = IQACorrelations()
    # Two ranks of a DistributedSampler over 9 images: rank 1 is padded with image 0 again.
    metric.update(predictions[0::2], labels[0::2], image_index=torch.arange(0, 9, 2))
    metric.update(torch.cat([predictions[1::2], predictions[:1]]), torch.cat([labels[1::2], labels[:1]]),
                  image_index=torch.tensor([1, 3, 5, 7, 0]))
    assert metric.compute() == pytest.approx(iqa_correlations(predictions, labels))
    padded = torch.cat([predictions, predictions[:1]]), torch.cat([labels, labels[:1]])
    assert iqa_correlations(*padded)["srcc"] != pytest.approx(iqa_correlations(predictions, labels)["srcc"])


def test_progressive_schedule_values_and_direction() -> None:
    weights = [task_weights(epoch, 12, schedule="progressive") for epoch in range(12)]
    assert weights[0] == (0.0, 1.0) and weights[-1] == (1.0, 0.0)  # classification first, regression last
    assert weights[3] == pytest.approx((3 / 11, 8 / 11))
    regression = [w[0] for w in weights]
    assert all(b > a for a, b in zip(regression, regression[1:])) and all(sum(w) == pytest.approx(1) for w in weights)
    assert [task_weights(e, 12, schedule="reversed") for e in range(12)] == [(c, r) for r, c in weights]
    assert task_weights(5, 12, schedule="fixed", regression_weight=0.942, classification_weight=0.96) == (0.942, 0.96)
    assert task_weights(0, 1, schedule="progressive") == (1.0, 0.0)
    with pytest.raises(ValueError, match="unknown schedule"):
        task_weights(0, 3, schedule="dyn_weight")


def test_official_lr_rule() -> None:
    # lr0 for epochs 0-6, /10 for 7-12, /100 from 13 (Adam re-created after epoch t with lr0/10^(t//6))
    assert [official_lr_factor(e, 6) for e in (0, 1, 6, 7, 12, 13, 29)] == pytest.approx([1, 1, 1, 0.1, 0.1, 0.01, 1e-4])


def test_grade_binning_rules() -> None:
    live = quality_grades(torch.tensor([0.0, 9.99, 10.0, 55.0, 99.9, 105.0, -1.0]), "live")
    assert live.tolist() == [0, 0, 1, 5, 9, 9, 0] and live.dtype == torch.int64
    assert quality_grades(torch.tensor([0.04, 0.16, 0.96, 1.0]), "csiq").tolist() == [0, 2, 9, 9]  # 10 clamped
    assert quality_grades(torch.tensor([4.0, 16.0, 94.0, 100.0]), "mos100").tolist() == [0, 2, 9, 9]
    assert quality_grades(torch.tensor([0.4, 0.6, 4.9]), "bid").tolist() == [0, 1, 9]
    assert quality_grades(torch.tensor([1.0, 2.7, 4.93]), "kadid").tolist() == [0, 4, 9]
    with pytest.raises(ValueError, match="unknown grade rule"):
        quality_grades(torch.tensor([1.0]), "tid2008")


def test_multiscale_module_matches_the_official_resnet50_shapes() -> None:
    block = MultiScaleFeatures(stage_channels=[256, 512, 1024, 2048])
    assert [fc.in_features for fc in block.fcs] == [16 * 64, 32 * 16, 64 * 4, 2048]
    assert [fc.out_features for fc in block.fcs] == [28, 28, 28, 28]
    # adaptive pooling to 8x8 of a 56x56 map is the official AvgPool2d(7, stride=7)
    features = torch.randn(2, 16, 56, 56)
    assert torch.allclose(block.pools[0](features), torch.nn.AvgPool2d(7, stride=7)(features), atol=1e-6)


def test_arms_differ_only_where_intended() -> None:
    full = PMTIQA(**TINY, pool_sizes=[4, 2, 1, 1], grade_rule="live")
    c4_only = PMTIQA(**TINY, multi_scale=False, grade_rule="live")
    single = SingleTaskRegressionIQA(**TINY)
    images = torch.randn(3, 3, 32, 32)
    outputs = full(images)
    assert outputs["score"].shape == (3,) and outputs["grade_logits"].shape == (3, 10)
    assert c4_only(images)["score"].shape == (3,) and set(single(images)) == {"score"}
    crops = torch.randn(2, 4, 3, 32, 32)
    full.eval()
    expected = full(crops.flatten(0, 1))["score"].view(2, 4).mean(1)
    assert torch.allclose(full.predict_image_scores(crops), expected)


class _RecordWeights(L.Callback):
    def __init__(self) -> None:
        self.weights, self.adam_steps = [], []

    def on_train_epoch_start(self, trainer, module) -> None:
        self.weights.append(module.current_task_weights())

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == 0:  # Adam's step count at the first batch of each epoch (after the reset)
            state = trainer.optimizers[0].state
            self.adam_steps.append(int(next(iter(state.values()))["step"]) if state else 0)


def test_schedule_and_adam_reset_inside_a_trainer() -> None:
    torch.manual_seed(0)
    images, scores = torch.randn(8, 3, 32, 32), torch.rand(8) * 100
    model = PMTIQA(**TINY, pool_sizes=[4, 2, 1, 1], grade_rule="live", lr=1e-3)
    recorder = _RecordWeights()
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder])
    trainer.fit(model, DataLoader(TensorDataset(images, scores), batch_size=4))
    assert recorder.weights == [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]
    assert recorder.adam_steps == [0, 0, 0]  # fresh moments every epoch, as the re-created official Adam
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3)  # step 6: no decay yet


def test_local_backbone_checkpoint_is_loaded(tmp_path) -> None:
    source = SingleTaskRegressionIQA(**TINY)
    torch.save(source.backbone.state_dict(), tmp_path / "backbone.pth")
    loaded = PMTIQA(**TINY, checkpoint_path=str(tmp_path / "backbone.pth"), grade_rule="live")
    for name, tensor in source.backbone.state_dict().items():
        assert torch.equal(loaded.backbone.state_dict()[name], tensor), name
    with pytest.raises(FileNotFoundError, match="leave checkpoint_path empty"):
        PMTIQA(**TINY, checkpoint_path=str(tmp_path / "missing.pth"))
    torch.save({"unrelated.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="shares no parameter names"):
        PMTIQA(**TINY, checkpoint_path=str(tmp_path / "other.pth"))


def test_c4_only_ablation_has_the_capacity_of_ms_c4_branch() -> None:
    # Equal capacity: without MS, C4 keeps its 28-d FC of the MS module (not a 4x wider 112-d one),
    # so the two arms differ exactly by the C1-C3 branches (1x1 convs + FCs) and the wider MLP input.
    full = PMTIQA(**TINY, pool_sizes=[4, 2, 1, 1], grade_rule="live")
    c4_only = PMTIQA(**TINY, multi_scale=False, grade_rule="live")
    assert c4_only.features.fc.out_features == full.features.fcs[3].out_features == 28
    assert c4_only.features.fc.weight.shape == full.features.fcs[3].weight.shape
    assert c4_only.shared[0].in_features == 28 and full.shared[0].in_features == 112
    branches = sum(p.numel() for m in (*full.features.reduce, *full.features.fcs[:3]) for p in m.parameters())
    mlp_input = (112 - 28) * 112  # the extra input columns of the shared MLP's first FC
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(full) - count(c4_only) == branches + mlp_input
    assert PMTIQA(**TINY, multi_scale=False, last_stage_dim=112, grade_rule="live").shared[0].in_features == 112


def test_validation_epochs_write_a_learning_curve(tmp_path) -> None:
    torch.manual_seed(0)
    images, scores = torch.randn(8, 3, 32, 32), torch.rand(8) * 100
    val = TensorDataset(torch.randn(8, 2, 3, 32, 32), torch.rand(8) * 100, torch.arange(8))
    model = PMTIQA(**TINY, pool_sizes=[4, 2, 1, 1], grade_rule="live", lr=1e-3)
    model.artifact_dir = tmp_path
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=1)
    trainer.fit(model, DataLoader(TensorDataset(images, scores), batch_size=4), DataLoader(val, batch_size=8))
    lines = (tmp_path / "learning_curve.csv").read_text().splitlines()
    assert lines[0] == "epoch,srcc,plcc,plcc_logistic" and len(lines) == 3  # the sanity check is not an epoch
    model.eval()
    final = iqa_correlations(model.predict_image_scores(val.tensors[0]), val.tensors[1])
    epoch, srcc = lines[2].split(",")[:2]
    assert epoch == "1" and float(srcc) == pytest.approx(final["srcc"], abs=1e-5)
