"""Stage cache: concurrent processes asking for the same stage build it once and share it."""

from __future__ import annotations

import pytest

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys, time
from pathlib import Path
from benchmarks.stages import StageCache

root, log = Path(sys.argv[1]), Path(sys.argv[2])

def build(folder):
    with open(log, "a") as handle:
        handle.write("built\\n")
    time.sleep(3)  # long enough for the other process to arrive while this one builds
    (folder / "weights.txt").write_text("w")
    return folder / "weights.txt"

artifact = StageCache(root).get_or_build("teacher", {"lr": 0.1}, build)
print(artifact.path, artifact.cache_hit)
"""


@pytest.mark.slow
def test_two_processes_build_a_stage_once(tmp_path: Path) -> None:
    log = tmp_path / "builds.log"
    processes = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "cache"), str(log)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert log.read_text() == "built\n"
    paths, hits = zip(*(stdout.split() for stdout, _ in outputs))
    assert len(set(paths)) == 1 and Path(paths[0]).read_text() == "w"
    assert sorted(hits) == ["False", "True"]  # one built it, the other waited and reused it
    (stage_folder,) = [p for p in (tmp_path / "cache" / "stages").iterdir() if p.is_dir() and p.name != ".locks"]
    assert json.loads((stage_folder / "artifact.json").read_text())["path"] == "weights.txt"
    assert not any(p.name.endswith(".partial") for p in (tmp_path / "cache" / "stages").iterdir())
    assert sorted(p.name for p in (tmp_path / "cache" / "stages").iterdir()) == [".locks", stage_folder.name]
