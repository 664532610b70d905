"""How much disk a directory tree takes, and how much its filesystem has left."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def tree_bytes(root: Path) -> int:
    """Bytes allocated to ``root`` and everything below it, as ``du`` counts them (blocks,
    symbolic links not followed, each file once however many names it has); 0 if absent."""
    total = 0
    seen: set[tuple[int, int]] = set()
    pending = [str(root)]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                stat = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if (stat.st_dev, stat.st_ino) in seen:
                continue
            seen.add((stat.st_dev, stat.st_ino))
            total += stat.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)
    return total


def free_bytes(path: Path) -> int | None:
    """Bytes free to unprivileged users on the filesystem holding ``path`` (None if absent)."""
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None
