"""Published checksums of data files, verified once per file version (torchvision's habit).

``verify_md5`` checks each file against its known md5 with ``torchvision.datasets.utils`` and
remembers the files that passed in ``<cache>/integrity.json`` by (path, size, mtime), so a file
is hashed again only after it changes. A mismatch is one line naming the file and where to get a
good copy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from torchvision.datasets.utils import calculate_md5

VERIFIED_FILE = "integrity.json"


def _version(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def verify_md5(expected: dict[Path, str], *, cache_dir: Path, fix: str) -> None:
    """Raise ValueError for the first file whose md5 is not the published one; ``fix`` says where
    a good copy comes from."""
    ledger_path = cache_dir / VERIFIED_FILE
    try:
        verified = set(json.loads(ledger_path.read_text()))
    except (OSError, ValueError):
        verified = set()
    newly_verified = set()
    for path, md5 in expected.items():
        version = _version(path)
        if version in verified:
            continue
        found = calculate_md5(str(path))
        if found != md5:
            raise ValueError(f"{path} is not the published file (md5 {found}, expected {md5}): it is truncated or "
                             f"modified; {fix}")
        newly_verified.add(version)
    if newly_verified:
        ledger_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = ledger_path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(sorted(verified | newly_verified)))
        temporary.replace(ledger_path)  # atomic: parallel workers never read half a ledger
