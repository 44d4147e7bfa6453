"""ImageClassifier base: MAC/parameter counts by hand, shape checks, and learning the generated set."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from datamodules.images import ImageClassificationDataModule
from modules.common.classification import ImageClassifier, count_macs, count_parameters


class TinyConvNet(ImageClassifier):
    def __init__(self, *, num_classes: int = 10, in_channels: int = 3, image_size: int = 32, lr: float = 3e-3) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, image_size=image_size, label_smoothing=0.1)
        self.save_hyperparameters()  # like the benchmark modules: the logger merges these with the datamodule's
        self.lr = lr
        self.network = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                     nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                     nn.Flatten(), nn.Linear(32, num_classes))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def test_macs_and_parameters_match_a_hand_count() -> None:
    network = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(8, 10))
    # conv: every one of 8*32*32 outputs takes 3*3*3 MACs; linear: 8*10 (pooling and bias are not MACs)
    assert count_macs(network, (1, 3, 32, 32)) == 8 * 32 * 32 * 27 + 80
    assert count_parameters(network) == 8 * 27 + 8 * 10 + 10


def test_a_small_cnn_learns_the_generated_set_and_logs_efficiency(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    data = ImageClassificationDataModule(dataset="generated", cache_dir=str(tmp_path), batch_size=64,
                                         generated_train_size=1500, generated_test_size=300, val_size=300)
    model = TinyConvNet()
    trainer = L.Trainer(max_epochs=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=data)
    results = trainer.test(model, datamodule=data, verbose=False)[0]
    assert results["test/top1"] > 0.5  # chance is 0.1
    assert results["test/params_m"] == pytest.approx(count_parameters(model.network) / 1e6)
    assert results["test/macs_m"] == pytest.approx(count_macs(model.network, (1, 3, 32, 32)) / 1e6)
    assert results["test/throughput"] > 0


def test_a_model_built_for_other_data_fails_with_a_clear_message(tmp_path: Path) -> None:
    data = ImageClassificationDataModule(dataset="generated", cache_dir=str(tmp_path), generated_train_size=600,
                                         generated_test_size=100, val_size=100)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        default_root_dir=str(tmp_path))
    with pytest.raises(ValueError, match="set the model's init_args"):
        trainer.fit(TinyConvNet(num_classes=5), datamodule=data)


def test_model_and_datamodule_hyperparameters_merge_for_a_logger(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    data = ImageClassificationDataModule(dataset="generated", cache_dir=str(tmp_path), generated_train_size=300,
                                         generated_test_size=50, val_size=50)
    assert data.image_size == 32 and "image_size" not in data.hparams
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, logger=CSVLogger(str(tmp_path)), enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(TinyConvNet(), datamodule=data)  # raised "hparams conflict" on image_size before
    assert trainer.global_step == 1
