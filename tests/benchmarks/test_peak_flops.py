"""The MFU ceiling: dense datasheet peaks for chips Lightning's table misses, and the override."""

from __future__ import annotations

import pytest

from benchmarks import peak_flops
from benchmarks.cli import main
from benchmarks.peak_flops import TF, device_peak_flops, precision_kind, table_peak


@pytest.mark.parametrize(("name", "precision", "tflops"), [
    ("NVIDIA H200", "bf16-mixed", 989.4),            # Lightning keys it "h200 sxm1" with the sparse figure
    ("NVIDIA H200", "32-true", 67.0),
    ("NVIDIA H100 80GB HBM3", "bf16-mixed", 989.4),  # SXM
    ("NVIDIA H100 PCIe", "bf16-mixed", 756.0),
    ("NVIDIA L40S", "16-mixed", 362.05),
    ("NVIDIA A10", "32-true", 31.2),
])
def test_listed_chips_give_their_dense_datasheet_peak(name: str, precision: str, tflops: float) -> None:
    assert table_peak(name, precision) == pytest.approx(tflops * TF)


def test_unlisted_chips_and_a100_fall_through_to_lightning() -> None:
    assert table_peak("NVIDIA A100-SXM4-80GB", "bf16-mixed") is None  # not "a10"
    assert table_peak("Tesla T4", "32-true") is None
    assert precision_kind("bf16-true") == "bf16" and precision_kind("16-mixed") == "fp16" and precision_kind("64") == "fp32"


def test_the_override_wins_and_the_cli_checks_it(monkeypatch, capsys) -> None:
    monkeypatch.setenv("LITBENCH_PEAK_TFLOPS", "123.5")
    assert device_peak_flops("bf16-mixed") == pytest.approx(123.5 * TF)
    monkeypatch.delenv("LITBENCH_PEAK_TFLOPS")
    monkeypatch.setattr(peak_flops.torch.cuda, "is_available", lambda: False)
    assert device_peak_flops("bf16-mixed") is None  # no GPU, no override: the CPU runs use their probe
    assert main(["run", "toy", "--peak-tflops", "-3"]) == 2
    assert "--peak-tflops must be positive" in capsys.readouterr().err
