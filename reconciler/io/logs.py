"""Size-bounded log files: a log over its limit is renamed aside before the next writer
opens it, keeping a fixed number of old ones (``casa.log.1`` the newest)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def rotate(path: Path, *, max_bytes: int, keep: int) -> bool:
    """Rename ``path`` to ``path.1`` (``.1`` to ``.2``, … dropping ``.keep``) when it holds
    more than ``max_bytes``; True if it was rotated.

    A writer that has the log open keeps writing to the renamed file: nothing is lost, and
    the next writer starts a new log. Two services rotating at once lose at most an old
    copy, never the log being written.
    """
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except OSError:
        return False
    for index in range(max(keep, 1), 1, -1):
        with contextlib.suppress(OSError):
            os.replace(_aside(path, index - 1), _aside(path, index))
    with contextlib.suppress(OSError):
        if keep < 1:
            path.unlink()
            return True
        os.replace(path, _aside(path, 1))
    return True


def _aside(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.{index}")
