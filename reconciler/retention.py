"""Disk the service no longer needs is given back, so work/ stays bounded however long the
service runs.

* Once a mosaic is published, its staged copy under work/ (the mosaic, weight map and
  preview the mosaic step wrote) has served its purpose: the published files are the
  product, verified on their own schedule. The staged copy is removed on the next pass,
  and the registry row remembers it (``stage_removed_at``), so a pass looks only at
  products published since.
* An observation's intermediates (converted MS, calibrated MS, image tile) are removed
  ``retention.keep_hours`` after every window holding the observation was settled
  (published, or given up: failed, insufficient, cancelled, invalid), and no sooner than
  ``keep_hours`` after they were made; a calibrator transit outside every window, once
  solved on. The row stays, with ``removed_at``; a window made later, or a retry, makes
  them again from the raw files. Every :data:`LOOK_EVERY`, a bounded slice of the rows
  still present (a partial index) is looked at, resuming where the last look stopped, so
  the cost follows what is present, not the history.
* Action logs and the CASA log are rotated by size; action logs not written for
  ``retention.log_days`` days are removed (looked for hourly).

Raw files and published products are never removed, nor anything outside the work root.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, update

from reconciler.config import Settings
from reconciler.db.engine import reading, reading_one, writing
from reconciler.db.models import (
    FINAL_PHASES,
    CalibratedMS,
    CalibrationSolution,
    Image,
    MeasurementSet,
    MosaicGroup,
    Observation,
    RegistryEntry,
)
from reconciler.io.confine import inside
from reconciler.model import Phase
from reconciler.naming import companion_paths, image_prefix

log = logging.getLogger("reconciler")

#: At most this many products' staged copies are removed in one pass.
_PER_PASS = 50


def remove_published_staging(engine: Engine, settings: Settings, *, now: datetime) -> int:
    """Remove the staged copies of mosaics published since the last call; returns how many
    products' copies were removed (or found gone already)."""
    work = settings.paths.work
    with reading_one(engine) as conn:
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
    _stamp(engine, RegistryEntry.stage_removed_at, done, now)
    return len(done)


def _stamp(engine: Engine, column: Any, ids: list[int], now: datetime) -> None:
    """Set ``column`` (a removal time) to ``now`` on the rows ``ids`` of its table where it
    is not set yet (another service may have set it meanwhile)."""
    if not ids:
        return
    table = column.class_
    with writing(engine) as conn:
        conn.execute(update(table).where(table.id.in_(ids), column.is_(None)).values({column: now}))


def _remove_if_empty(directory: Path, work: Path) -> None:
    """Remove a directory left empty, strictly below the work root."""
    if not _strictly_inside(directory, work):
        return
    with contextlib.suppress(OSError):  # not empty (other files of the step), or gone
        directory.rmdir()


#: Phases after which a window needs its members' intermediates no more, unless woken.
SETTLED_PHASES = (*FINAL_PHASES, Phase.FAILED.value, Phase.INSUFFICIENT.value)

#: The intermediates, in the order a pass looks at them.
_INTERMEDIATES = (MeasurementSet, CalibratedMS, Image)

#: How often (by the pass clock) retention looks for intermediates to remove.
LOOK_EVERY = timedelta(minutes=5)

#: Seconds between two looks for old action logs.
_LOG_SWEEP_SECONDS = 3600.0


