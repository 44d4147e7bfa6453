"""Image datamodules: counts against SOURCE.md, exact pixels, splits, augmentation maths, bad files."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.image_sources import read_idx_pair
from datamodules.images import ImageClassificationDataModule, random_crop_flip
from tests_support import shared_data_root

# ../shared/data/mnist_test/SOURCE.md: class counts of the 10k test set
MNIST_T10K_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def make(dataset: str, tmp_path: Path, **kwargs) -> ImageClassificationDataModule:
    module = ImageClassificationDataModule(dataset=dataset, cache_dir=str(tmp_path / "cache"), **kwargs)
    module.prepare_data()
    module.setup("fit")
    return module


def labels_of(module: ImageClassificationDataModule, split: str) -> torch.Tensor:
    return module.splits[split].tensors[1]


def test_cifar10_jpg_counts_pixels_and_cache(tmp_path: Path) -> None:
    root = shared_data_root("cifar10_jpg")
    module = make("cifar10-jpg", tmp_path, data_dir=str(root), val_size=500)
    # SOURCE.md: 500 train images per class, 1,000 test images per class
    assert torch.bincount(labels_of(module, "train")).tolist() == [450] * 10
    assert torch.bincount(labels_of(module, "val")).tolist() == [50] * 10
    assert torch.bincount(labels_of(module, "test")).tolist() == [1000] * 10
    assert module.splits["test"].tensors[0].shape == (10000, 3, 32, 32)
    # the first test member in name order is decoded exactly as PIL decodes it
    with zipfile.ZipFile(root / "cifar10_jpg" / "cifar10_test_jpg.zip") as archive:
        first = sorted(name for name in archive.namelist() if name.endswith(".jpg"))[0]
        expected = np.asarray(Image.open(io.BytesIO(archive.read(first))).convert("RGB"))
    assert first.startswith("test/airplane/")
    assert np.array_equal(module.splits["test"].tensors[0][0].permute(1, 2, 0).numpy(), expected)
    assert labels_of(module, "test")[0] == 0
    # the decoded arrays are cached and a second datamodule reads identical tensors from the cache
    assert len(list((tmp_path / "cache" / "images").glob("*.pt"))) == 2
    again = make("cifar10-jpg", tmp_path, data_dir=str(root), val_size=500)
    assert torch.equal(again.splits["train"].tensors[0], module.splits["train"].tensors[0])


def test_balanced_subsets_and_split_seed(tmp_path: Path) -> None:
    root = shared_data_root("cifar10_jpg")
    module = make("cifar10-jpg", tmp_path, data_dir=str(root), train_size=3000, val_size=500, test_size=1000)
    assert torch.bincount(labels_of(module, "train")).tolist() == [300] * 10
    assert torch.bincount(labels_of(module, "test")).tolist() == [100] * 10
    other = make("cifar10-jpg", tmp_path, data_dir=str(root), train_size=3000, val_size=500, test_size=1000, split_seed=1)
    assert not torch.equal(other.splits["val"].tensors[0], module.splits["val"].tensors[0])


def test_mnist_t10k_split_is_stratified_disjoint_and_deterministic(tmp_path: Path) -> None:
    root = shared_data_root("mnist_test")
    module = make("mnist-t10k-split", tmp_path, data_dir=str(root), val_size=500)
    sizes = {split: len(module.splits[split]) for split in ("train", "val", "test")}
    assert sizes == {"train": 7500, "val": 500, "test": 2000}
    every_label = torch.cat([labels_of(module, split) for split in ("train", "val", "test")])
    assert torch.bincount(every_label).tolist() == MNIST_T10K_COUNTS
    # stratified: each class keeps its share of the test split to within one image
    test_counts = torch.bincount(labels_of(module, "test")).numpy()
    assert np.all(np.abs(test_counts - np.array(MNIST_T10K_COUNTS) * 0.2) <= 1)
    images = {split: {bytes(image.numpy()) for image in module.splits[split].tensors[0]} for split in ("train", "test")}
    assert len(images["train"] & images["test"]) <= 5  # MNIST has a few exact duplicate digits, no index overlap
    again = make("mnist-t10k-split", tmp_path, data_dir=str(root), val_size=500)
    assert torch.equal(again.splits["test"].tensors[0], module.splits["test"].tensors[0])
    assert module.mean == (0.1307,) and module.in_channels == 1 and module.image_size == 28


def test_mnist_resized_to_32_and_three_channels(tmp_path: Path) -> None:
    root = shared_data_root("mnist_test")
    module = make("mnist-t10k-split", tmp_path, data_dir=str(root), image_size=32, channels=3, test_size=100)
    images = module.splits["test"].tensors[0]
    assert images.shape == (100, 3, 32, 32)
    assert torch.equal(images[:, 0], images[:, 2])
    assert module.mean == (0.1307,) * 3


def write_idx(folder: Path, images: np.ndarray, labels: np.ndarray, prefix: str = "t10k") -> None:
    header = (2051).to_bytes(4, "big") + len(images).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))
    label_header = (2049).to_bytes(4, "big") + len(labels).to_bytes(4, "big")
    (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(label_header + labels.tobytes()))


def test_idx_reader_round_trip_and_corrupt_files(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2], dtype=np.uint8)
    write_idx(tmp_path, images, labels)
    arrays = read_idx_pair(tmp_path / "t10k-images-idx3-ubyte.gz", tmp_path / "t10k-labels-idx1-ubyte.gz", ("a", "b", "c"))
    assert np.array_equal(arrays.images[:, 0].numpy(), images) and arrays.labels.tolist() == labels.tolist()
    truncated = gzip.decompress((tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes())[:-10]
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(truncated))
    with pytest.raises(ValueError, match="truncated"):
        read_idx_pair(tmp_path / "t10k-images-idx3-ubyte.gz", tmp_path / "t10k-labels-idx1-ubyte.gz", ("a", "b", "c"))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00" * 20))
    with pytest.raises(ValueError, match="magic"):
        read_idx_pair(tmp_path / "t10k-images-idx3-ubyte.gz", tmp_path / "t10k-labels-idx1-ubyte.gz", ("a", "b", "c"))


@pytest.mark.parametrize("dataset, expected", [("cifar10-jpg", "cifar10_test_jpg.zip"),
                                               ("mnist", "train-images-idx3-ubyte.gz"),
                                               ("cifar10", "cifar-10-batches-py")])
def test_missing_files_name_what_is_expected(tmp_path: Path, dataset: str, expected: str) -> None:
    module = ImageClassificationDataModule(dataset=dataset, data_dir=str(tmp_path), cache_dir=str(tmp_path / "c"))
    with pytest.raises(FileNotFoundError, match=expected) as error:
        module.prepare_data()
    assert "\n" not in str(error.value)


def test_unknown_dataset_is_rejected() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        ImageClassificationDataModule(dataset="cifar100")


def test_image_folder_tree_is_resized_and_labelled(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 2)):
        for class_name in ("cats", "dogs"):
            folder = tmp_path / "pets" / split / class_name
            folder.mkdir(parents=True)
            for index in range(count):
                size = (40 + index, 50)
                Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    module = make("imagefolder", tmp_path, data_dir=str(tmp_path), folder="pets", image_size=16, val_size=2,
                  batch_size=4)
    assert module.num_classes == 2 and module.class_names == ("cats", "dogs")
    assert [len(module.splits[split]) for split in ("train", "val", "test")] == [10, 2, 4]
    images, labels = next(iter(module.train_dataloader()))
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.uint8


def test_random_crop_flip_is_a_shifted_window_of_the_padded_image() -> None:
    torch.manual_seed(0)
    image = torch.arange(1, 3 * 6 * 6 + 1, dtype=torch.float32).view(1, 3, 6, 6)
    batch = image.repeat(32, 1, 1, 1)
    out = random_crop_flip(batch, padding=2)
    padded = torch.nn.functional.pad(image, (2, 2, 2, 2))[0]
    windows = [padded[:, y:y + 6, x:x + 6] for y in range(5) for x in range(5)]
    candidates = windows + [window.flip(-1) for window in windows]
    seen_flips = 0
    for crop in out:
        matches = [index for index, window in enumerate(candidates) if torch.equal(crop, window)]
        assert matches, "every output is a window of the zero-padded image, maybe flipped"
        seen_flips += matches[0] >= len(windows)
    assert 0 < seen_flips < 32  # both flipped and unflipped crops occur


def test_generated_data_is_balanced_and_normalised(tmp_path: Path) -> None:
    module = make("generated", tmp_path, val_size=500)
    assert torch.bincount(labels_of(module, "train")).tolist() == [200] * 10
    normalised = module.to_model_input(module.splits["train"].tensors[0], train=False)
    assert torch.allclose(normalised.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(normalised.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)


def _transferred_batches(module: ImageClassificationDataModule, *, seed: int, count: int) -> list[tuple]:
    """The first ``count`` training batches as the model sees them (after the transfer hook, in
    training mode: augmented), seeded."""
    from types import SimpleNamespace

    module.trainer = SimpleNamespace(training=True)
    torch.manual_seed(seed)
    batches = []
    for index, batch in zip(range(count), module.train_dataloader()):
        batches.append(module.on_after_batch_transfer(batch, 0))
    return batches


def test_batched_fetch_gives_the_per_sample_loaders_batches() -> None:
    """One gather per batch (``__getitems__``) yields exactly what per-sample indexing + collate does."""
    from torch.utils.data import DataLoader, TensorDataset

    from datamodules.batched import BatchedTensorDataset, keep_batch

    images, labels = torch.arange(50 * 2 * 2).view(50, 1, 2, 2), torch.arange(50) % 7
    torch.manual_seed(3)
    per_sample = list(DataLoader(TensorDataset(images, labels), batch_size=8, shuffle=True))
    torch.manual_seed(3)
    batched = list(DataLoader(BatchedTensorDataset(images, labels), batch_size=8, shuffle=True, collate_fn=keep_batch))
    assert len(batched) == len(per_sample) == 7
    for (x, y), (x_ref, y_ref) in zip(batched, per_sample):
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


def test_device_resident_loader_sends_indices_and_the_model_sees_the_same_batches(tmp_path: Path) -> None:
    host = make("generated", tmp_path, val_size=100, batch_size=32)
    resident = make("generated", tmp_path, val_size=100, batch_size=32, device_resident=True)
    indices, labels = next(iter(resident.train_dataloader()))
    assert indices.dtype == torch.long and indices.shape == (32,)  # no image crosses the loader
    test_indices, _ = next(iter(resident.test_dataloader()))
    assert test_indices.min() >= len(resident.splits["train"]) + len(resident.splits["val"])  # test's offset
    # shuffling and augmentation draw from the global RNG in the same order, so a seed gives
    # identical (augmented) model inputs
    for (x, y), (x_ref, y_ref) in zip(_transferred_batches(resident, seed=5, count=3),
                                      _transferred_batches(host, seed=5, count=3)):
        assert x.dtype == torch.float32 and torch.equal(x, x_ref) and torch.equal(y, y_ref)


def test_device_resident_store_follows_the_batch_to_its_device(tmp_path: Path) -> None:
    module = make("generated", tmp_path, val_size=100, device_resident=True)
    store = module._resident
    expected = module.splits["val"].tensors[0][[4, 0]]
    assert torch.equal(store.gather(torch.tensor([store.offsets["val"] + 4, store.offsets["val"]])), expected)
    # "meta" stands in for an accelerator: the store moves once, to the indices' device
    gathered = store.gather(torch.tensor([0, 1], device="meta"))
    assert gathered.device.type == "meta" and store.images.device.type == "meta"


def test_device_resident_is_refused_for_a_lazily_read_folder() -> None:
    with pytest.raises(ValueError, match="device_resident needs an in-memory dataset"):
        ImageClassificationDataModule(dataset="imagefolder", device_resident=True)
