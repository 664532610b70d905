"""Nothing is read or written outside the configured roots, whatever a row or a symlink says.

A path taken from the database, or built under a root, is resolved (every symlink
followed) before use and must lie under its root, resolved too. A row pointing elsewhere
is a permanent failure of the action that would have used it, with the row named; the
file it points at is never opened.
"""

from __future__ import annotations

import os
from pathlib import Path

from reconciler.errors import PermanentError


class OutsideRootError(PermanentError):
    """A path lies outside the root it must be under (after following symlinks)."""


def inside(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """True when ``path`` resolves to ``root`` or below it. Touches only the path's
    symlinks, never the file's contents."""
    resolved = Path(os.path.realpath(path))
    base = Path(os.path.realpath(root))
    return resolved == base or base in resolved.parents


def confine(path: str | os.PathLike[str], root: str | os.PathLike[str], *, what: str) -> Path:
    """``path`` as given, once checked to lie under ``root`` when resolved.

    Raises
    ------
    OutsideRootError
        Naming ``what`` (the row or the purpose), the path and the root.
    """
    if not inside(path, root):
        raise OutsideRootError(
            f"{what}: {path} is outside {root} (it resolves to {os.path.realpath(path)})"
        )
    return Path(path)
