"""Image-classification datamodules shared by the vision benchmarks (EMO, LRPET, TinyMIM, DOORPING, ...).

``ImageClassificationDataModule`` picks its source by ``dataset`` (the name also lands in the run
record, so a record says which variant of a dataset it used):

* ``"cifar10-jpg"`` — the CIFAR-10 JPEG layout of ``../shared/data/cifar10_jpg``: two store-only
  zips ``cifar10_train500pc_jpg.zip`` (5,000 train images, 500 per class) and
  ``cifar10_test_jpg.zip`` (the full 10,000 test images), members ``<split>/<class>/NNNN.jpg``, read
  straight from the zips (never unpacked). Looked up in ``<data_dir>/cifar10_jpg/`` then ``<data_dir>/``.
  Note the JPEG conversion is lossy, so pixels differ slightly from the official release.
* ``"cifar10"`` — the official python-pickle release (``cifar-10-batches-py``) through
  torchvision's ``CIFAR10``, looked up in ``<data_dir>/cifar10/`` then ``<data_dir>/``; with
  ``download=True`` torchvision fetches it into ``<cache_dir>/cifar10``.
* ``"mnist"`` / ``"fashion-mnist"`` — the four original IDX ``.gz`` files, looked up in
  ``<data_dir>/{mnist,MNIST/raw}/`` (``<data_dir>/{fashion_mnist,FashionMNIST/raw}/``).
* ``"mnist-t10k-split"`` — only the 10k MNIST *test* files (``../shared/data/mnist_test``): they are
  split deterministically (stratified, ``split_seed``) into ``t10k_test_size`` test images and a
  train pool; the name says so because these numbers are not comparable with standard MNIST.
* ``"imagefolder"`` — any ``torchvision.datasets.ImageFolder`` tree at ``<data_dir>/<folder>``
  with ``train/`` and ``val/`` (or ``test/``) subfolders (ImageNet layout). Read lazily, resized
  (short side) and centre-cropped to ``image_size``.
* ``"generated"`` (default) — a seeded synthetic 10-class 32×32 colour-grating set that needs no
  files (``generated_train_size`` / ``generated_test_size`` images; see ``generate_gratings``).

Splits: ``val_size`` images are held out of the train split, stratified by class with
``split_seed``; then ``train_size`` (``None`` = all the rest) and ``test_size`` (``None`` = all) take
stratified subsets. ``split_seed`` does not follow the run seed, so every seed of a benchmark sees
the same images and seeds vary only the model and the augmentation.

Batches are ``(images float32 [B, C, H, W], labels int64)``. In-memory datasets keep uint8 tensors;
augmentation (``augment``: random crop from a zero-padded image, pad = ``image_size // 8`` i.e. 4 at
32×32, plus horizontal flip; training batches only) and normalisation with the dataset's mean/std run
on the whole batch in ``on_after_batch_transfer`` — on the accelerator when there is one — so
the loader only indexes tensors, one gather per batch (``datamodules/batched.py``). With
``device_resident=True`` (in-memory datasets) every split's images move to the accelerator once and
the loader sends only indices and labels. Lightning inserts a ``DistributedSampler`` under DDP.

``data_dir`` defaults to env ``LITBENCH_DATA``; ``cache_dir`` (decoded arrays, downloads) to env
``LITBENCH_CACHE``, else ``$XDG_CACHE_HOME/litbench``.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset

from datamodules.batched import BatchedTensorDataset, DeviceResidentImages, ResidentSplit, keep_batch
from datamodules.formats import DatasetFormat
from datamodules.image_sources import (CIFAR10_JPG_ZIPS, FASHION_MNIST_CLASSES, IDX_FILES,
                                       MNIST_CLASSES, ImageArrays, cached_arrays, first_existing_folder,
                                       generate_gratings, read_cifar10_jpg_zip, read_cifar10_pickle, read_idx_pair)
from datamodules.loaders import loader_options
from datamodules.paths import default_cache_dir

# Per-dataset channel statistics of the training images (the values everyone uses for these sets).
CHANNEL_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
DATASETS = ("generated", "cifar10-jpg", "cifar10", "mnist", "fashion-mnist", "mnist-t10k-split", "imagefolder")
DOWNLOAD_HINT = {
    "cifar10-jpg": "get the shared cifar10_jpg folder (see its SOURCE.md) and pass --data-dir",
    "cifar10": "pass --data-dir to a folder holding cifar-10-batches-py, or set data.init_args.download=true",
    "mnist": "download the four files from http://yann.lecun.com/exdb/mnist/ (or use dataset mnist-t10k-split)",
    "fashion-mnist": "download the four files from https://github.com/zalandoresearch/fashion-mnist",
    "mnist-t10k-split": "get the shared mnist_test folder (see its SOURCE.md) and pass --data-dir",
}


def stratified_indices(labels: torch.Tensor, size: int | None, *, seed: int,
                       exclude: np.ndarray | None = None) -> np.ndarray:
    """``size`` indices drawn with class proportions kept (sorted); ``None`` or all → every index."""
    candidates = np.setdiff1d(np.arange(len(labels)), exclude) if exclude is not None else np.arange(len(labels))
    if size is None or size >= len(candidates):
        return candidates
    if size <= 0:
        return np.empty(0, dtype=np.int64)
    chosen, _ = train_test_split(candidates, train_size=size, stratify=labels.numpy()[candidates], random_state=seed)
    return np.sort(chosen)


def resize_and_convert(arrays: ImageArrays, *, image_size: int | None, channels: int | None) -> ImageArrays:
    """Bilinear (antialiased) resize and 1↔3 channel conversion of a uint8 set, done once at load."""
    images = arrays.images
    if channels is not None and channels != images.shape[1]:
        if channels == 3 and images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1).contiguous()
        elif channels == 1 and images.shape[1] == 3:
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        else:
            raise ValueError(f"cannot convert {images.shape[1]} channels to {channels}")
    if image_size is not None and image_size != images.shape[-1]:
        resized = F.interpolate(images.float(), size=(image_size, image_size), mode="bilinear", antialias=True,
                                align_corners=False)
        images = resized.round().clamp(0, 255).to(torch.uint8)
    return ImageArrays(images, arrays.labels, arrays.class_names)


def random_crop_flip(images: torch.Tensor, *, padding: int) -> torch.Tensor:
    """Per-image random crop of a zero-padded batch plus random horizontal flip (torch RNG)."""
    batch, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    offset_y = torch.randint(0, 2 * padding + 1, (batch,), device=images.device)
    offset_x = torch.randint(0, 2 * padding + 1, (batch,), device=images.device)
    rows = (offset_y[:, None] + torch.arange(height, device=images.device))[:, :, None]  # [B, H, 1]
    cols = (offset_x[:, None] + torch.arange(width, device=images.device))[:, None, :]  # [B, 1, W]
    cropped = padded[torch.arange(batch, device=images.device)[:, None, None], :, rows, cols]  # [B, H, W, C]
    cropped = cropped.permute(0, 3, 1, 2)
    flip = torch.rand(batch, device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], cropped.flip(-1), cropped).contiguous()


class _FolderAsUint8(Dataset):
    """An ImageFolder whose items are uint8 [C, S, S] tensors (short side resized, centre crop)."""

    def __init__(self, root: Path, image_size: int) -> None:
        from torchvision import transforms
        from torchvision.datasets import ImageFolder

        pipeline = transforms.Compose([transforms.Resize(image_size), transforms.CenterCrop(image_size),
                                       transforms.PILToTensor()])
        self.folder = ImageFolder(str(root), transform=pipeline)
        self.targets = torch.as_tensor(self.folder.targets, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int):
        return self.folder[index]


class ImageClassificationDataModule(L.LightningDataModule):
    def __init__(self, dataset: str = "generated", data_dir: str | None = None, cache_dir: str | None = None,
                 batch_size: int = 128, eval_batch_size: int | None = None, num_workers: int = 0,
                 train_size: int | None = None, val_size: int = 500, test_size: int | None = None,
                 augment: bool = True, normalize: bool = True, image_size: int | None = None,
                 channels: int | None = None, split_seed: int = 0, download: bool = False,
                 folder: str = "imagenet", t10k_test_size: int = 2000, generated_train_size: int = 2500,
                 generated_test_size: int = 500, generated_seed: int = 0, device_resident: bool = False) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"unknown image dataset {dataset!r}; choose one of {', '.join(DATASETS)} (a folder of "
                             "your own: --datasets imagefolder --set data.init_args.folder=FOLDER, an ImageFolder "
                             "tree FOLDER/{train,val}/<class>/ under --data-dir; see `litbench datasets`)")
        if device_resident and dataset == "imagefolder":
            raise ValueError("device_resident needs an in-memory dataset; imagefolder is read lazily from disk "
                             "(leave data.init_args.device_resident false, use loader workers instead)")
        # image_size/channels stay out of the hyper-parameters: Lightning merges datamodule and model
        # hparams for the logger and refuses a key with two values (None here, 32 in the model).
        self.save_hyperparameters(ignore=["image_size", "channels"])
        self.dataset = dataset
        self.data_dir = Path(data_dir or os.environ.get("LITBENCH_DATA", "data"))
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.device_resident = num_workers, device_resident
        self._resident: DeviceResidentImages | None = None
        self.train_size, self.val_size, self.test_size = train_size, val_size, test_size
        self.augment, self.normalize = augment, normalize
        self.channels, self.split_seed, self.download = channels, split_seed, download
        self.folder, self.t10k_test_size = folder, t10k_test_size
        native_size, native_channels, self.stats_key = {
            "generated": (32, 3, None), "cifar10-jpg": (32, 3, "cifar10"), "cifar10": (32, 3, "cifar10"),
            "mnist": (28, 1, "mnist"), "mnist-t10k-split": (28, 1, "mnist"), "fashion-mnist": (28, 1, "fashion-mnist"),
            "imagefolder": (224, 3, "imagenet")}[dataset]
        self.image_size = image_size or native_size
        self.in_channels = channels or native_channels
        self.num_classes = 10  # updated from the class folders for imagefolder in setup()
        self.splits: dict[str, Dataset] = {}
        self._read_arrays: tuple[ImageArrays, ImageArrays] | None = None  # prepare_data's read, for setup
        self.mean: tuple[float, ...] = ()
        self.std: tuple[float, ...] = ()
        if self.stats_key is not None:
            self._set_stats(None)

    @staticmethod
    def dataset_formats() -> list[DatasetFormat]:
        return [
            DatasetFormat(name="torchvision ImageFolder tree", presets=("imagefolder",),
                          layout="<data-dir>/FOLDER/train/<class>/*.{jpg,png,...} and <data-dir>/FOLDER/val/<class>/ "
                                 "(or test/); FOLDER = data.init_args.folder (default imagenet)",
                          own_data_args={"folder": "myimages", "image_size": 32}, own_name="imagefolder",
                          notes=("the dataset name stays imagefolder; folder names your tree",
                                 "the class count comes from the class folders and reaches models that leave "
                                 "num_classes unset")),
            DatasetFormat(name="CIFAR-10 / MNIST originals", presets=("cifar10-jpg", "cifar10", "mnist",
                                                                      "fashion-mnist", "mnist-t10k-split"),
                          layout="<data-dir>/cifar10_jpg/*.zip, <data-dir>/cifar10/cifar-10-batches-py/, "
                                 "<data-dir>/{mnist,fashion_mnist}/*-ubyte.gz, <data-dir>/mnist_test/"),
        ]

    def model_init_args(self) -> dict[str, int]:
        """``num_classes`` of the data (an ImageFolder's class folders), for models that leave it unset."""
        if self.dataset == "imagefolder":
            from torchvision.datasets.folder import find_classes

            return {"num_classes": len(find_classes(str(self.data_dir / self.folder / "train"))[0])}
        return {"num_classes": self.num_classes}

    # -- locating files ----------------------------------------------------------------------
    def _folder_with(self, required: tuple[str, ...], subfolders: list[str]) -> Path:
        candidates = [self.data_dir / sub for sub in subfolders] + [self.data_dir]
        return first_existing_folder(candidates, required, what=f"dataset {self.dataset}", how=DOWNLOAD_HINT[self.dataset])

    def prepare_data(self) -> None:
        """Check (or download) the files and read every image once (decoded arrays are cached), so
        a missing file is a one-line FileNotFoundError and a corrupt one a one-line ValueError
        before any run starts."""
        self._check_files()
        if self.dataset in ("cifar10-jpg", "mnist", "fashion-mnist", "mnist-t10k-split"):
            self._read_arrays = self._load_train_test()  # setup() reuses them: one read per process

    def _check_files(self) -> None:
        if self.dataset == "cifar10-jpg":
            self._folder_with(tuple(CIFAR10_JPG_ZIPS.values()), ["cifar10_jpg"])
        elif self.dataset in ("mnist", "fashion-mnist"):
            self._idx_folder(IDX_FILES["train"] + IDX_FILES["test"])
        elif self.dataset == "mnist-t10k-split":
            self._idx_folder(IDX_FILES["test"])
        elif self.dataset == "cifar10":
            self._cifar10_root()
        elif self.dataset == "imagefolder":
            root = self.data_dir / self.folder
            if not (root / "train").is_dir():
                raise FileNotFoundError(f"dataset imagefolder: need {root}/train/<class>/*.jpg (and val/); "
                                        "set data.init_args.folder or --data-dir")

    def _idx_folder(self, required: tuple[str, ...]) -> Path:
        subfolders = {"fashion-mnist": ["fashion_mnist", "FashionMNIST/raw"]}.get(
            self.dataset, ["mnist", "MNIST/raw", "mnist_test"])
        return self._folder_with(required, subfolders)

    def _cifar10_root(self) -> Path:
        for root in (self.data_dir / "cifar10", self.data_dir, self.cache_dir / "cifar10"):
            if (root / "cifar-10-batches-py").is_dir():
                return root
        if self.download:
            read_cifar10_pickle(self.cache_dir / "cifar10", train=True, download=True)
            return self.cache_dir / "cifar10"
        raise FileNotFoundError(f"dataset cifar10: need cifar-10-batches-py in {self.data_dir}/cifar10 or "
                                f"{self.data_dir}; {DOWNLOAD_HINT['cifar10']}")

    # -- reading -------------------------------------------------------------------------------
    def _load_train_test(self) -> tuple[ImageArrays, ImageArrays]:
        if self.dataset == "generated":
            hp = self.hparams
            # train and test are drawn separately so each is class-balanced; the seeds differ
            return (generate_gratings(num_images=hp.generated_train_size, seed=2 * hp.generated_seed),
                    generate_gratings(num_images=hp.generated_test_size, seed=2 * hp.generated_seed + 1))
        if self.dataset == "cifar10-jpg":
            folder = self._folder_with(tuple(CIFAR10_JPG_ZIPS.values()), ["cifar10_jpg"])
            return tuple(cached_arrays(self.cache_dir, folder / CIFAR10_JPG_ZIPS[split], read_cifar10_jpg_zip)
                         for split in ("train", "test"))
        if self.dataset == "cifar10":
            root = self._cifar10_root()
            return (read_cifar10_pickle(root, train=True, download=False),
                    read_cifar10_pickle(root, train=False, download=False))
        classes = FASHION_MNIST_CLASSES if self.dataset == "fashion-mnist" else MNIST_CLASSES
        if self.dataset == "mnist-t10k-split":
            folder = self._idx_folder(IDX_FILES["test"])
            t10k = read_idx_pair(*(folder / name for name in IDX_FILES["test"]), classes)
            test_index = stratified_indices(t10k.labels, self.t10k_test_size, seed=self.split_seed)
            train_index = np.setdiff1d(np.arange(len(t10k.labels)), test_index)
            return t10k.subset(train_index), t10k.subset(test_index)
        folder = self._idx_folder(IDX_FILES["train"] + IDX_FILES["test"])
        return tuple(read_idx_pair(*(folder / name for name in IDX_FILES[split]), classes) for split in ("train", "test"))

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self.dataset == "imagefolder":
            self._setup_folder()
            return
        train_pool, test = (resize_and_convert(arrays, image_size=self.image_size, channels=self.channels)
                            for arrays in (self._read_arrays or self._load_train_test()))
        self._read_arrays = None  # the splits hold what is needed from here on
        self.class_names = train_pool.class_names
        self.num_classes = len(self.class_names)
        val_index = stratified_indices(train_pool.labels, self.val_size, seed=self.split_seed)
        train_index = stratified_indices(train_pool.labels, self.train_size, seed=self.split_seed, exclude=val_index)
        test_index = stratified_indices(test.labels, self.test_size, seed=self.split_seed)
        for name, arrays in (("train", train_pool.subset(train_index)), ("val", train_pool.subset(val_index)),
                             ("test", test.subset(test_index))):
            self.splits[name] = BatchedTensorDataset(arrays.images, arrays.labels)
        self._set_stats(train_pool.subset(train_index).images)
        if self.device_resident:
            self._resident = DeviceResidentImages(self.splits)

    def _setup_folder(self) -> None:
        root = self.data_dir / self.folder
        pool = _FolderAsUint8(root / "train", self.image_size)
        test_root = root / "val" if (root / "val").is_dir() else root / "test"
        test = _FolderAsUint8(test_root, self.image_size)
        self.class_names = tuple(pool.folder.classes)
        self.num_classes = len(self.class_names)
        from torch.utils.data import Subset

        val_index = stratified_indices(pool.targets, self.val_size, seed=self.split_seed)
        train_index = stratified_indices(pool.targets, self.train_size, seed=self.split_seed, exclude=val_index)
        test_index = stratified_indices(test.targets, self.test_size, seed=self.split_seed)
        self.splits = {"train": Subset(pool, train_index.tolist()), "val": Subset(pool, val_index.tolist()),
                       "test": Subset(test, test_index.tolist())}
        self._set_stats(None)

    def _set_stats(self, train_images: torch.Tensor | None) -> None:
        if self.stats_key is not None:
            mean, std = CHANNEL_STATS[self.stats_key]
            if len(mean) != self.in_channels:  # converted channels: repeat or average the statistics
                mean, std = (mean * self.in_channels, std * self.in_channels) if len(mean) == 1 else \
                    ((sum(mean) / 3,), (sum(std) / 3,))
        else:  # generated data: statistics of its own training images
            pixels = train_images.float().div(255).transpose(0, 1).reshape(self.in_channels, -1)
            mean, std = tuple(pixels.mean(1).tolist()), tuple(pixels.std(1).tolist())
        self.mean, self.std = tuple(mean), tuple(std)

    # -- loaders and per-batch transforms ---------------------------------------------------------
    def _loader(self, split: str, *, shuffle: bool, batch_size: int) -> DataLoader:
        if not self.splits:
            self.setup()
        dataset = self._resident.split(split) if self._resident is not None else self.splits[split]
        batched = isinstance(dataset, (BatchedTensorDataset, ResidentSplit))  # imagefolder: per-sample + collate
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=keep_batch if batched else None,
                          **loader_options(self.num_workers))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False, batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, batch_size=self.eval_batch_size)

    def to_model_input(self, images: torch.Tensor, *, train: bool) -> torch.Tensor:
        """uint8 batch → float batch: augmentation (training only) then [0, 1] scaling and normalisation."""
        if train and self.augment:
            images = random_crop_flip(images, padding=max(1, self.image_size // 8))
        images = images.float().div_(255)
        if self.normalize:
            mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
            images = (images - mean) / std
        return images

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        if self._resident is not None:  # the loader sent global indices; the images wait on the device
            images = self._resident.gather(images)
        training = self.trainer is not None and self.trainer.training
        return self.to_model_input(images, train=training), labels
