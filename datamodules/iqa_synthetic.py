"""A synthetic full-reference IQA set (LIVE/CSIQ-like) built from real photographs, for the cpu profile.

Recipe (paper spec ``pmt_iqa.md``, "Small-scale CPU profile"):

* **References** — real photographs, each a *content* (the unit a train/test split must not cut):
  ``reference_size``² crops (``crops_per_image`` per image, spread left to right) of the images that
  ship inside scikit-image (``SKIMAGE_IMAGES``: all load offline from the installed package, no
  pooch download; greyscale and the binary ``horse`` are replicated to RGB), plus
  ``cifar_references`` CIFAR-10 test JPEGs (one per class, round robin, from the shared
  ``cifar10_jpg`` zips, bilinearly upsampled 32 → ``reference_size``). Two crops of one photograph
  share a content name, so they always land on the same side of a split.
* **Distortions** — 5 types × 5 graded levels (``DISTORTIONS``): Gaussian blur σ, additive white
  Gaussian noise σ (on [0, 1] pixels), JPEG quality, contrast scale about the image mean,
  salt-and-pepper density; 25 distorted images per reference. The noise draws of one
  (reference, type) are shared by its five levels (the noise field is scaled, the salt-and-pepper
  masks are nested), so a higher level is a strictly stronger version of the same corruption.
* **Quality target (pseudo-DMOS)** — ``ssim_dmos = 100 · (1 − SSIM(ref, dist))`` with
  ``skimage.metrics.structural_similarity`` (RGB, ``data_range=1``, default 7×7 window), then
  ``dmos = clip(ssim_dmos + N(0, rater_noise_std²), 0, 100)`` as "rater noise". Like LIVE's DMOS,
  lower is better; grades follow the LIVE rule ``min(floor(dmos / 10), 9)``.

Everything is drawn from ``numpy.random.default_rng`` streams keyed by (``seed``, reference index,
distortion type), so the same arguments give bit-identical images. ``write_synthetic_set`` stores
the set in the layout of a real database — ``refs/*.png``, ``dist/*.png`` and a LIVE-like
``labels.csv`` in the column format of the shared score files (``dis_img_path, dis_type,
ref_img_path, score`` plus ``content, level, ssim_dmos``) — so the datamodule reads it through the
same score-file reader and image-folder dataset as LIVE or CSIQ.

``procedural_references`` (fractal noise + discs + bars, no files) is the tiny generated default of
the smoke profile.
"""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# Images bundled inside the scikit-image wheel (checked offline with scikit-image 0.26); the paper
# spec's list. Others (e.g. ``eagle``) need a pooch download and are deliberately absent.
SKIMAGE_IMAGES = ("astronaut", "camera", "chelsea", "coffee", "coins", "horse", "hubble_deep_field",
                  "immunohistochemistry", "moon", "page", "rocket", "text", "brick", "grass", "gravel")

# type -> the five graded levels, mildest first (paper spec table).
DISTORTIONS: dict[str, tuple[float, ...]] = {
    "gblur": (0.5, 1.0, 2.0, 3.0, 5.0),
    "awgn": (0.02, 0.05, 0.1, 0.2, 0.3),
    "jpeg": (90, 50, 25, 10, 5),
    "contrast": (0.9, 0.7, 0.5, 0.35, 0.2),
    "saltpepper": (0.005, 0.01, 0.03, 0.06, 0.1),
}


@dataclass
class Reference:
    content: str  # the source photograph; the split unit
    name: str  # unique per reference (content + crop index)
    image: np.ndarray  # float64 [H, W, 3] in [0, 1]


def _to_rgb_float(array: np.ndarray) -> np.ndarray:
    image = np.asarray(array)
    if image.dtype == bool:
        image = image.astype(np.float64)
    elif image.dtype == np.uint8:
        image = image.astype(np.float64) / 255.0
    else:
        image = image.astype(np.float64)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.clip(image[:, :, :3], 0.0, 1.0)


def skimage_references(*, reference_size: int, crops_per_image: int, seed: int,
                       names: tuple[str, ...] = SKIMAGE_IMAGES) -> list[Reference]:
    """``crops_per_image`` crops of each bundled photograph: x spread evenly, y drawn from ``seed``."""
    import skimage.data
    from skimage.transform import resize

    rng = np.random.default_rng([seed, 1])
    references = []
    for name in names:
        image = _to_rgb_float(getattr(skimage.data, name)())
        height, width = image.shape[:2]
        if min(height, width) < reference_size:  # upscale the short side (no bundled image needs it at 128)
            scale = reference_size / min(height, width)
            image = resize(image, (int(np.ceil(height * scale)), int(np.ceil(width * scale))), anti_aliasing=False)
            height, width = image.shape[:2]
        xs = np.linspace(0, width - reference_size, crops_per_image).round().astype(int)
        for crop, x in enumerate(xs):
            y = int(rng.integers(0, height - reference_size + 1))
            references.append(Reference(content=f"skimage-{name}", name=f"skimage-{name}-{crop}",
                                        image=image[y:y + reference_size, x:x + reference_size].copy()))
    return references


def cifar10_references(images_uint8_nchw, labels, *, count: int, reference_size: int) -> list[Reference]:
    """``count`` CIFAR-10 images, one per class in turn (first members by name), upsampled bilinearly."""
    import torch
    import torch.nn.functional as F

    labels = np.asarray(labels)
    per_class = {label: list(np.flatnonzero(labels == label)) for label in sorted(set(labels.tolist()))}
    chosen = []
    while len(chosen) < count and any(per_class.values()):
        for label in per_class:
            if per_class[label] and len(chosen) < count:
                chosen.append(int(per_class[label].pop(0)))
    batch = torch.as_tensor(images_uint8_nchw[chosen]).float() / 255.0
    upsampled = F.interpolate(batch, size=(reference_size, reference_size), mode="bilinear", align_corners=False)
    arrays = upsampled.clamp(0, 1).permute(0, 2, 3, 1).double().numpy()
    return [Reference(content=f"cifar10-{index}", name=f"cifar10-{index}", image=arrays[row])
            for row, index in enumerate(chosen)]


