"""A tiny regression benchmark for testing the harness itself (seconds, no files).

``ToyPretrain`` -> ``ToyFinetune`` is a two-stage method: the fine-tune stage starts from the
pretrain stage's checkpoint, which the harness caches by config hash.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.regression import MeanSquaredError


class ToyRegressionData(pl.LightningDataModule):
    def __init__(self, dataset: str = "linear", num_samples: int = 256, num_features: int = 8, noise: float = 0.1,
                 batch_size: int = 64, data_dir: str | None = None, cache_dir: str | None = None,
                 val_samples: int = 48) -> None:
        super().__init__()
        self.dataset, self.num_samples, self.num_features = dataset, num_samples, num_features
        self.val_samples = val_samples
        self.noise, self.batch_size = noise, batch_size
        self.data_dir = data_dir

    def prepare_data(self) -> None:
        if self.dataset == "from-file":
            path = Path(self.data_dir or ".") / "toy" / "points.pt"
            if not path.exists():
                raise FileNotFoundError(f"toy dataset 'from-file' needs {path}; create it or pick dataset 'linear'")

    def setup(self, stage: str | None = None) -> None:
        generator = torch.Generator().manual_seed(1234)  # the data are fixed; the seed varies the model
        inputs = torch.randn(self.num_samples, self.num_features, generator=generator)
        weights = torch.linspace(-1, 1, self.num_features)
        targets = inputs @ weights + self.noise * torch.randn(self.num_samples, generator=generator)
        self.train_set = TensorDataset(inputs[: self.num_samples // 2], targets[: self.num_samples // 2])
        self.test_set = TensorDataset(inputs[self.num_samples // 2:], targets[self.num_samples // 2:])
        # drawn after the train/test data, so those stay what they were; calibration sweeps score it
        val_inputs = torch.randn(self.val_samples, self.num_features, generator=generator)
        val_targets = val_inputs @ weights + self.noise * torch.randn(self.val_samples, generator=generator)
        self.val_set = TensorDataset(val_inputs, val_targets)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=self.batch_size)


class ToyLinear(pl.LightningModule):
    def __init__(self, num_features: int = 8, lr: float = 0.1, pretrained: str | None = None, fail: bool = False,
                 write_artifact: bool = False, fail_in_test: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.linear = torch.nn.Linear(num_features, 1)
        if pretrained:
            state = torch.load(pretrained, map_location="cpu", weights_only=False)["state_dict"]
            self.load_state_dict(state)
        self.test_mse = MeanSquaredError()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.hparams.fail:
            raise ValueError("toy failure on purpose")
        time.sleep(float(os.environ.get("TOY_SLEEP_S", 0)))  # a slow run, for --timeout
        if os.environ.get("TOY_SIGKILL_SELF"):  # what the kernel's OOM killer does to a process
            os.kill(os.getpid(), signal.SIGKILL)
        inputs, targets = batch
        return torch.nn.functional.mse_loss(self.linear(inputs).squeeze(-1), targets)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        inputs, targets = batch
        if self.hparams.fail_in_test:
            raise ValueError("toy test failure on purpose")
        self.test_mse(self.linear(inputs).squeeze(-1), targets)
        self.log("test/mse", self.test_mse)
        self.log("test/pid", float(os.getpid()), sync_dist=True)
        self.log("test/samples", float(len(targets)), reduce_fx="sum")  # which split was scored

    def on_test_end(self) -> None:
        # the runner sets artifact_dir; files meant for readers are written by global rank 0 only
        if self.hparams.write_artifact and self.trainer.is_global_zero and getattr(self, "artifact_dir", None):
            self.artifact_dir.mkdir(parents=True, exist_ok=True)
            (self.artifact_dir / "weights.txt").write_text(" ".join(f"{w:.4f}" for w in self.linear.weight.flatten().tolist()))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class ToyPretrain(ToyLinear):
    """The first stage; counts how often it was trained in $TOY_STAGE_LOG (one line per fit)."""

    def on_fit_start(self) -> None:
        if log := os.environ.get("TOY_STAGE_LOG"):
            with open(log, "a") as handle:
                handle.write("pretrain\n")


class ToyMeanBaseline(pl.LightningModule):
    """Predicts the training mean: non-trainable, like k-means."""

    requires_fit = False

    def __init__(self) -> None:
        super().__init__()
        self.test_mse = MeanSquaredError()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        _, targets = batch
        self.test_mse(torch.zeros_like(targets), targets)
        self.log("test/mse", self.test_mse)

    def configure_optimizers(self) -> None:
        return None
