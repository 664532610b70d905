"""Leftovers of attempts that died: temporary names that carry an attempt's token.

Every attempt writes under names private to it (:func:`reconciler.naming.attempt_path`)
and renames them into place when complete; an attempt killed half-way leaves them behind.
They are found by name under the work and products roots and removed when no live attempt
holds their token (a running action whose lease has not run out), whichever host or
service made them, so the files of an attempt still running anywhere are never touched.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from reconciler.db import queries
from reconciler.db.engine import reading
from reconciler.naming import attempt_of


def find_debris(roots: Iterable[Path]) -> dict[Path, str]:
    """Every attempt-private name under ``roots``, with its attempt.

    Products (names with a dot: Measurement Sets, calibration tables, FITS files) are not
    descended into, so the walk visits the directories of the tree, not the files of every
    product in it.
    """
    found: dict[Path, str] = {}
    pending = [Path(root) for root in roots]
    while pending:
        directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            attempt = attempt_of(entry.name)
            if attempt is not None:
                found[Path(entry.path)] = attempt
            elif "." not in entry.name and entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
    return found


def remove_debris(engine: Engine, roots: Iterable[Path], *, now: datetime) -> list[Path]:
    """Remove the attempt-private names under ``roots`` of attempts that are not live.

    Returns what was removed.
    """
    found = find_debris(roots)
    if not found:
        return []
    with reading(engine) as conn:
        live = {uuid.UUID(token).hex for token in queries.live_lease_tokens(conn, now=now)}
    removed = []
    for path, attempt in sorted(found.items()):
        if attempt in live:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
