"""Late data and new versions: observations that arrive after a window's mosaic was
published are reported on the group, and a new version can be asked for. A published
product is never replaced behind anyone's back.

The late-data check reads only published windows that ended within
``tiling.late_lookback_hours``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, and_, exists, func, select, update

from reconciler.config import Settings
from reconciler.db import queries
from reconciler.db.engine import reading, writing
from reconciler.db.models import MosaicGroup, MosaicGroupMember, Observation
from reconciler.errors import NotFoundError, RequestError
from reconciler.model import Phase


def report_late_data(
    engine: Engine, settings: Settings, *, now: datetime, actor: str = "service"
) -> list[int]:
    """Note on published groups the observations that arrived after their mosaic was made.

    Only groups whose window ended within ``tiling.late_lookback_hours`` are checked. The
    group stays published (a published product is never replaced behind anyone's back);
    its reason and an event say what came late and how to make a new version. Returns
    the ids of the groups whose note changed.
    """
    with reading(engine) as conn:
        notes = late_data_notes(conn, settings, now=now)
    return write_late_notes(engine, notes, now=now, actor=actor)


def late_data_notes(conn: Connection, settings: Settings, *, now: datetime) -> dict[int, str]:
    """Group id → the late-data note it should carry, for notes not already there."""
    since = now - timedelta(hours=settings.tiling.late_lookback_hours)
    earliest = since - settings.decide_policy.max_window
    tolerance = settings.calibration.dec_strip_tolerance_deg
    member = exists().where(
        MosaicGroupMember.group_id == MosaicGroup.id,
        MosaicGroupMember.observation_id == Observation.id,
    )
    stmt = (
        select(
            MosaicGroup.id,
            MosaicGroup.status_reason,
            MosaicGroup.published_path,
            Observation.key,
        )
        .join(
            Observation,
            and_(
                Observation.start_time >= MosaicGroup.window_start,
                Observation.start_time < MosaicGroup.window_end,
            ),
        )
        .where(
            MosaicGroup.phase == str(Phase.PUBLISHED),
            # window_start is indexed (the window's unique constraint); window_end is not.
            MosaicGroup.window_start >= earliest,
            MosaicGroup.window_end >= since,
            Observation.start_time >= earliest,
            func.abs(Observation.dec_deg - MosaicGroup.dec_deg) <= tolerance,
            ~member,
        )
        # Ordered by the indexed window start alone: asked to order by id (or by the
        # observation too), SQLite's planner scans every group ever made.
        .order_by(MosaicGroup.window_start)
    )
    late: dict[int, list[Row[Any]]] = {}
    for row in sorted(conn.execute(stmt), key=lambda r: (r.id, r.key)):  # keys sort as times
        late.setdefault(row.id, []).append(row)
    notes = {}
    for group_id, found in late.items():
        keys = [r.key for r in found]
        note = (
            f"published {found[0].published_path}; late data: {len(keys)} observation(s) "
            f"arrived after this mosaic was made ({', '.join(keys[:3])}"
            f"{', ...' if len(keys) > 3 else ''}); "
            f"`reconciler request --new-version {group_id}` makes a new version"
        )
        if found[0].status_reason != note:
            notes[group_id] = note
    return notes


def write_late_notes(
    engine: Engine, notes: dict[int, str], *, now: datetime, actor: str
) -> list[int]:
    if notes:
        with writing(engine) as conn:
            for group_id, note in notes.items():
                conn.execute(
                    update(MosaicGroup)
                    .where(MosaicGroup.id == group_id)
                    .values(status_reason=note, status_updated_at=now)
                )
                queries.record_event(
                    conn, "late_data", note, at=now, group_id=group_id, actor=actor
                )
    return list(notes)


def new_generation(engine: Engine, group_id: int, *, actor: str = "cli") -> int:
    """Ask for a new version of a published mosaic; returns the new generation.

    The group is worked on again with its current members (late data included): shared
    products are reused, the mosaic is made again and published under a new, versioned
    name; the earlier version stays published.

    Raises
    ------
    NotFoundError
        If there is no such group.
    RequestError
        If the group is not published (nothing to make a new version of yet).
    """
    now = datetime.now(UTC)
    with writing(engine) as conn:
        row = conn.execute(
            select(MosaicGroup.phase, MosaicGroup.generation).where(MosaicGroup.id == group_id)
        ).first()
        if row is None:
            raise NotFoundError(f"no mosaic group with id {group_id}")
        if row.phase != str(Phase.PUBLISHED):
            raise RequestError(
                f"group {group_id} is {row.phase}, not published: a new version is made only "
                "of a published mosaic"
            )
        generation = row.generation + 1
        reason = f"new version (generation {generation}) requested"
        if not start_generation(conn, group_id, row.generation, reason=reason, at=now, actor=actor):
            raise RequestError(f"group {group_id} changed meanwhile: ask again")
    return generation


def start_generation(
    conn: Connection,
    group_id: int,
    published: int,
    *,
    reason: str,
    at: datetime,
    actor: str,
    reprocessing_id: int | None = None,
) -> bool:
    """Start generation ``published + 1`` of a group whose generation ``published`` is
    published: it is worked on again (asked for by ``reprocessing_id``, if any). False,
    changing nothing, when the group is no longer so (another request came first)."""
    generation = published + 1
    started = conn.execute(
        update(MosaicGroup)
        .where(
            MosaicGroup.id == group_id,
            MosaicGroup.generation == published,
            MosaicGroup.phase == str(Phase.PUBLISHED),
        )
        .values(
            generation=generation,
            reprocessing_id=reprocessing_id,
            phase=str(Phase.NEW),
            status_reason=reason,
            next_action=None,
            published_path=None,
            status_updated_at=at,
        )
    )
    if started.rowcount != 1:
        return False
    queries.record_event(
        conn,
        "new_version",
        f"generation {generation} requested; generation {published} stays published",
        at=at,
        group_id=group_id,
        actor=actor,
    )
    return True
