"""Readers for image-classification data in its original formats, each returning ``ImageArrays``.

Every reader returns uint8 images in ``[N, C, H, W]`` plus int64 labels and the class names, so the
datamodule can keep a whole small dataset in memory and augment it per batch. Large trees
(``ImageFolder``, e.g. ImageNet) are read lazily by the datamodule instead.

Missing files raise a one-line ``FileNotFoundError`` naming the files expected and how to get them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_MNIST_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                         "ankle boot")
MNIST_CLASSES = tuple(str(digit) for digit in range(10))

CIFAR10_JPG_ZIPS = {"train": "cifar10_train500pc_jpg.zip", "test": "cifar10_test_jpg.zip"}
IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


@dataclass
class ImageArrays:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def subset(self, indices: np.ndarray | torch.Tensor) -> "ImageArrays":
        index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return ImageArrays(self.images[index], self.labels[index], self.class_names)


def first_existing_folder(candidates: list[Path], required: tuple[str, ...], *, what: str, how: str) -> Path:
    """The first folder holding every file in ``required``; otherwise one line naming them all."""
    for folder in candidates:
        if all((folder / name).is_file() for name in required):
            return folder
    looked = ", ".join(str(folder) for folder in candidates)
    raise FileNotFoundError(f"{what}: need {', '.join(required)} in one of [{looked}]; {how}")


# -- CIFAR-10 as JPEG zips (../shared/data/cifar10_jpg) --------------------------------------------
def read_cifar10_jpg_zip(zip_path: Path) -> ImageArrays:
    """Decode ``<split>/<class>/NNNN.jpg`` members of a store-only zip, sorted by member name.

    A truncated or garbled archive, or a member that does not decode, is one ValueError naming it."""
    from PIL import Image

    name = "(the archive)"
    try:
        with zipfile.ZipFile(zip_path) as archive:
            names = sorted(member for member in archive.namelist() if member.lower().endswith(".jpg"))
            if not names:
                raise ValueError(f"{zip_path} holds no .jpg members; expected <split>/<class>/NNNN.jpg")
            class_index = {class_name: index for index, class_name in enumerate(CIFAR10_CLASSES)}
            images = np.empty((len(names), 32, 32, 3), dtype=np.uint8)
            labels = np.empty(len(names), dtype=np.int64)
            for row, name in enumerate(names):
                class_name = name.split("/")[1] if name.count("/") >= 2 else ""
                if class_name not in class_index:
                    raise ValueError(f"{zip_path}: member {name} is not under one of the CIFAR-10 class folders")
                images[row] = np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("RGB"))
                labels[row] = class_index[class_name]
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - BadZipFile, a CRC error, a JPEG PIL cannot decode: all bad input
        raise ValueError(f"{zip_path}: {name} cannot be read ({type(exc).__name__}: {' '.join(str(exc).split())}); "
                         "the archive is truncated or corrupt - replace it with a fresh copy") from None
    return ImageArrays(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels),
                       CIFAR10_CLASSES)


# -- MNIST / Fashion-MNIST idx .gz files ---------------------------------------------------------
def _read_gzip(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip checks length and CRC at the end of the stream
        raise ValueError(f"{path} cannot be read ({type(exc).__name__}: {' '.join(str(exc).split())}); the gzip "
                         "file is truncated or corrupt - replace it with a fresh copy") from None


def read_idx_pair(images_gz: Path, labels_gz: Path, class_names: tuple[str, ...]) -> ImageArrays:
    """Read an (images, labels) pair of original IDX files (gzip), checking their magic numbers."""
    image_bytes, label_bytes = _read_gzip(images_gz), _read_gzip(labels_gz)
    if int.from_bytes(image_bytes[:4], "big") != 2051 or int.from_bytes(label_bytes[:4], "big") != 2049:
        raise ValueError(f"{images_gz.name}/{labels_gz.name} are not IDX image/label files (bad magic number)")
    count, rows, cols = (int.from_bytes(image_bytes[offset:offset + 4], "big") for offset in (4, 8, 12))
    images = np.frombuffer(image_bytes, dtype=np.uint8, offset=16)
    labels = np.frombuffer(label_bytes, dtype=np.uint8, offset=8)
    if images.size != count * rows * cols or labels.size != count:
        raise ValueError(f"{images_gz.name}: header says {count}x{rows}x{cols} but the file is truncated or padded")
    return ImageArrays(torch.from_numpy(images.reshape(count, 1, rows, cols).copy()),
                       torch.from_numpy(labels.astype(np.int64)), class_names)


# -- CIFAR-10 python pickle (torchvision) -----------------------------------------------------------
def read_cifar10_pickle(root: Path, *, train: bool, download: bool) -> ImageArrays:
    from torchvision.datasets import CIFAR10

    dataset = CIFAR10(root=str(root), train=train, download=download)
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
    return ImageArrays(images, torch.as_tensor(dataset.targets, dtype=torch.long), tuple(dataset.classes))


# -- generated default (no files) ---------------------------------------------------------------
def generate_gratings(*, num_images: int, num_classes: int = 10, image_size: int = 32, seed: int = 0,
                      noise_std: float = 0.25) -> ImageArrays:
    """A learnable but not trivial synthetic set: class = (orientation, frequency) of a colour grating.

    Each image is a sinusoidal grating whose orientation and spatial frequency identify the class,
    with a random phase, a random per-image colour and pixel noise, so colour alone says nothing and a
    translation (crop augmentation) keeps the label. Classes are balanced (round-robin labels).
    """
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_images) % num_classes
    labels = labels[torch.randperm(num_images, generator=generator)]
    angle = labels.float() * (torch.pi / num_classes)
    frequency = 2.0 + (labels % 3).float() * 1.5
    coords = torch.linspace(-1.0, 1.0, image_size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    phase = torch.rand(num_images, generator=generator) * 2 * torch.pi
    projection = torch.cos(angle)[:, None, None] * xx + torch.sin(angle)[:, None, None] * yy
    grating = torch.sin(torch.pi * frequency[:, None, None] * projection + phase[:, None, None])  # [N, H, W]
    colour = torch.rand(num_images, 3, generator=generator) * 0.6 + 0.2
    images = 0.5 + 0.35 * grating[:, None] * colour[:, :, None, None]
    images = images + noise_std * torch.randn(images.shape, generator=generator) * 0.35
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return ImageArrays(images, labels.long(), tuple(f"grating-{index}" for index in range(num_classes)))


# -- decoded-array cache -----------------------------------------------------------------------------
def cached_arrays(cache_dir: Path, source: Path, reader) -> ImageArrays:
    """Decode ``source`` once and keep the arrays in ``cache_dir`` keyed by its name, size and mtime.

    Every run and stage of a suite would otherwise decode the JPEGs again.
    The cache file is written under a temporary name and renamed, so a killed run leaves no half file.
    """
    stat = source.stat()
    key = hashlib.sha1(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cache_file = cache_dir / "images" / f"{source.stem}-{key}.pt"
    if cache_file.is_file():
        try:
            payload = torch.load(cache_file, weights_only=True)
            return ImageArrays(payload["images"], payload["labels"], tuple(payload["class_names"]))
        except Exception:  # a corrupt cache file is rebuilt, never trusted
            cache_file.unlink(missing_ok=True)
    arrays = reader(source)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    partial = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.partial")
    torch.save({"images": arrays.images, "labels": arrays.labels, "class_names": list(arrays.class_names)}, partial)
    partial.replace(cache_file)
    return arrays