def procedural_references(*, count: int, reference_size: int, seed: int) -> list[Reference]:
    """Textured test scenes with no files: 1/f fractal noise plus a few flat discs and bars, in colour."""
    rng = np.random.default_rng([seed, 2])
    coords = np.fft.fftfreq(reference_size)
    radius = np.sqrt(coords[:, None] ** 2 + coords[None, :] ** 2)
    radius[0, 0] = 1.0
    yy, xx = np.mgrid[0:reference_size, 0:reference_size]
    references = []
    for index in range(count):
        channels = []
        for _ in range(3):
            spectrum = (rng.normal(size=radius.shape) + 1j * rng.normal(size=radius.shape)) / radius ** 1.5
            field = np.real(np.fft.ifft2(spectrum))
            channels.append((field - field.min()) / (np.ptp(field) + 1e-12))
        image = 0.6 * np.stack(channels, axis=2)
        for _ in range(3):
            cy, cx = rng.integers(0, reference_size, size=2)
            r = rng.integers(reference_size // 10, reference_size // 4)
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2] = rng.uniform(0.2, 1.0, size=3)
        x0 = int(rng.integers(0, reference_size // 2))
        image[:, x0:x0 + reference_size // 8] = rng.uniform(0.0, 1.0, size=3)
        references.append(Reference(content=f"procedural-{index}", name=f"procedural-{index}",
                                    image=np.clip(image, 0, 1)))
    return references


# -- distortions ---------------------------------------------------------------------------------
def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((image * 255).round().astype(np.uint8)).save(buffer, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")).astype(np.float64) / 255.0


def distort(image: np.ndarray, kind: str, level: float, rng_seed: list[int]) -> np.ndarray:
    """One distortion of a float [H, W, 3] image in [0, 1]; the random draws depend only on ``rng_seed``
    (not on ``level``), which makes the levels of one (reference, type) nested."""
    from skimage.filters import gaussian

    rng = np.random.default_rng(rng_seed)
    if kind == "gblur":
        out = gaussian(image, sigma=level, channel_axis=-1, preserve_range=True)
    elif kind == "awgn":
        out = image + level * rng.standard_normal(image.shape)
    elif kind == "jpeg":
        out = _jpeg(image, int(level))
    elif kind == "contrast":
        out = image.mean() + level * (image - image.mean())
    elif kind == "saltpepper":
        draw, salt = rng.random(image.shape), rng.random(image.shape) < 0.5
        out = np.where(draw < level, np.where(salt, 1.0, 0.0), image)
    else:
        raise ValueError(f"unknown distortion {kind!r} (known: {', '.join(DISTORTIONS)})")
    return np.clip(out, 0.0, 1.0)


def ssim_dmos(reference: np.ndarray, distorted: np.ndarray) -> float:
    """100 · (1 − SSIM) on 8-bit-quantised images (what is stored is what is scored)."""
    from skimage.metrics import structural_similarity

    ref8 = (reference * 255).round() / 255
    dist8 = (distorted * 255).round() / 255
    return 100.0 * (1.0 - structural_similarity(ref8, dist8, channel_axis=-1, data_range=1.0))


def distort_references(references: list[Reference], *, seed: int, rater_noise_std: float
                       ) -> tuple[list[np.ndarray], pd.DataFrame]:
    """All 25 distortions of every reference: (uint8 HWC images, one labels row per image)."""
    images, rows = [], []
    noise = np.random.default_rng([seed, 3])
    for ref_index, reference in enumerate(references):
        for type_index, (kind, levels) in enumerate(DISTORTIONS.items()):
            for level_index, level in enumerate(levels):
                distorted = distort(reference.image, kind, level, [seed, ref_index, type_index])
                target = ssim_dmos(reference.image, distorted)
                images.append((distorted * 255).round().astype(np.uint8))
                rows.append({"dis_img_path": f"dist/{reference.name}_{kind}_{level_index + 1}.png", "dis_type": kind,
                             "ref_img_path": f"refs/{reference.name}.png", "content": reference.content,
                             "level": level_index + 1, "ssim_dmos": target,
                             "score": float(np.clip(target + rater_noise_std * noise.standard_normal(), 0.0, 100.0))})
    return images, pd.DataFrame(rows)


def write_synthetic_set(folder: Path, references: list[Reference], *, seed: int, rater_noise_std: float) -> Path:
    """Write refs/, dist/ and labels.csv into ``folder`` (built under a temporary name, then renamed,
    so a killed build never leaves a folder that looks complete). Returns the labels.csv path."""
    from PIL import Image

    labels_file = folder / "labels.csv"
    if labels_file.is_file():
        return labels_file
    partial = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "refs").mkdir(parents=True)
    (partial / "dist").mkdir()
    for reference in references:
        Image.fromarray((reference.image * 255).round().astype(np.uint8)).save(partial / "refs" / f"{reference.name}.png")
    images, labels = distort_references(references, seed=seed, rater_noise_std=rater_noise_std)
    for image, path in zip(images, labels["dis_img_path"]):
        Image.fromarray(image).save(partial / path)
    labels.to_csv(partial / "labels.csv", index=False)
    try:
        partial.rename(folder)
    except OSError:  # another process finished the same set first: keep theirs
        shutil.rmtree(partial, ignore_errors=True)
    return labels_file
