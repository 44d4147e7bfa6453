"""SynthShapes-FSIS: a seeded synthetic instance-segmentation set written as COCO json with RLE masks.

The small-scale profile of the RefT paper spec (``../shared/papers/reft.md``, "Small-scale CPU
profile"): 64x64 RGB images with a random linear-gradient background plus Gaussian noise, each
holding 1-4 instances drawn from 10 shape classes (circle, square, triangle, star, hexagon, ring,
cross, ellipse, diamond, crescent). Every instance has a random colour (the shape, never the colour,
identifies the class), a size of 10-28 px (the diameter of its circumscribed circle), a random
rotation and a random centre; later instances are painted over earlier ones, so objects may occlude
each other and each annotation is the *visible* part (an instance left with fewer than
``MIN_VISIBLE_PIXELS`` visible pixels is dropped from the annotations, it stays in the pixels).

``write_synthetic_shapes`` writes ``train.json`` (all instances annotated; the datamodule removes the
novel-class annotations for base training, as COCO base training does), ``test.json`` (all
classes annotated) and, with ``val_images > 0``, ``val.json``: a validation split for calibration
drawn from its own generator stream (train, test and val use the streams ``[seed, 0]``, ``[seed, 1]``
and ``[seed, 2]``), so it holds none of the test images and adding it changes neither other split.
Each is a standard COCO instances json whose ``segmentation`` is a compressed RLE
from ``pycocotools.mask.encode`` with ``counts`` as str, plus the PNG images under ``images/``. So
the datamodule reads these sets through exactly the pycocotools code path it uses for real COCO.
The output depends only on (seed, sizes, image size): the folder name carries a hash of them, and a
finished folder is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

SHAPE_CLASSES = ("circle", "square", "triangle", "star", "hexagon", "ring", "cross", "ellipse", "diamond", "crescent")
NOVEL_SHAPES = ("star", "ring", "crescent")
MIN_VISIBLE_PIXELS = 12
GENERATOR_VERSION = 1  # bump when the drawing changes, so cached folders are not reused


def shape_mask(shape: str, *, size: int, center: tuple[float, float], angle: float, image_size: int) -> np.ndarray:
    """Boolean [H, W] mask of one shape: ``size`` px across, rotated by ``angle`` radians."""
    rows, cols = np.mgrid[0:image_size, 0:image_size].astype(np.float64) + 0.5
    radius = size / 2.0
    dy, dx = (rows - center[0]) / radius, (cols - center[1]) / radius
    # local coordinates of the un-rotated shape (unit circumradius)
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    rho, phi = np.hypot(u, v), np.arctan2(v, u)

    def regular_polygon(sides: int) -> np.ndarray:
        normals = np.pi / sides + 2 * np.pi * np.arange(sides) / sides
        support = np.stack([u * np.cos(n) + v * np.sin(n) for n in normals])
        return (support <= np.cos(np.pi / sides)).all(0)

    if shape == "circle":
        return rho <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.72
    if shape == "triangle":
        return regular_polygon(3)
    if shape == "star":  # five points; the radius falls linearly from 1 at a tip to 0.42 between tips
        position = (phi / (2 * np.pi) * 5) % 1.0
        return rho <= 0.42 + 0.58 * np.abs(1 - 2 * position)
    if shape == "hexagon":
        return regular_polygon(6)
    if shape == "ring":
        return (rho <= 1.0) & (rho >= 0.58)
    if shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1.0))
    if shape == "ellipse":
        return (u / 1.0) ** 2 + (v / 0.55) ** 2 <= 1.0
    if shape == "diamond":
        return np.abs(u) / 0.7 + np.abs(v) <= 1.0
    if shape == "crescent":
        return (rho <= 1.0) & ((u - 0.5) ** 2 + v ** 2 > 0.8 ** 2)
    raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPE_CLASSES)}")


def draw_image(rng: np.random.Generator, *, image_size: int, max_instances: int = 4, min_size: int = 10,
               max_size: int = 28) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One uint8 [H, W, 3] image and its visible instances as (class index, bool mask) pairs."""
    ramp = np.linspace(0.0, 1.0, image_size)
    direction = rng.uniform(0, 2 * np.pi)
    gradient = np.cos(direction) * ramp[None, :] + np.sin(direction) * ramp[:, None]
    gradient = (gradient - gradient.min()) / max(np.ptp(gradient), 1e-6)
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    image = start + gradient[..., None] * (end - start)
    image = image + rng.normal(0, 12, image.shape)
    instances: list[tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(1, max_instances + 1))):
        label = int(rng.integers(len(SHAPE_CLASSES)))
        size = int(rng.integers(min_size, max_size + 1))
        center = tuple(rng.uniform(size / 3, image_size - size / 3, 2))
        mask = shape_mask(SHAPE_CLASSES[label], size=size, center=center, angle=rng.uniform(0, 2 * np.pi),
                          image_size=image_size)
        colour = rng.uniform(0, 255, 3)
        image[mask] = colour + rng.normal(0, 6, (int(mask.sum()), 3))
        instances = [(other, other_mask & ~mask) for other, other_mask in instances]  # occlusion
        instances.append((label, mask))
    visible = [(label, mask) for label, mask in instances if mask.sum() >= MIN_VISIBLE_PIXELS]
    return np.clip(image, 0, 255).astype(np.uint8), visible


