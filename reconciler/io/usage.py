"""How much disk a directory tree takes, and how much its filesystem has left."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def tree_bytes(root: Path, *, apparent: bool = False) -> int:
    """Bytes allocated to everything below ``root``, as ``du`` counts them (blocks, symbolic
    links not followed, each file once however many names it has), or with ``apparent``
    the files' sizes (``du --apparent-size``, directories not counted); 0 if absent."""
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
            directory = entry.is_dir(follow_symlinks=False)
            if apparent:
                total += 0 if directory else stat.st_size
            else:
                total += stat.st_blocks * 512
            if directory:
                pending.append(entry.path)
    return total


def free_bytes(path: Path) -> int | None:
    """Bytes free to unprivileged users on the filesystem holding ``path`` (None if absent)."""
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None
