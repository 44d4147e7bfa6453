"""Correlation metrics of image quality assessment, DDP-correct.

* ``srcc`` — Spearman rank correlation (``torchmetrics.functional.spearman_corrcoef``);
* ``plcc`` — Pearson correlation of the raw predictions (``torchmetrics.functional.pearson_corrcoef``),
  what the official PMT-IQA / HyperIQA code reports (no fitting);
* ``plcc_logistic`` — Pearson correlation after the monotonic 5-parameter logistic mapping of the
  VQEG FR-TV Phase I report, fitted by least squares (``scipy.optimize.curve_fit``) from the
  predictions to the labels: ``f(x) = b1 (1/2 − 1/(1 + exp(b2 (x − b3)))) + b4 x + b5``. The
  4-parameter form ``f(x) = b2 + (b1 − b2) / (1 + exp(−(x − b3)/|b4|))`` is ``logistic_4``.

``IQACorrelations`` keeps every (prediction, label) pair as ``cat`` states, so under DDP the
correlations are computed once on the gathered predictions of all ranks. Pass each image's
dataset index: the DistributedSampler pads the last ranks with repeated images, and those repeats
would otherwise enter the correlations twice.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy.optimize import curve_fit
from scipy.special import expit
from torchmetrics import Metric
from torchmetrics.functional import pearson_corrcoef, spearman_corrcoef
from torchmetrics.utilities import dim_zero_cat

from modules.common.sample_index import first_copies


def logistic_5(x: np.ndarray, b1: float, b2: float, b3: float, b4: float, b5: float) -> np.ndarray:
    # 1/(1+exp(z)) = expit(-z), which cannot overflow
    return b1 * (0.5 - expit(-b2 * (x - b3))) + b4 * x + b5


def logistic_4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    return b2 + (b1 - b2) * expit((x - b3) / (abs(b4) + 1e-12))


def fit_logistic(predictions: np.ndarray, labels: np.ndarray, *, parameters: int = 5) -> np.ndarray:
    """The predictions mapped by the least-squares logistic fit to ``labels`` (5 or 4 parameters).

    Fitted from five starting slopes; the best least-squares fit wins, and the best linear map
    (``b1 = 0``, a member of the 5-parameter family) is the fallback, so the fitted PLCC never drops
    below ``|plcc|``.
    """
    x, y = np.asarray(predictions, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    # The family is closed under affine maps of x, so fit on standardised predictions moved to ~10:
    # a centre near (but not exactly) 0 would make MINPACK's relative finite-difference step vanish.
    x = (x - np.mean(x)) / max(float(np.std(x)), 1e-12) + 10.0
    spread_x, spread_y = 1.0, max(float(np.ptp(y)), 1e-8)
    correlation = np.corrcoef(x, y)[0, 1] if np.std(x) > 0 and np.std(y) > 0 else 1.0
    sign = -1.0 if correlation < 0 else 1.0
    if parameters == 5:
        function = logistic_5
        starts = [[sign * spread_y, slope / spread_x, float(np.mean(x)), 0.0, float(np.mean(y))]
                  for slope in (0.5, 1.0, 2.0, 4.0, 8.0)]
    elif parameters == 4:
        high, low = (np.max(y), np.min(y)) if sign > 0 else (np.min(y), np.max(y))
        function = logistic_4
        starts = [[high, low, float(np.mean(x)), spread_x * width] for width in (0.125, 0.25, 0.5, 1.0, 2.0)]
    else:
        raise ValueError(f"parameters must be 4 or 5, got {parameters}")
    # least squares is not convex in the slope: a few starting slopes, keep the best fit
    slope, intercept = np.polyfit(x, y, 1)
    best = slope * x + intercept
    best_error = float(np.sum((best - y) ** 2))
    for start in starts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fitted, _ = curve_fit(function, x, y, p0=start, maxfev=20000)
        except (RuntimeError, ValueError):
            continue
        mapped = function(x, *fitted)
        error = float(np.sum((mapped - y) ** 2))
        if np.all(np.isfinite(mapped)) and np.std(mapped) > 0 and error < best_error:
            best, best_error = mapped, error
    return best


def iqa_correlations(predictions: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """SRCC, raw PLCC and logistic-fitted PLCC of two 1-D tensors."""
    predictions, labels = predictions.double().flatten(), labels.double().flatten()
    if predictions.numel() < 3:
        nan = float("nan")
        return {"srcc": nan, "plcc": nan, "plcc_logistic": nan}
    mapped = fit_logistic(predictions.cpu().numpy(), labels.cpu().numpy())
    return {"srcc": float(spearman_corrcoef(predictions, labels)),
            "plcc": float(pearson_corrcoef(predictions, labels)),
            "plcc_logistic": float(pearson_corrcoef(torch.from_numpy(mapped), labels.cpu()))}


class IQACorrelations(Metric):
    """Accumulates per-image predictions and labels; ``compute`` returns ``iqa_correlations``."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("predictions", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("image_index", default=[], dist_reduce_fx="cat")

    def update(self, predictions: torch.Tensor, labels: torch.Tensor, image_index: torch.Tensor | None = None) -> None:
        labels = labels.detach().flatten().float()
        if image_index is None:
            image_index = torch.full_like(labels, -1)  # -1: not deduplicated
        self.predictions.append(predictions.detach().flatten().float())
        self.labels.append(labels)
        self.image_index.append(image_index.detach().flatten().long().to(labels.device))

    def compute(self) -> dict[str, float]:
        predictions, labels = dim_zero_cat(self.predictions), dim_zero_cat(self.labels)
        keep = torch.from_numpy(first_copies(dim_zero_cat(self.image_index).cpu().numpy())).to(labels.device)
        return iqa_correlations(predictions[keep], labels[keep])
