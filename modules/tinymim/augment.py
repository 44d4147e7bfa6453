"""The student view's ColorJitter for TinyMIM (``modules/tinymim/__init__.py``), batched.

torchvision's ``ColorJitter(b, c, s)`` draws, per call, a random order of its adjustments and one
factor per adjustment (uniform in ``[max(0, 1 - x), 1 + x]``); the official code calls it per image.
Looping over a batch in Python costs about as much as the student's forward pass at cpu scale, so
``sample_jitter`` draws the same per-image quantities for a whole batch and ``apply_jitter`` applies
them with tensor ops: per image the same factors, the same order and the same formulas as
``torchvision.transforms.functional.adjust_{brightness,contrast,saturation}`` on float images in
[0, 1] (``_blend``: ``(f·img + (1 − f)·other).clamp(0, 1)``; grayscale 0.2989 R + 0.587 G + 0.114 B;
contrast blends with the mean grayscale level of the image). Hue is not used by TinyMIM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BRIGHTNESS, CONTRAST, SATURATION = 0, 1, 2


@dataclass
class JitterDraw:
    """Per-image draws: ``order`` [B, 3] (a permutation of the three adjustments) and factors [B]."""

    order: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor


def _factors(batch: int, strength: float, *, device, generator) -> torch.Tensor:
    low, high = max(0.0, 1.0 - strength), 1.0 + strength
    return low + (high - low) * torch.rand(batch, device=device, generator=generator)


def sample_jitter(batch: int, strength: float, *, device: torch.device | str = "cpu",
                  generator: torch.Generator | None = None) -> JitterDraw:
    """One random order and one factor per adjustment for each of ``batch`` images."""
    order = torch.argsort(torch.rand(batch, 3, device=device, generator=generator), dim=1)
    return JitterDraw(order=order, brightness=_factors(batch, strength, device=device, generator=generator),
                      contrast=_factors(batch, strength, device=device, generator=generator),
                      saturation=_factors(batch, strength, device=device, generator=generator))


def _grayscale(pixels: torch.Tensor) -> torch.Tensor:
    red, green, blue = pixels.unbind(dim=1)
    return (0.2989 * red + 0.587 * green + 0.114 * blue).unsqueeze(1)  # [B, 1, H, W]


def apply_jitter(pixels: torch.Tensor, draw: JitterDraw) -> torch.Tensor:
    """Brightness, contrast and saturation in each image's drawn order; ``pixels`` [B, 3, H, W] in [0, 1].

    Each adjustment is ``_blend(img, other, f)``; per position in the order, every image picks its
    own ``other`` (zeros, its mean gray level, or its grayscale) and factor, so one blend serves all.
    """
    factors = torch.stack([draw.brightness, draw.contrast, draw.saturation], dim=1)  # [B, 3] by adjustment
    for position in range(3):
        step = draw.order[:, position]
        factor = factors.gather(1, step.unsqueeze(1)).view(-1, 1, 1, 1)
        is_contrast = (step == CONTRAST).to(pixels.dtype).view(-1, 1, 1, 1)
        is_saturation = (step == SATURATION).to(pixels.dtype).view(-1, 1, 1, 1)
        gray = _grayscale(pixels)
        other = is_contrast * gray.mean(dim=(1, 2, 3), keepdim=True) + is_saturation * gray  # brightness: 0
        pixels = (factor * pixels + (1.0 - factor) * other).clamp(0.0, 1.0)
    return pixels


def color_jitter(pixels: torch.Tensor, strength: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """``ColorJitter(strength, strength, strength)`` applied independently to every image of a batch."""
    return apply_jitter(pixels, sample_jitter(pixels.shape[0], strength, device=pixels.device, generator=generator))