def coco_categories() -> list[dict]:
    return [{"id": index + 1, "name": name, "supercategory": "shape"} for index, name in enumerate(SHAPE_CLASSES)]


def _split_json(rng: np.random.Generator, *, split: str, num_images: int, image_size: int, image_dir: Path,
                first_annotation_id: int) -> dict:
    from PIL import Image
    from pycocotools import mask as mask_utils

    images, annotations = [], []
    annotation_id = first_annotation_id
    for index in range(num_images):
        pixels, instances = draw_image(rng, image_size=image_size)
        file_name = f"{split}_{index:06d}.png"
        Image.fromarray(pixels).save(image_dir / file_name)
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "height": image_size, "width": image_size})
        for label, mask in instances:
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            annotations.append({"id": annotation_id, "image_id": image_id, "category_id": label + 1,
                                "segmentation": rle, "area": float(mask_utils.area(rle)),
                                "bbox": [float(x) for x in mask_utils.toBbox(rle)], "iscrowd": 0})
            annotation_id += 1
    return {"info": {"description": f"SynthShapes-FSIS {split}", "version": GENERATOR_VERSION},
            "images": images, "annotations": annotations, "categories": coco_categories()}


def synthetic_shapes_folder(root: str | Path, *, seed: int, train_images: int, test_images: int,
                            image_size: int, val_images: int = 0) -> Path:
    parts = [GENERATOR_VERSION, seed, train_images, test_images, image_size]
    key = json.dumps(parts + [val_images] if val_images else parts)  # sets without val keep their folder
    return Path(root) / f"synthetic_shapes-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def write_synthetic_shapes(root: str | Path, *, seed: int = 0, train_images: int = 3000, test_images: int = 300,
                           image_size: int = 64, val_images: int = 0) -> Path:
    """Generate (or reuse) the set under ``root``; returns the folder holding train.json/test.json
    (and val.json when ``val_images > 0``) and images/."""
    final = synthetic_shapes_folder(root, seed=seed, train_images=train_images, test_images=test_images,
                                    image_size=image_size, val_images=val_images)
    if (final / "test.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    # built in a private folder and renamed: concurrent writers (DDP ranks, workers) never see half a set
    partial = Path(tempfile.mkdtemp(prefix=final.name + ".partial-", dir=final.parent))
    image_dir = partial / "images"
    image_dir.mkdir()
    splits = {"train": train_images, "test": test_images, **({"val": val_images} if val_images else {})}
    for stream, (split, num_images) in enumerate(splits.items()):
        coco = _split_json(np.random.default_rng([seed, stream]), split=split, num_images=num_images,
                           image_size=image_size, image_dir=image_dir, first_annotation_id=1)
        (partial / f"{split}.json").write_text(json.dumps(coco))
    try:
        os.rename(partial, final)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(partial, ignore_errors=True)
    return final


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="write SynthShapes-FSIS as COCO json + PNG images")
    parser.add_argument("root")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-images", type=int, default=3000)
    parser.add_argument("--test-images", type=int, default=300)
    parser.add_argument("--val-images", type=int, default=0)
    arguments = parser.parse_args()
    print(write_synthetic_shapes(arguments.root, seed=arguments.seed, train_images=arguments.train_images,
                                 test_images=arguments.test_images, val_images=arguments.val_images))
