"""Dependency direction (DESIGN.md): benchmarks -> leaderboard; leaderboard, modules and datamodules
never import the harness, and the leaderboard imports no model or data code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "leaderboard": {"benchmarks", "modules", "datamodules"},
    "modules": {"benchmarks", "leaderboard"},
    "datamodules": {"benchmarks", "leaderboard", "modules"},
}


def imported_packages(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downstream(package: str) -> None:
    offending = {str(path.relative_to(ROOT)): imported_packages(path) & FORBIDDEN[package]
                 for path in (ROOT / package).rglob("*.py")}
    assert {path: names for path, names in offending.items() if names} == {}


def test_every_entry_point_has_a_main_guard() -> None:
    for path in (ROOT / "benchmarks" / "cli.py", ROOT / "benchmarks" / "runner.py", ROOT / "benchmarks" / "__main__.py"):
        assert 'if __name__ == "__main__":' in path.read_text(), path
