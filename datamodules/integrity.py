"""Published checksums of data files, verified once per file version (torchvision's habit).

``verify_md5`` checks each file against its known md5 with ``torchvision.datasets.utils`` and
remembers the files that passed in ``<cache>/integrity.json`` by (path, size, mtime), so a file
is hashed again only after it changes. A ``.gz`` file is checked by the md5 of its decompressed
content (the published checksum is the plain file's; gzip headers differ between compressors).
A mismatch or an unreadable file is one line naming it and where to get a good copy.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from pathlib import Path

from torchvision.datasets.utils import calculate_md5

VERIFIED_FILE = "integrity.json"


def _version(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def content_md5(path: Path) -> str:
    """md5 of the file, or of its decompressed content for ``.gz``."""
    if path.suffix != ".gz":
        return calculate_md5(str(path))
    digest = hashlib.md5(usedforsecurity=False)
    with gzip.open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
        try:
            found = content_md5(path)
        except (OSError, EOFError, zlib.error) as exc:  # a truncated or garbled gzip stream
            raise ValueError(f"{path} cannot be read ({type(exc).__name__}: {' '.join(str(exc).split())}); {fix}") from None
        if found != md5:
            raise ValueError(f"{path} is not the published file (md5 {found}, expected {md5}): it is truncated or "
                             f"modified; {fix}")
        newly_verified.add(version)
    if newly_verified:
        ledger_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = ledger_path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(sorted(verified | newly_verified)))
        temporary.replace(ledger_path)  # atomic: parallel workers never read half a ledger
