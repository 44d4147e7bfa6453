"""Blind image-quality-assessment data: score-file readers, image-folder datasets, a synthetic set.

``IQADataModule`` picks its source by ``dataset``:

* Real databases, read from their **original score files** plus an image folder:

  ==========  ======================================  ==========================  =====  ==========
  dataset     score file (``<data_dir>/iqa_scores/``)  images (``<image root>/``)   rows   label
  ==========  ======================================  ==========================  =====  ==========
  LIVE        ``LIVE.txt``                             ``LIVE/{jp2k,...}/imgN.bmp``   779  DMOS
  CSIQ        ``CSIQ.txt``                             ``CSIQ/dst_imgs/...``          866  DMOS [0,1]
  TID2013     ``TID2013.txt``                          ``TID2013/distorted_images``  3000  MOS [0,9]
  KADID-10k   ``KADID-10k.txt``                        ``KADID-10k/images``         10125  MOS [1,5]
  KonIQ-10k   ``koniq10k_distributions_sets.csv``      ``KonIQ-10k/1024x768``       10073  MOS [1,100]
  LIVE-C      ``LIVE_Challenge.txt``                   ``LIVE_Challenge/Images``     1161  MOS [0,100]
  ==========  ======================================  ==========================  =====  ==========

  The ``.txt`` files are the unified CSVs of ``icbcbicc/IQA-Dataset`` (``dis_img_path, dis_type,
  [ref_img_path,] score``, paths relative to the image root); KonIQ-10k uses the official
  ``subpic/koniq`` CSV because its MOS is on the 1-100 scale the official PMT-IQA code bins
  (``KonIQ-10k.txt`` holds the 1-5 MOS). Score files are looked up in ``<data_dir>/iqa_scores/``
  then ``<data_dir>/``; the image root is ``image_dir`` if given, else the first of
  ``<data_dir>/iqa_images/`` and ``<data_dir>/`` that holds the dataset's top folder (``LIVE/``, ...).
  The images are not redistributable and are absent from ``../shared/data``: a missing image
  folder is a one-line ``FileNotFoundError`` naming the folder and where to get the database.
  LIVE images with DMOS < 0 are dropped (as the official PMT-IQA folder does).
  These six are presets of ``ScoreFileFormat`` (score file, grade rule, row filter, resize).
* **Any other name** — a database of your own in the same format: ``score_file`` (a CSV with
  ``dis_img_path,score`` and optional ``dis_type``, ``ref_img_path``; looked up like the presets'),
  ``grade_rule`` (the score scale, one of ``GRADE_RULES``) and ``image_dir`` (or the image paths'
  top folder under ``<data_dir>/iqa_images/`` or ``<data_dir>/``). Rows that share
  ``ref_img_path`` are one content of the split; without it every image is its own content.
* ``synthetic`` — the LIVE-like set of ``datamodules/iqa_synthetic.py``: 2 crops of each of the 15
  photographs bundled with scikit-image + ``cifar_references`` CIFAR-10 test JPEGs (from
  ``<data_dir>/cifar10_jpg/``; 0 = none, no files needed), 5 distortions × 5 levels, pseudo-DMOS =
  100·(1 − SSIM) + N(0, 2²). Built once per argument set into ``<cache_dir>/iqa_synthetic/`` (PNG
  files + ``labels.csv``) and read back like a real database.
* ``generated`` (default) — the same recipe on ``generated_references`` procedural scenes; needs no
  files (smoke tests).

Splits: ``test_fraction`` of the *contents* (reference images of a full-reference database, the
source photograph of a synthetic one, each image of an authentic database) go to the test split
(``GroupShuffleSplit`` with ``split_seed``), so no content is in both splits. ``val_fraction`` (of
all contents, default 0) is then held out of the remaining contents as a validation split, for
calibration sweeps and learning curves; the test split does not depend on it. ``split_seed=None``
follows the run seed (``PL_GLOBAL_SEED``, set by ``seed_everything`` before the harness builds the
datamodule), so every seed draws a new content split, as the paper's random 80/20 splits; an
integer fixes one split for every seed.

Batches (the official HyperIQA/PMT-IQA sampling): a training item is one random
``patch_size``² crop; each image appears ``train_patches`` times per epoch (a new crop each time).
A test item is the ``test_patches`` crops of one image, ``[K, 3, p, p]``, drawn from a generator
seeded by (``split_seed``, image index) so evaluation is deterministic (the official crops are
random). Crops are uint8; the random horizontal flip (training only) and the ImageNet
normalisation run per batch in ``on_after_batch_transfer``. Labels are ``float32`` scores in the
dataset's own polarity and scale; ``grade_rule`` names the scale so a model can bin them.
Under DDP Lightning's ``DistributedSampler`` shards both splits; when the test images do not divide
evenly it repeats a few, which then count twice in the gathered correlations (the smoke test set
divides evenly, so the DDP test compares exact values).
``resize`` (``[H, W]``) resizes every image first; KonIQ-10k defaults to (384, 512) (the official
``Resize((512, 384))`` is H 512 × W 384 and distorts the 4:3 images: a deliberate deviation).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import GroupShuffleSplit
from torch.utils.data import DataLoader, Dataset

from datamodules.formats import DatasetFormat
from datamodules.loaders import loader_options
from datamodules.paths import default_cache_dir

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ScoreFileFormat:
    """One IQA database: a score CSV plus an image folder. The built-in databases are presets of it;
    any other name is read from ``score_file`` + ``grade_rule`` (+ ``image_dir``) init_args."""

    file: str  # under <data_dir>/iqa_scores/ or <data_dir>/, or an absolute path
    rows: int | None  # SOURCE.md (None: not known in advance)
    grade_rule: str  # how the label scale is binned into quality grades (modules.pmt_iqa.quality_grades)
    download: str
    min_score: float | None = None  # rows scored below are dropped (LIVE's DMOS < 0, as the official code)
    resize: tuple[int, int] | None = None  # (H, W) applied before cropping unless ``resize`` is given


DATABASES: dict[str, ScoreFileFormat] = {
    "LIVE": ScoreFileFormat("LIVE.txt", 779, "live",
                            "LIVE Release 2 from https://live.ece.utexas.edu/research/quality/subjective.htm",
                            min_score=0.0),
    "CSIQ": ScoreFileFormat("CSIQ.txt", 866, "csiq", "CSIQ from https://s2.smu.edu/~eclarson/csiq.html"),
    "TID2013": ScoreFileFormat("TID2013.txt", 3000, "tid2013", "TID2013 from https://www.ponomarenko.info/tid2013.htm"),
    "KADID-10k": ScoreFileFormat("KADID-10k.txt", 10125, "kadid",
                                 "KADID-10k from https://database.mmsp-kn.de/kadid-10k-database.html"),
    # KonIQ's official Resize((512, 384)) is height 512 x width 384, which squeezes the 4:3 landscape
    # images; (384, 512) keeps their aspect.
    "KonIQ-10k": ScoreFileFormat("koniq10k_distributions_sets.csv", 10073, "mos100",
                                 "KonIQ-10k (1024x768) from https://database.mmsp-kn.de/koniq-10k-database.html",
                                 resize=(384, 512)),
    "LIVE-C": ScoreFileFormat("LIVE_Challenge.txt", 1161, "mos100",
                              "LIVE In the Wild Challenge from https://live.ece.utexas.edu/research/ChallengeDB/"),
}
SYNTHETIC = ("synthetic", "generated")
DATASETS = (*SYNTHETIC, *DATABASES)  # presets; any other name is described by score_file + grade_rule
GRADE_RULES = ("live", "csiq", "mos100", "bid", "tid2013", "kadid")  # modules.pmt_iqa.quality_grades
OWN_DATA_HINT = ("data.init_args.score_file=FILE.csv (columns dis_img_path,score[,dis_type][,ref_img_path]; "
                 "under <data-dir>/iqa_scores/ or <data-dir>/), data.init_args.grade_rule="
                 f"{'|'.join(GRADE_RULES)} (the score scale: mos100 = MOS on 0-100, live = DMOS on 0-100, "
                 "csiq = 0-1) and optionally data.init_args.image_dir=FOLDER (default: <data-dir>/iqa_images/ "
                 "or <data-dir>/)")


def score_file_format(dataset: str, *, score_file: str | None = None,
                      grade_rule: str | None = None) -> ScoreFileFormat:
    """The preset of ``dataset`` (``score_file`` / ``grade_rule`` override its fields), or the
    database that they describe; a one-line error naming the presets and the init_args otherwise."""
    if grade_rule is not None and grade_rule not in GRADE_RULES:
        raise ValueError(f"unknown IQA grade_rule {grade_rule!r}; choose one of {', '.join(GRADE_RULES)}")
    overrides = {key: value for key, value in (("file", score_file), ("grade_rule", grade_rule)) if value is not None}
    if dataset in DATABASES:
        return replace(DATABASES[dataset], **overrides)
    if score_file is None or grade_rule is None:
        what = "no description of it" if score_file is None and grade_rule is None else \
            f"no {'score_file' if score_file is None else 'grade_rule'}"
        raise ValueError(f"unknown IQA dataset {dataset!r} and {what}: the presets are {', '.join(DATASETS)}; "
                         f"describe your own with {OWN_DATA_HINT} (see `litbench datasets pmt_iqa`)")
    return ScoreFileFormat(file=score_file, rows=None, grade_rule=grade_rule,
                           download=f"the images of your score file {score_file}")


# -- score files -----------------------------------------------------------------------------------
def read_score_file(path: Path) -> pd.DataFrame:
    """A unified IQA score CSV → columns ``image`` (relative path), ``type``, ``reference`` (or the
    image itself for authentic sets), ``content`` (the split unit) and ``score`` (float)."""
    try:
        table = pd.read_csv(path, skipinitialspace=True)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable score CSV ({type(exc).__name__})") from None
    if {"image_name", "MOS", "set"} <= set(table.columns):  # the official KonIQ-10k CSV
        table = pd.DataFrame({"image": "KonIQ-10k/1024x768/" + table["image_name"].astype(str),
                              "type": "Authentic", "score": table["MOS"], "official_set": table["set"]})
    else:
        missing = {"dis_img_path", "score"} - set(table.columns)
        if missing:
            raise ValueError(f"{path}: expected columns dis_img_path,[dis_type,][ref_img_path,]score; "
                             f"missing {', '.join(sorted(missing))}")
        table = table.rename(columns={"dis_img_path": "image", "dis_type": "type", "ref_img_path": "reference"})
    table["score"] = pd.to_numeric(table["score"], errors="coerce")
    if table["score"].isna().any():
        bad = int(table["score"].isna().idxmax())
        raise ValueError(f"{path}: row {bad + 2} has a non-numeric score")
    if "type" not in table:
        table["type"] = "unknown"
    if "reference" not in table:
        table["reference"] = table["image"]
    if "content" not in table:
        table["content"] = table["reference"]
    return table.reset_index(drop=True)


def find_score_file(data_dir: Path, dataset: str, fmt: ScoreFileFormat | None = None) -> Path:
    name = (fmt or DATABASES[dataset]).file
    candidates = [data_dir / "iqa_scores" / name, data_dir / name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    how = ("get the shared iqa_scores folder (see its SOURCE.md) and pass --data-dir" if dataset in DATABASES
           else "check data.init_args.score_file and --data-dir")
    raise FileNotFoundError(f"dataset {dataset}: score file {name} not found in {data_dir / 'iqa_scores'} or "
                            f"{data_dir}; {how}")


def find_image_root(data_dir: Path, dataset: str, table: pd.DataFrame, image_dir: str | None,
                    fmt: ScoreFileFormat | None = None) -> Path:
    """The folder under which the table's relative image paths exist (checked on a few rows)."""
    top = Path(table["image"].iloc[0]).parts[0]  # a folder, or the file itself for paths without one
    # A relative image_dir is under the data dir (else as given, relative to the working directory).
    candidates = [data_dir / image_dir, Path(image_dir)] if image_dir else [data_dir / "iqa_images", data_dir]
    for root in candidates:
        if (root / top).exists():
            probe = [root / path for path in table["image"].iloc[[0, len(table) // 2, len(table) - 1]]]
            missing = [str(path) for path in probe if not path.is_file()]
            if missing:
                raise FileNotFoundError(f"dataset {dataset}: image folder {root / top} is incomplete "
                                        f"(missing {missing[0]}); re-extract {(fmt or DATABASES[dataset]).download}")
            return root
    looked = " or ".join(str(root / top) for root in candidates)
    raise FileNotFoundError(f"dataset {dataset}: image folder {top}/ not found ({looked}); only the score "
                            f"files are shared - get {(fmt or DATABASES[dataset]).download} and put it there "
                            "(or set data.init_args.image_dir)")


def content_split(contents: pd.Series, *, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/test row indices with every content on one side only (``test_fraction`` of the contents)."""
    groups = pd.factorize(contents)[0]
    if len(np.unique(groups)) < 2:
        raise ValueError("an IQA split needs at least 2 reference contents")
    splitter = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
    train, test = next(splitter.split(np.zeros(len(groups)), groups=groups))
    return np.sort(train), np.sort(test)


def content_splits(contents: pd.Series, *, test_fraction: float, val_fraction: float,
                   seed: int) -> dict[str, np.ndarray]:
    """Train/val/test row indices, content-disjoint. The test split is ``content_split``'s (so it does
    not change with ``val_fraction``); ``val_fraction`` of all contents then leave the training side."""
    train, test = content_split(contents, test_fraction=test_fraction, seed=seed)
    if val_fraction <= 0:
        return {"train": train, "val": train[:0], "test": test}
    train_contents = contents.iloc[train].reset_index(drop=True)
    val_share = val_fraction * contents.nunique() / train_contents.nunique()
    keep, val = content_split(train_contents, test_fraction=val_share, seed=seed + 1)
    return {"train": train[keep], "val": train[val], "test": test}


def resolve_split_seed(split_seed: int | None) -> int:
    """``None`` follows the run seed (``PL_GLOBAL_SEED``), so each seed gets its own content split."""
    return int(split_seed) if split_seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))


# -- images ----------------------------------------------------------------------------------------
def load_image(path: Path, resize: tuple[int, int] | None) -> torch.Tensor:
    """uint8 [3, H, W]; ``resize`` = (H, W)."""
    from PIL import Image

    with Image.open(path) as handle:
        image = handle.convert("RGB")
        if resize is not None:
            image = image.resize((resize[1], resize[0]), Image.BILINEAR)
        array = np.asarray(image)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


class IQAPatchDataset(Dataset):
    """Random crops of scored images (see the module docstring for the sampling rules)."""

    def __init__(self, paths: list[Path], scores: np.ndarray, *, patch_size: int, patches: int, train: bool,
                 resize: tuple[int, int] | None = None, preload: bool = False, crop_seed: int = 0) -> None:
        self.paths, self.scores = list(paths), torch.tensor(np.array(scores, dtype=np.float32))
        self.patch_size, self.patches, self.train = patch_size, patches, train
        self.resize, self.crop_seed = resize, crop_seed
        self.images = [load_image(path, resize) for path in self.paths] if preload else None

    def __len__(self) -> int:
        return len(self.paths) * (self.patches if self.train else 1)

    def _image(self, index: int) -> torch.Tensor:
        image = self.images[index] if self.images is not None else load_image(self.paths[index], self.resize)
        if min(image.shape[1:]) < self.patch_size:
            raise ValueError(f"{self.paths[index]} is {tuple(image.shape[1:])}, smaller than patch_size "
                             f"{self.patch_size}; lower patch_size or set resize")
        return image

    def _crop(self, image: torch.Tensor, top: int, left: int) -> torch.Tensor:
        return image[:, top:top + self.patch_size, left:left + self.patch_size]

    def __getitem__(self, index: int):
        if self.train:  # image-major repetition as the official folders; the sampler shuffles
            image_index = index // self.patches
            image = self._image(image_index)
            top = int(torch.randint(0, image.shape[1] - self.patch_size + 1, ()))
            left = int(torch.randint(0, image.shape[2] - self.patch_size + 1, ()))
            return self._crop(image, top, left), self.scores[image_index]
        image = self._image(index)
        rng = np.random.default_rng([self.crop_seed, index])
        tops = rng.integers(0, image.shape[1] - self.patch_size + 1, size=self.patches)
        lefts = rng.integers(0, image.shape[2] - self.patch_size + 1, size=self.patches)
        crops = torch.stack([self._crop(image, int(t), int(l)) for t, l in zip(tops, lefts)])
        return crops, self.scores[index], index  # the index lets the metric drop DDP padding repeats


# -- the datamodule --------------------------------------------------------------------------------
class IQADataModule(L.LightningDataModule):
    def __init__(self, dataset: str = "generated", data_dir: str | None = None, cache_dir: str | None = None,
                 image_dir: str | None = None, batch_size: int = 12, eval_batch_size: int | None = None,
                 num_workers: int = 0, patch_size: int = 224, train_patches: int = 4, test_patches: int = 4,
                 test_fraction: float = 0.2, val_fraction: float = 0.0, split_seed: int | None = 0,
                 resize: list[int] | None = None,
                 hflip: bool = True, synthetic_seed: int = 0, reference_size: int = 128, crops_per_image: int = 2,
                 cifar_references: int = 10, generated_references: int = 8, rater_noise_std: float = 2.0,
                 score_file: str | None = None, grade_rule: str | None = None) -> None:
        super().__init__()
        # Real databases are presets of ScoreFileFormat; score_file + grade_rule describe any other one.
        self.format = None if dataset in SYNTHETIC else score_file_format(dataset, score_file=score_file,
                                                                          grade_rule=grade_rule)
        self.save_hyperparameters()
        self.dataset = dataset
        self.data_dir = Path(data_dir or os.environ.get("LITBENCH_DATA", "data"))
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.grade_rule = "live" if self.format is None else self.format.grade_rule
        self.split_seed = resolve_split_seed(split_seed)
        self.splits: dict[str, IQAPatchDataset] = {}
        self.table: pd.DataFrame | None = None
        self.split_index: dict[str, np.ndarray] = {}

    @staticmethod
    def dataset_formats() -> list[DatasetFormat]:
        return [DatasetFormat(
            name="IQA score CSV + image folder", presets=tuple(DATABASES),
            layout="<data-dir>/iqa_scores/FILE.csv (or <data-dir>/FILE.csv) with columns dis_img_path,score "
                   "[,dis_type][,ref_img_path]; image paths relative to image_dir (default <data-dir>/iqa_images/ "
                   "or <data-dir>/). Presets: iqa_scores/{LIVE,CSIQ,TID2013,KADID-10k,LIVE_Challenge}.txt, "
                   "koniq10k_distributions_sets.csv + the databases' own image folders",
            own_data_args={"score_file": "myiqa.csv", "grade_rule": "mos100", "image_dir": "myiqa_images"},
            own_name="myiqa",
            notes=(f"grade_rule names the score scale the quality grades bin: {', '.join(GRADE_RULES)} "
                   "(mos100: MOS 0-100, live: DMOS 0-100, csiq: 0-1)",
                   "rows sharing ref_img_path are one content of the content-disjoint split"))]

    # -- locating / building files ---------------------------------------------------------------
    def _synthetic_folder(self) -> Path:
        hp = self.hparams
        recipe = {"dataset": self.dataset, "seed": hp.synthetic_seed, "reference_size": hp.reference_size,
                  "rater_noise_std": hp.rater_noise_std, "version": 1}
        if self.dataset == "synthetic":
            recipe.update(crops_per_image=hp.crops_per_image, cifar_references=hp.cifar_references)
        else:
            recipe.update(generated_references=hp.generated_references)
        key = hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
        return self.cache_dir / "iqa_synthetic" / f"{self.dataset}-{key}"

    def _cifar_zip(self) -> Path:
        from datamodules.image_sources import CIFAR10_JPG_ZIPS, first_existing_folder

        folder = first_existing_folder([self.data_dir / "cifar10_jpg", self.data_dir], (CIFAR10_JPG_ZIPS["test"],),
                                       what="dataset synthetic (CIFAR-10 references)",
                                       how="get the shared cifar10_jpg folder and pass --data-dir, or set "
                                           "data.init_args.cifar_references=0")
        return folder / CIFAR10_JPG_ZIPS["test"]

    def _build_synthetic(self) -> Path:
        from datamodules import iqa_synthetic

        hp = self.hparams
        folder = self._synthetic_folder()
        if (folder / "labels.csv").is_file():
            return folder / "labels.csv"
        if self.dataset == "generated":
            references = iqa_synthetic.procedural_references(count=hp.generated_references,
                                                             reference_size=hp.reference_size, seed=hp.synthetic_seed)
        else:
            references = iqa_synthetic.skimage_references(reference_size=hp.reference_size,
                                                          crops_per_image=hp.crops_per_image, seed=hp.synthetic_seed)
            if hp.cifar_references > 0:
                from datamodules.image_sources import cached_arrays, read_cifar10_jpg_zip

                cifar = cached_arrays(self.cache_dir, self._cifar_zip(), read_cifar10_jpg_zip)
                references += iqa_synthetic.cifar10_references(cifar.images.numpy(), cifar.labels.numpy(),
                                                               count=hp.cifar_references,
                                                               reference_size=hp.reference_size)
        folder.parent.mkdir(parents=True, exist_ok=True)
        return iqa_synthetic.write_synthetic_set(folder, references, seed=hp.synthetic_seed,
                                                 rater_noise_std=hp.rater_noise_std)

    def prepare_data(self) -> None:
        """Check the score file and image folder (real sets) or build the synthetic set once."""
        if self.dataset in SYNTHETIC:
            if self.dataset == "synthetic" and self.hparams.cifar_references > 0:
                self._cifar_zip()
            self._build_synthetic()
            return
        table = read_score_file(find_score_file(self.data_dir, self.dataset, self.format))
        find_image_root(self.data_dir, self.dataset, table, self.hparams.image_dir, self.format)

    def load_table(self) -> tuple[pd.DataFrame, Path]:
        """The dataset's rows (after the dataset-specific filters) and the folder their paths start in."""
        if self.dataset in SYNTHETIC:
            labels = self._build_synthetic()
            return read_score_file(labels), labels.parent
        table = read_score_file(find_score_file(self.data_dir, self.dataset, self.format))
        root = find_image_root(self.data_dir, self.dataset, table, self.hparams.image_dir, self.format)
        if self.format.min_score is not None:
            table = table[table["score"] >= self.format.min_score].reset_index(drop=True)
        return table, root

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        hp = self.hparams
        table, root = self.load_table()
        self.table = table
        self.split_index = content_splits(table["content"], test_fraction=hp.test_fraction,
                                          val_fraction=hp.val_fraction, seed=self.split_seed)
        resize = tuple(hp.resize) if hp.resize else (self.format.resize if self.format else None)
        preload = self.dataset in SYNTHETIC  # small, equal-sized PNGs: decode once
        for name, train, patches in (("train", True, hp.train_patches), ("val", False, hp.test_patches),
                                     ("test", False, hp.test_patches)):
            rows = table.iloc[self.split_index[name]]
            self.splits[name] = IQAPatchDataset([root / path for path in rows["image"]], rows["score"].to_numpy(),
                                                patch_size=hp.patch_size, patches=patches, train=train,
                                                resize=resize, preload=preload, crop_seed=self.split_seed)

    # -- loaders and per-batch transforms ---------------------------------------------------------
    def _loader(self, split: str, *, shuffle: bool, batch_size: int) -> DataLoader:
        if not self.splits:
            self.setup()
        return DataLoader(self.splits[split], batch_size=batch_size, shuffle=shuffle,
                          **loader_options(self.hparams.num_workers))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False, batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, batch_size=self.eval_batch_size)

    def to_model_input(self, images: torch.Tensor, *, train: bool) -> torch.Tensor:
        """uint8 [..., 3, p, p] → normalised float; a random horizontal flip per training patch."""
        if train and self.hparams.hflip:
            flip = torch.rand(images.shape[0], device=images.device) < 0.5
            images = torch.where(flip.view(-1, *([1] * (images.ndim - 1))), images.flip(-1), images)
        mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=images.device).view(3, 1, 1)
        return (images.float().div_(255) - mean) / std

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, *labels = batch  # (images, scores) or, for test crops, (images, scores, image index)
        training = self.trainer is not None and self.trainer.training
        return self.to_model_input(images, train=training), *labels
