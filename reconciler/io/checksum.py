"""Checksums of product files."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_as_recorded(path: Path, size_bytes: int, mtime: float) -> str | None:
    """Hex SHA-256 of a file that has ``size_bytes`` and ``mtime`` (as a database row
    records it) before and after hashing; None if it differs or is gone, since the hash
    would then describe another file than the row does."""
    try:
        before = path.stat()
        digest = sha256(path)
        after = path.stat()
    except FileNotFoundError:
        return None
    recorded = (size_bytes, mtime)
    if (before.st_size, before.st_mtime) != recorded or (after.st_size, after.st_mtime) != recorded:
        return None
    return digest
