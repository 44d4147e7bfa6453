"""Shared test setup: offline, quiet, and the toy benchmark on the import path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TOY_DIR = REPO_ROOT / "tests" / "toy"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
sys.path[:0] = [str(TOY_DIR), str(REPO_ROOT / "tests"), str(REPO_ROOT / "tests" / "netblock")]

# No test may reach the network: block it here and, through sitecustomize, in every subprocess.
NETBLOCK_DIR = REPO_ROOT / "tests" / "netblock"
os.environ["LITBENCH_BLOCK_NETWORK"] = "1"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(NETBLOCK_DIR), os.environ.get("PYTHONPATH", "")]))
import litbench_netblock  # noqa: E402

litbench_netblock.install()


@pytest.fixture
def toy_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment that points litbench at the toy specs (for in-process and subprocess runs)."""
    values = {"LITBENCH_SPECS_DIR": str(TOY_DIR / "specs"), "LITBENCH_SUITES_DIR": str(TOY_DIR / "suites"),
              "PYTHONPATH": os.pathsep.join([str(TOY_DIR), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **values}
