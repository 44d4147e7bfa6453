"""Peak dense FLOP/s of one accelerator at a run's precision: the ceiling that MFU divides by.

Lightning's table (``lightning.fabric.utilities.throughput.get_available_flops``) misses chips whose
CUDA device name does not match its keys (``NVIDIA H200`` is keyed ``h200 sxm1`` there, with the
with-sparsity bf16 figure). This table comes first; every figure is the **dense** (no 2:4 sparsity)
peak from the vendor's datasheet. ``LITBENCH_PEAK_TFLOPS`` (``litbench run --peak-tflops``)
overrides both, for a chip in neither table or a clock-limited part.
"""

from __future__ import annotations

import os
import re

import torch

TF = 1e12
# (pattern on the lower-cased CUDA device name, {precision kind: dense FLOP/s}); first match wins.
# fp32 = plain FP32 CUDA cores; tf32/bf16/fp16 = tensor cores, dense.
PEAK_TABLE: tuple[tuple[str, dict[str, float]], ...] = (
    # NVIDIA H200 Tensor Core GPU datasheet (SXM column; the bf16/fp16/tf32 figures there are
    # "with sparsity" and halved here): FP32 67, TF32 989/2, BF16 1,979/2 TFLOPS.
    (r"\bh200\b", {"fp32": 67 * TF, "tf32": 494.7 * TF, "bf16": 989.4 * TF, "fp16": 989.4 * TF}),
    # NVIDIA H100 Tensor Core GPU datasheet, PCIe column: FP32 51, TF32 756/2, BF16 1,513/2.
    (r"\bh100\b.*\bpcie\b", {"fp32": 51.2 * TF, "tf32": 378 * TF, "bf16": 756 * TF, "fp16": 756 * TF}),
    # Same datasheet, SXM column (device names "NVIDIA H100 80GB HBM3"): FP32 67, TF32 989/2, BF16 1,979/2.
    (r"\bh100\b", {"fp32": 66.9 * TF, "tf32": 494.7 * TF, "bf16": 989.4 * TF, "fp16": 989.4 * TF}),
    # NVIDIA L40S datasheet: FP32 91.6, TF32 183 (366 with sparsity), BF16 362.05 (733 with sparsity).
    (r"\bl40s\b", {"fp32": 91.6 * TF, "tf32": 183 * TF, "bf16": 362.05 * TF, "fp16": 362.05 * TF}),
    # NVIDIA A10 datasheet: FP32 31.2, TF32 125/2, BF16 250/2 TFLOPS.
    (r"\ba10\b", {"fp32": 31.2 * TF, "tf32": 62.5 * TF, "bf16": 125 * TF, "fp16": 125 * TF}),
)


def precision_kind(precision: str) -> str:
    """Lightning precision string -> the table's kind ("bf16-mixed" -> "bf16", "32-true" -> "fp32")."""
    precision = str(precision)
    if "bf16" in precision:
        return "bf16"
    if precision.startswith("16"):
        return "fp16"
    return "fp32"


def table_peak(device_name: str, precision: str) -> float | None:
    """Dense peak FLOP/s of a device from this module's table, or None when it is not listed."""
    name = device_name.lower()
    for pattern, peaks in PEAK_TABLE:
        if re.search(pattern, name):
            return peaks.get(precision_kind(precision))
    return None


def device_peak_flops(precision: str) -> float | None:
    """One CUDA device's peak at ``precision``: the override, this table, then Lightning's."""
    override = os.environ.get("LITBENCH_PEAK_TFLOPS")
    if override:
        return float(override) * TF
    if not torch.cuda.is_available():
        return None
    listed = table_peak(torch.cuda.get_device_name(), precision)
    if listed is not None:
        return listed
    from lightning.fabric.utilities.throughput import get_available_flops

    kind = precision_kind(precision)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(kind, torch.float32)
    return get_available_flops(torch.device("cuda"), dtype)
