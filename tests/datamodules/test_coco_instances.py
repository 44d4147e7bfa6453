"""The COCO-json reader on the real fruits & nuts set, TFA K-shot sampling (gFSIS and novel-only FSIS) and SynthShapes-FSIS."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from datamodules.coco_instances import (CocoInstanceSegmentationDataModule, load_coco, tfa_few_shot_annotations,
                                        tfa_sample_class)
from datamodules.synthetic_shapes import NOVEL_SHAPES, SHAPE_CLASSES, write_synthetic_shapes
from tests_support import shared_data_root

FRUITS = "coco_fruits_nuts/trainval.json"


def _fruits(**kwargs) -> CocoInstanceSegmentationDataModule:
    root = shared_data_root(FRUITS)
    datamodule = CocoInstanceSegmentationDataModule(dataset="coco-json", data_dir=str(root), train_json=FRUITS,
                                                    test_json=FRUITS, novel_classes=["fig"], **kwargs)
    datamodule.prepare_data()
    datamodule.setup()
    return datamodule


def test_fruits_nuts_counts_names_and_masks() -> None:
    """SOURCE.md: 18 images of 800x600, 165 instances: date 71, fig 41, hazelnut 53, all masks non-empty."""
    datamodule = _fruits(image_size=64)
    coco = datamodule.test_coco
    assert len(coco.getImgIds()) == 18 and len(coco.getAnnIds()) == 165
    assert datamodule.class_names == ["date", "fig", "hazelnut"] and datamodule.category_ids == [1, 2, 3]
    counts = Counter(annotation["category_id"] for annotation in coco.dataset["annotations"])
    assert counts == {1: 71, 2: 41, 3: 53}
    for annotation in coco.dataset["annotations"]:
        decoded = coco.annToMask(annotation)
        assert decoded.shape == (600, 800) and decoded.sum() > 0
    # the test split keeps every annotation; base training drops the novel class (fig), keeps the images
    assert len(datamodule.test_set) == 18 and len(datamodule.base_set) == 18
    assert sum(len(v) for v in datamodule.base_set.annotations_by_image.values()) == 165 - 41
    assert datamodule.novel_labels == [1] and datamodule.base_labels == [0, 2]
    item = datamodule.test_set[0]
    expected = len(coco.getAnnIds(imgIds=[item["image_id"]]))
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.uint8
    assert item["masks"].shape == (expected, 64, 64) and item["masks"].dtype == torch.bool
    assert (item["height"], item["width"]) == (600, 800)
    assert item["masks"].flatten(1).any(1).all()  # every instance survives the resize to 64x64


def test_tfa_rule_on_fruits_nuts_is_exact_and_seeded() -> None:
    coco = load_coco(shared_data_root(FRUITS) / FRUITS)
    one_shot = tfa_few_shot_annotations(coco, shots=1, seed=0)
    assert {category: len(annotations) for category, annotations in one_shot.items()} == {1: 1, 2: 1, 3: 1}
    assert tfa_few_shot_annotations(coco, shots=1, seed=0) == one_shot
    # figs: 3 shots from images holding 1-5 figs; every instance of a chosen image is included
    for seed in range(4):
        figs = tfa_sample_class(coco, 2, shots=3, seed=seed)
        assert len(figs) == 3
        for image_id in {a["image_id"] for a in figs}:
            assert sum(a["image_id"] == image_id for a in figs) == len(coco.getAnnIds(imgIds=[image_id], catIds=[2]))
    # one date image holds a single date, so after the nested 1-shot draw no 2-shot set exists: a clear error
    with pytest.raises(ValueError, match="exactly 2 instances"):
        tfa_sample_class(coco, 1, shots=2, seed=0)


@pytest.fixture(scope="module")
def shapes_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_shapes(tmp_path_factory.mktemp("shapes"), seed=3, train_images=150, test_images=20)


def test_synthetic_shapes_are_coco_json_with_rle(shapes_folder: Path, tmp_path: Path) -> None:
    train = json.loads((shapes_folder / "train.json").read_text())
    assert [c["name"] for c in train["categories"]] == list(SHAPE_CLASSES) and len(train["images"]) == 150
    annotation = train["annotations"][0]
    assert isinstance(annotation["segmentation"]["counts"], str)
    decoded = mask_utils.decode({**annotation["segmentation"], "counts": annotation["segmentation"]["counts"].encode()})
    assert decoded.shape == (64, 64) and decoded.sum() == annotation["area"] >= 12
    again = write_synthetic_shapes(tmp_path, seed=3, train_images=150, test_images=20)
    assert (again / "train.json").read_bytes() == (shapes_folder / "train.json").read_bytes()  # seeded


def test_k_shot_sets_are_exact_nested_and_follow_the_seed(shapes_folder: Path) -> None:
    coco = load_coco(shapes_folder / "train.json")
    sets = {shots: tfa_few_shot_annotations(coco, shots=shots, seed=0) for shots in (1, 5, 10)}
    for shots, by_class in sets.items():
        assert {category: len(a) for category, a in by_class.items()} == {category: shots for category in range(1, 11)}
    for category in range(1, 11):  # TFA's nesting: the 5-shot draws extend the 1-shot ones
        assert {a["id"] for a in sets[1][category]} <= {a["id"] for a in sets[5][category]} <= {a["id"] for a in sets[10][category]}
    other_seed = tfa_few_shot_annotations(coco, shots=5, seed=1)
    assert other_seed != sets[5] and tfa_few_shot_annotations(coco, shots=5, seed=0) == sets[5]


def test_datamodule_splits_and_support_set(shapes_folder: Path) -> None:
    datamodule = CocoInstanceSegmentationDataModule(cache_dir=str(shapes_folder.parent), synthetic_seed=3,
                                                    synthetic_train_images=150, synthetic_test_images=20, shot_seed=0)
    datamodule.setup()
    assert datamodule.class_names == list(SHAPE_CLASSES)
    assert [datamodule.class_names[label] for label in datamodule.novel_labels] == list(NOVEL_SHAPES)
    base_labels = torch.cat([datamodule.base_set[i]["labels"] for i in range(len(datamodule.base_set))])
    assert not np.isin(base_labels.numpy(), datamodule.novel_labels).any() and len(datamodule.base_set) == 150
    support = datamodule.support_set(5)
    labels = torch.cat([support[i]["labels"] for i in range(len(support))])
    assert torch.bincount(labels, minlength=10).tolist() == [5] * 10
    item = support[0]
    assert item["masks"].shape == (len(item["labels"]), 64, 64)
    assert len(datamodule.test_set) == 20


def test_fsis_k_shot_set_is_novel_only_and_exact(shapes_folder: Path) -> None:
    datamodule = CocoInstanceSegmentationDataModule(cache_dir=str(shapes_folder.parent), synthetic_seed=3,
                                                    synthetic_train_images=150, synthetic_test_images=20, shot_seed=0)
    assert datamodule.setting_labels("fsis") == sorted(datamodule.novel_labels) == [3, 5, 9]
    assert datamodule.setting_labels("gfsis") == list(range(10))
    for shots in (5, 10):
        fsis = datamodule.support_set(shots, "fsis")
        labels = torch.cat([fsis[i]["labels"] for i in range(len(fsis))])
        # exactly K instances of each novel class, no base annotation at all
        assert torch.bincount(labels, minlength=10).tolist() == [shots if c in (3, 5, 9) else 0 for c in range(10)]
        gfsis = datamodule.support_set(shots, "gfsis")
        novel_of = lambda dataset: {(image_id, a["id"]) for image_id in dataset.image_ids  # noqa: E731
                                    for a in dataset.annotations_by_image[image_id] if a["category_id"] in (4, 6, 10)}
        assert novel_of(fsis) == novel_of(gfsis)  # per-class streams: the same novel draws as gFSIS
        assert all(len(fsis.annotations_by_image[i]) for i in fsis.image_ids)
    with pytest.raises(ValueError, match="few-shot setting"):
        datamodule.support_set(5, "ifsis")


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    missing = CocoInstanceSegmentationDataModule(dataset="coco-json", data_dir=str(tmp_path), train_json="a.json",
                                                 test_json="a.json")
    with pytest.raises(FileNotFoundError, match="a.json"):
        missing.prepare_data()
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a COCO instances json"):
        load_coco(tmp_path / "broken.json")
    with pytest.raises(FileNotFoundError, match="coco2017"):
        CocoInstanceSegmentationDataModule(dataset="coco2017", data_dir=str(tmp_path)).prepare_data()
    with pytest.raises(ValueError, match=r"unknown instance-segmentation dataset 'nope' .*presets are synthetic-shapes, "
                                         r"coco2017, coco-json.*train_json=PATH and test_json=PATH"):
        CocoInstanceSegmentationDataModule(dataset="nope", data_dir=str(tmp_path)).prepare_data()


def _fruits_copy(tmp_path: Path) -> Path:
    import shutil

    source = shared_data_root(FRUITS) / "coco_fruits_nuts"
    target = tmp_path / "coco_fruits_nuts"
    shutil.copytree(source, target)
    for path in target.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return tmp_path


@pytest.mark.parametrize(("damage", "message"), [
    ("truncate json", "not a COCO instances json"),
    ("remove image", "listed in"),
    ("garble image", "cannot be decoded"),
    ("resize image", "is 40x30 but"),
])
def test_prepare_data_reads_the_jsons_and_every_image_header(tmp_path: Path, damage: str, message: str) -> None:
    """What used to fail inside a run (a truncated json, a missing or broken image) now stops in
    prepare_data, the pre-run check, with one line naming the file."""
    from PIL import Image

    root = _fruits_copy(tmp_path)
    folder = root / "coco_fruits_nuts"
    if damage == "truncate json":
        text = (folder / "trainval.json").read_text()
        (folder / "trainval.json").write_text(text[: len(text) // 2])
    elif damage == "remove image":
        (folder / "images" / "3.jpg").unlink()
    elif damage == "garble image":
        (folder / "images" / "3.jpg").write_bytes(b"\x00" * 100)
    else:
        Image.new("RGB", (40, 30)).save(folder / "images" / "3.jpg")
    datamodule = CocoInstanceSegmentationDataModule(dataset="coco-json", data_dir=str(root), train_json=FRUITS,
                                                    test_json=FRUITS, novel_classes=["fig"])
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        datamodule.prepare_data()
    assert message in str(error.value) and "\n" not in str(error.value)
    if damage != "truncate json":
        assert "3.jpg" in str(error.value)
