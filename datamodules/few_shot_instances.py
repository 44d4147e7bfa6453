"""The RefT datamodule: ``coco_instances``' COCO few-shot protocol plus a validation split for calibration.

``CocoInstanceSegmentationDataModule`` (``datamodules/coco_instances.py``) trains on the base set or
a K-shot set and tests on the test set; it has no validation split, so no hyper-parameter could be
chosen without the test labels. This subclass adds one for the generated dataset: with
``synthetic_val_images > 0`` SynthShapes-FSIS also writes ``val.json`` from its own generator
stream (``datamodules.synthetic_shapes``), disjoint from the test images and from the K-shot draws
(those come from ``train.json``). ``val_dataloader`` serves it with all classes annotated, exactly
as the test set is served, so ``litbench sweep`` (``evaluate_on="val"``) scores a run with its own
``test_step`` on it. The COCO ground truth of a split is the ``coco`` of its dataset (the RefT module
evaluates against the dataset it was handed). Other datasets (``coco2017``, ``coco-json``) keep no
validation split (``has_validation_split`` is False), and everything else is the parent's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from datamodules.coco_instances import CocoInstanceSegmentationDataModule, load_coco
from datamodules.synthetic_shapes import write_synthetic_shapes


class FewShotInstanceSegmentationDataModule(CocoInstanceSegmentationDataModule):
    def __init__(self, *args: Any, synthetic_val_images: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.synthetic_val_images = synthetic_val_images
        self.val_coco = self.val_set = None

    @property
    def has_validation_split(self) -> bool:
        return self.dataset == "synthetic-shapes" and self.synthetic_val_images > 0

    def _synthetic_folder(self) -> Path:
        hp = self.hparams
        return write_synthetic_shapes(self.cache_dir, seed=hp.synthetic_seed, train_images=hp.synthetic_train_images,
                                      test_images=hp.synthetic_test_images, image_size=self.image_size,
                                      val_images=self.synthetic_val_images)

    def _paths(self) -> tuple[Path, Path, Path, Path]:
        if not self.has_validation_split:
            return super()._paths()
        folder = self._synthetic_folder()  # the same train/test as without val (own generator streams)
        return folder / "train.json", folder / "images", folder / "test.json", folder / "images"

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.has_validation_split and self.val_set is None:
            self.val_coco = load_coco(self._synthetic_folder() / "val.json")
            self.val_set = self._dataset(self.val_coco, self.train_root, {
                image_id: [a for a in self.val_coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
                for image_id in sorted(self.val_coco.getImgIds())})

    def val_dataloader(self) -> DataLoader:
        self.setup()
        if self.val_set is None:
            raise ValueError(f"dataset {self.dataset} has no validation split here; SynthShapes-FSIS gets one "
                             "with data.init_args.synthetic_val_images=300")
        return self._loader(self.val_set, shuffle=False, batch_size=self.eval_batch_size, shard=True)
