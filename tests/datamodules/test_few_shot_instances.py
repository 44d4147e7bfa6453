"""RefT's datamodule: the SynthShapes-FSIS validation split is its own draw (no test image in it, the
train and test splits unchanged by adding it) and is served like the test split; other datasets have none."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.few_shot_instances import FewShotInstanceSegmentationDataModule
from datamodules.synthetic_shapes import write_synthetic_shapes
from tests_support import shared_data_root

SIZES = {"seed": 3, "train_images": 40, "test_images": 12}


def _pixels(folder: Path, split: str) -> list[np.ndarray]:
    coco = json.loads((folder / f"{split}.json").read_text())
    return [np.asarray(Image.open(folder / "images" / image["file_name"])) for image in coco["images"]]


def test_validation_split_is_disjoint_from_test_and_leaves_the_other_splits_alone(tmp_path: Path) -> None:
    without = write_synthetic_shapes(tmp_path / "a", **SIZES)
    with_val = write_synthetic_shapes(tmp_path / "b", **SIZES, val_images=12)
    assert not (without / "val.json").exists() and (with_val / "val.json").is_file()
    assert without.name != with_val.name  # the cache key names the val size only when there is one
    for split in ("train", "test"):  # own generator streams: adding val changes neither split
        assert (without / f"{split}.json").read_text() == (with_val / f"{split}.json").read_text()
        assert all(np.array_equal(a, b) for a, b in zip(_pixels(without, split), _pixels(with_val, split)))
    test_images = {image.tobytes() for image in _pixels(with_val, "test") + _pixels(with_val, "train")}
    val_images = _pixels(with_val, "val")
    assert len(val_images) == 12 and not test_images & {image.tobytes() for image in val_images}


def test_datamodule_serves_the_validation_split_like_the_test_split(tmp_path: Path) -> None:
    datamodule = FewShotInstanceSegmentationDataModule(cache_dir=str(tmp_path), synthetic_train_images=40,
                                                       synthetic_test_images=12, synthetic_seed=3,
                                                       synthetic_val_images=10, eval_batch_size=4)
    datamodule.prepare_data()
    datamodule.setup()
    assert datamodule.has_validation_split
    loader = datamodule.val_dataloader()
    assert loader.dataset.coco is datamodule.val_coco and len(loader.dataset) == 10
    annotations = sum(len(loader.dataset[index]["labels"]) for index in range(10))
    assert annotations == len(datamodule.val_coco.getAnnIds())  # every class annotated, as in test
    # the same train/test as the parent datamodule would read without a validation split
    plain = FewShotInstanceSegmentationDataModule(cache_dir=str(tmp_path), synthetic_train_images=40,
                                                  synthetic_test_images=12, synthetic_seed=3)
    plain.setup()
    assert not plain.has_validation_split
    assert plain.test_coco.dataset["annotations"] == datamodule.test_coco.dataset["annotations"]
    with pytest.raises(ValueError, match="synthetic_val_images"):
        plain.val_dataloader()


def test_coco_json_has_no_validation_split() -> None:
    fruits = "coco_fruits_nuts/trainval.json"
    datamodule = FewShotInstanceSegmentationDataModule(dataset="coco-json", data_dir=str(shared_data_root(fruits)),
                                                       train_json=fruits, test_json=fruits, novel_classes=["fig"],
                                                       synthetic_val_images=300)
    assert not datamodule.has_validation_split


def test_instance_masks_lie_on_their_objects_pixels_also_after_the_flip(tmp_path: Path) -> None:
    """Each annotated mask covers one flat-coloured object (the generator paints an object in one colour
    plus noise of std 6, the background is a gradient plus noise of std 12), so the pixels under a
    correctly aligned mask vary little, while a transposed or shifted mask straddles object and
    background; the training flip moves image and masks together (issue 27 diagnosis)."""
    import torch
    from types import SimpleNamespace

    from datamodules.coco_instances import IMAGENET_MEAN, IMAGENET_STD, collate_instances

    datamodule = FewShotInstanceSegmentationDataModule(cache_dir=str(tmp_path), synthetic_train_images=24,
                                                       synthetic_test_images=4, synthetic_seed=5)
    datamodule.setup()
    items = [datamodule.base_set[index] for index in range(24)]

    def spread(image: torch.Tensor, mask: torch.Tensor) -> float:  # mean over channels of the pixel std under the mask
        return float(image.float()[:, mask].std(1).mean())

    masks = [(item["image"], mask) for item in items for mask in item["masks"] if mask.sum() >= 30]
    assert len(masks) >= 20
    aligned = np.median([spread(image, mask) for image, mask in masks])
    transposed = np.median([spread(image, mask.T) for image, mask in masks])
    shifted = np.median([spread(image, mask.roll(4, dims=1)) for image, mask in masks])
    assert aligned < 9 < min(transposed, shifted)
    # the random horizontal flip of a training batch keeps every mask on its object
    datamodule.trainer = SimpleNamespace(training=True)
    torch.manual_seed(0)
    batch = datamodule.on_after_batch_transfer(collate_instances(items), 0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    flipped = [not torch.equal(after, before["masks"]) for after, before in zip(batch["masks"], items)]
    assert any(flipped) and not all(flipped)
    pixels = (batch["image"] * std + mean) * 255
    after = [spread(image, mask) for image, masks_of in zip(pixels, batch["masks"]) for mask in masks_of if mask.sum() >= 30]
    assert np.median(after) == pytest.approx(aligned, abs=0.5)
