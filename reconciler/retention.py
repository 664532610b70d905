"""Disk the service no longer needs is given back.

Once a mosaic is published, its staged copy under work/ (the mosaic, weight map and
preview the mosaic step wrote) has served its purpose: the published files are the
product, verified on their own schedule. The staged copy is removed on the next pass, and
the registry row remembers it (``stage_removed_at``), so a pass looks only at products
published since. Nothing outside the work root is ever removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, select, update

from reconciler.config import Settings
from reconciler.db.engine import reading, writing
from reconciler.db.models import RegistryEntry
from reconciler.io.confine import inside
from reconciler.naming import companion_paths

log = logging.getLogger("reconciler")

#: At most this many products' staged copies are removed in one pass.
_PER_PASS = 50


def remove_published_staging(engine: Engine, settings: Settings, *, now: datetime) -> int:
    """Remove the staged copies of mosaics published since the last call; returns how many
    products' copies were removed (or found gone already)."""
    work = settings.paths.work
    with reading(engine) as conn:
        rows = conn.execute(
            select(RegistryEntry.id, RegistryEntry.stage_path)
            .where(RegistryEntry.status == "published", RegistryEntry.stage_removed_at.is_(None))
            .order_by(RegistryEntry.id)
            .limit(_PER_PASS)
        ).all()
    done = []
    for row in rows:
        staged = Path(row.stage_path)
        if not inside(staged, work):
            log.warning(
                "data_registry %d: staged copy %s is outside %s; left as it is",
                row.id,
                staged,
                work,
            )
        else:
            try:
                for path in (staged, *companion_paths(staged)):
                    path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("the staged copy %s could not be removed: %s", staged, exc)
                continue
            _remove_if_empty(staged.parent, work)
        done.append(row.id)
    if done:
        with writing(engine) as conn:
            conn.execute(
                update(RegistryEntry)
                .where(RegistryEntry.id.in_(done), RegistryEntry.stage_removed_at.is_(None))
                .values(stage_removed_at=now)
            )
    return len(done)


def _remove_if_empty(directory: Path, work: Path) -> None:
    """Remove a staging directory left empty (never the work root itself)."""
    if os.path.realpath(directory) == os.path.realpath(work):
        return
    with contextlib.suppress(OSError):  # not empty (other files of the step), or gone
        directory.rmdir()
