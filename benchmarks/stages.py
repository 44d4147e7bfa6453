"""Stage artifacts (a pretrained teacher, a distilled dataset, ...) cached by config hash.

A stage's artifact lives in ``<cache>/stages/<name>-<key>/`` where ``key`` hashes the stage's
resolved config (its model, trainer, seed and data) and the source of the code that trains it
(``benchmarks.resolve.stage_config``). Every method and seed that asks for the same
stage config gets the same folder, so the stage is trained once. A folder only appears under its
final name once complete (it is built under a ``.partial`` name and renamed), so a run killed while
building a stage leaves nothing that a later run would mistake for a finished artifact.

``artifact.json`` in the folder names the file to hand to the consuming method (``path``, relative
to the folder) and the stage config it was built from.
"""

from __future__ import annotations

import fcntl
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from leaderboard.records import config_hash, write_json_atomic

MANIFEST = "artifact.json"


@dataclass
class StageArtifact:
    name: str
    key: str
    path: Path  # the file or folder passed to the consuming method
    cache_hit: bool

    def as_record(self) -> dict[str, Any]:
        return {"key": self.key, "cache_hit": self.cache_hit, "artifact": str(self.path)}


class StageCache:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root) / "stages"

    def folder(self, name: str, key: str) -> Path:
        return self.root / f"{name}-{key}"

    def lookup(self, name: str, config: dict[str, Any]) -> StageArtifact | None:
        key = config_hash(config)
        manifest = self.folder(name, key) / MANIFEST
        if not manifest.exists():
            return None
        try:
            relative = json.loads(manifest.read_text())["path"]
        except (OSError, ValueError, KeyError):
            return None
        return StageArtifact(name=name, key=key, path=self.folder(name, key) / relative, cache_hit=True)

    def get_or_build(self, name: str, config: dict[str, Any], build: Callable[[Path], Path],
                     *, is_writer: bool = True, barrier: Callable[[], None] = lambda: None) -> StageArtifact:
        """Return the cached artifact for ``config`` or build it with ``build(partial_folder) -> file``.

        ``build`` writes into the folder it is given and returns the path of the artifact to pass on.
        In a distributed run every rank calls this; only ``is_writer`` (rank 0) publishes the folder,
        and ``barrier`` makes the other ranks wait until it has.
        """
        cached = self.lookup(name, config)
        if cached is not None:
            return cached
        key = config_hash(config)
        final = self.folder(name, key)
        self.root.mkdir(parents=True, exist_ok=True)
        # Independent processes (--workers) may want the same stage at once: the writer holds a file
        # lock for the build, and a process that waited for it finds the finished artifact instead
        # of building it again (or deleting the other's half-built folder).
        locks = self.root / ".locks"  # beside, not among, the artifact folders
        locks.mkdir(exist_ok=True)
        lock = open(locks / f"{final.name}.lock", "w") if is_writer else None
        try:
            if lock is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            barrier()
            cached = self.lookup(name, config)
            if cached is not None:
                return cached
            return self._build(name, key, config, final, build, is_writer=is_writer, barrier=barrier)
        finally:
            if lock is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)
                lock.close()

    def _build(self, name: str, key: str, config: dict[str, Any], final: Path, build: Callable[[Path], Path],
               *, is_writer: bool, barrier: Callable[[], None]) -> StageArtifact:
        partial = final.with_name(final.name + ".partial")
        if is_writer and partial.exists():
            shutil.rmtree(partial)  # left by a killed run (a live builder would hold the lock)
        partial.mkdir(parents=True, exist_ok=True)
        barrier()
        artifact = Path(build(partial))
        barrier()
        if is_writer:
            relative = artifact.relative_to(partial)
            write_json_atomic(partial / MANIFEST, {"name": name, "key": key, "path": str(relative), "config": config})
            partial.rename(final)
        barrier()
        return StageArtifact(name=name, key=key, path=final / artifact.relative_to(partial), cache_hit=False)