@dataclass
class Retention:
    """Removes intermediates no window needs any more and old action logs; one per service,
    remembering where in each table its last look stopped. It looks every
    :data:`LOOK_EVERY` of the pass clock, not on every pass: nothing it removes is urgent."""

    _after: dict[str, int] = field(default_factory=dict)
    _looked_at: datetime | None = None
    _logs_swept_at: float | None = None

    def run(self, engine: Engine, settings: Settings, *, now: datetime, force: bool = False) -> int:
        """One look, when due (or ``force``); returns how many intermediates were removed."""
        if not force and self._looked_at is not None and now - self._looked_at < LOOK_EVERY:
            return 0
        self._looked_at = now
        removed = 0
        if settings.retention.intermediates:
            removed = self._remove_intermediates(engine, settings, now=now)
        clock = time.monotonic()
        if self._logs_swept_at is None or clock - self._logs_swept_at >= _LOG_SWEEP_SECONDS:
            self._logs_swept_at = clock
            remove_old_action_logs(settings)
        return removed

    def _remove_intermediates(self, engine: Engine, settings: Settings, *, now: datetime) -> int:
        keep = timedelta(hours=settings.retention.keep_hours)
        limit = settings.retention.max_per_pass
        candidates: dict[Any, list[Any]] = {}
        with reading(engine) as conn:
            for model in _INTERMEDIATES:
                table = model.__tablename__
                rows = conn.execute(
                    select(
                        model.id,
                        model.path,
                        model.observation_id,
                        Observation.key,
                        Observation.start_time,
                    )
                    .join(Observation, Observation.id == model.observation_id)
                    .where(
                        model.removed_at.is_(None),
                        model.id > self._after.get(table, 0),
                        model.created_at <= now - keep,
                    )
                    .order_by(model.id)
                    .limit(limit)
                ).all()
                # The next look goes on from here; after the last row, from the start again.
                self._after[table] = rows[-1].id if len(rows) == limit else 0
                candidates[model] = rows
            starts = {r.observation_id: r.start_time for rows in candidates.values() for r in rows}
            needed = _still_needed(
                conn, starts, now=now, keep=keep, max_window=settings.decide_policy.max_window
            )
            images = _image_files(conn, [row.id for row in candidates[Image]])
        work = settings.paths.work
        removed = 0
        for model, rows in candidates.items():
            table = model.__tablename__
            done = []
            for row in rows:
                if row.observation_id in needed:
                    continue
                if model is Image:
                    paths, prefix = images.get(row.id, []), image_prefix(work, row.key)
                else:
                    paths, prefix = [Path(row.path)], None
                if _remove_under(work, paths, prefix=prefix, what=f"{table} {row.id}"):
                    done.append(row.id)
            _stamp(engine, model.removed_at, done, now)
            if done:
                log.info("removed the %s of %d observation(s) no window needs", table, len(done))
            removed += len(done)
        return removed


def _still_needed(
    conn: Any,
    observations: dict[int, datetime],
    *,
    now: datetime,
    keep: timedelta,
    max_window: timedelta,
) -> set[int]:
    """The observations (id: start) whose intermediates must stay: one a window holds that
    is not settled, or settled less than ``keep`` ago; and one no window holds that was not
    solved on (a calibrator transit converted for a solve keeps its MS until solved). Each
    start is looked up by the indexed window start."""
    solved = set(
        conn.execute(
            select(CalibrationSolution.observation_id).where(
                CalibrationSolution.observation_id.in_(list(observations))
            )
        ).scalars()
    )
    needed: set[int] = set()
    for obs_id, start in observations.items():
        groups = conn.execute(
            select(MosaicGroup.phase, MosaicGroup.status_updated_at).where(
                MosaicGroup.window_start <= start,
                MosaicGroup.window_start > start - max_window,
                MosaicGroup.window_end > start,
            )
        ).all()
        if not groups:
            if obs_id not in solved:
                needed.add(obs_id)
        elif any(
            g.phase not in SETTLED_PHASES
            or g.status_updated_at is None
            or g.status_updated_at > now - keep
            for g in groups
        ):
            needed.add(obs_id)
    return needed


def _image_files(conn: Any, ids: list[int]) -> dict[int, list[Path]]:
    """The recorded files of image rows (the tile and its primary beam)."""
    rows = conn.execute(select(Image.id, Image.path, Image.pb_path).where(Image.id.in_(ids)))
    return {row.id: [Path(p) for p in (row.path, row.pb_path) if p] for row in rows}


def _remove_under(work: Path, paths: list[Path], *, prefix: Path | None, what: str) -> bool:
    """Remove each path (a file or a directory tree) and every file named ``<prefix>.*``
    that lies strictly below ``work``; False if one could not be removed (a later pass
    tries again). A path outside is left alone and reported."""
    targets = list(paths)
    if prefix is not None:
        targets += sorted(prefix.parent.glob(f"{prefix.name}.*"))
    for target in targets:
        if not (target.exists() or target.is_symlink()):
            continue
        if not _strictly_inside(target, work):
            log.warning("%s: %s is outside %s; left as it is", what, target, work)
            continue
        try:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("%s: %s could not be removed: %s", what, target, exc)
            return False
    for directory in {target.parent for target in targets}:
        _remove_if_empty(directory, work)
    return True


def _strictly_inside(path: Path, root: Path) -> bool:
    return inside(path, root) and os.path.realpath(path) != os.path.realpath(root)


def remove_old_action_logs(settings: Settings) -> int:
    """Remove action logs (and their rotated copies) not written for ``log_days`` days."""
    directory = settings.paths.work / "logs" / "actions"
    cutoff = time.time() - settings.retention.log_days * 86400.0
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    if removed:
        log.info(
            "removed %d action log(s) not written for %g days", removed, settings.retention.log_days
        )
    return removed
