"""Calibrator-only rows: a group inserted with plain SQL naming only a calibrator (and maybe
a timespan) gets the calibrator-centred window on the service's next pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, or_, select, update
from sqlalchemy.exc import IntegrityError

from reconciler.config import Settings
from reconciler.db import queries
from reconciler.db.engine import reading, writing
from reconciler.db.models import ACTIVE_GROUPS, Event, MosaicGroup
from reconciler.desired.centred import (
    DEFAULT_TIMESPAN_MINUTES,
    TransitWindow,
    centred_text,
    centred_values,
    check_timespan,
    find_centred_window,
    lookup_calibrator,
    result_reason,
)
from reconciler.desired.rows import group_with_window
from reconciler.errors import NotFoundError, RequestError
from reconciler.model import Phase
from reconciler.sky import TransitFinder


@dataclass
class ResolveReport:
    """What :func:`resolve_calibrator_rows` did: group ids per outcome."""

    resolved: list[int] = field(default_factory=list)
    waiting: list[int] = field(default_factory=list)
    invalid: list[int] = field(default_factory=list)


def resolve_calibrator_rows(
    engine: Engine,
    settings: Settings,
    *,
    transits: TransitFinder,
    now: datetime,
    actor: str = "service",
) -> ResolveReport:
    """Fill in the window of groups that name only a calibrator (and maybe a timespan).

    Each such row gets the calibrator-centred window, its dec, origin ``calibrator`` and
    the timespan (50 minutes when NULL). A row naming an unknown calibrator or a bad
    timespan becomes ``invalid`` with the reason (closest names for a typo); a row whose
    window is the window of another group becomes ``invalid`` saying which ("same window as
    group N") instead of breaking the unique constraint. A row with no transit with enough
    data stays ``waiting`` (decide says so) and its events say what is missing.
    """
    with reading(engine) as conn:
        rows = unresolved_calibrator_rows(conn)
    return resolve_rows(engine, settings, rows, transits=transits, now=now, actor=actor)


def unresolved_calibrator_rows(conn: Connection) -> list[Row[Any]]:
    """Active groups that name a calibrator but have no window yet."""
    return list(
        conn.execute(
            select(MosaicGroup.id, MosaicGroup.calibrator_name, MosaicGroup.timespan_minutes)
            .where(
                ACTIVE_GROUPS,
                MosaicGroup.calibrator_name.is_not(None),
                MosaicGroup.cancelled.is_(False),
                or_(MosaicGroup.window_start.is_(None), MosaicGroup.window_end.is_(None)),
            )
            .order_by(MosaicGroup.id)
        )
    )


def resolve_rows(
    engine: Engine,
    settings: Settings,
    rows: list[Row[Any]],
    *,
    transits: TransitFinder,
    now: datetime,
    actor: str,
) -> ResolveReport:
    report = ResolveReport()
    for row in rows:
        outcome = _resolve_row(engine, settings, row, transits=transits, now=now, actor=actor)
        getattr(report, outcome).append(row.id)
    return report


def _resolve_row(
    engine: Engine,
    settings: Settings,
    row: Row[Any],
    *,
    transits: TransitFinder,
    now: datetime,
    actor: str,
) -> str:
    minutes = row.timespan_minutes or DEFAULT_TIMESPAN_MINUTES
    try:
        timespan = check_timespan(minutes, settings)
        with reading(engine) as conn:
            calibrator = lookup_calibrator(conn, row.calibrator_name)
            found = find_centred_window(
                conn, calibrator, timespan, settings, transits=transits, now=now
            )
    except (NotFoundError, RequestError) as exc:
        with writing(engine) as conn:
            _mark_invalid(conn, row.id, str(exc), now=now, actor=actor)
        return "invalid"
    if not isinstance(found, TransitWindow):
        with writing(engine) as conn:
            _note_once(conn, row.id, "unresolved", result_reason(found), now=now, actor=actor)
        return "waiting"
    with writing(engine) as conn:
        existing = group_with_window(conn, found.start, found.end)
        if existing is None:
            try:
                with conn.begin_nested():
                    conn.execute(
                        update(MosaicGroup)
                        .where(MosaicGroup.id == row.id, MosaicGroup.window_start.is_(None))
                        .values(**centred_values(found))
                    )
            except IntegrityError:
                # Another writer took the window between the check and the update.
                existing = group_with_window(conn, found.start, found.end)
        if existing is not None and existing != row.id:
            reason = (
                f"same window as group {existing} ({found.start:%Y-%m-%d %H:%M:%S} – "
                f"{found.end:%Y-%m-%d %H:%M:%S}, centred on the transit of {found.calibrator} "
                f"at {found.transit:%Y-%m-%d %H:%M:%S}): follow group {existing}"
            )
            _mark_invalid(conn, row.id, reason, now=now, actor=actor)
            return "invalid"
        queries.record_event(
            conn, "resolved", centred_text(found), at=now, group_id=row.id, actor=actor
        )
    return "resolved"


def _mark_invalid(
    conn: Connection, group_id: int, reason: str, *, now: datetime, actor: str
) -> None:
    conn.execute(
        update(MosaicGroup)
        .where(MosaicGroup.id == group_id)
        .values(
            phase=str(Phase.INVALID),
            status_reason=reason,
            next_action=None,
            status_updated_at=now,
        )
    )
    queries.record_event(
        conn, "phase", f"→ {Phase.INVALID}: {reason}", at=now, group_id=group_id, actor=actor
    )


def _note_once(
    conn: Connection, group_id: int, kind: str, message: str, *, now: datetime, actor: str
) -> None:
    """Record an event unless the group's latest event of this kind says the same."""
    last = conn.execute(
        select(Event.message)
        .where(Event.group_id == group_id, Event.kind == kind)
        .order_by(Event.id.desc())
        .limit(1)
    ).scalar()
    if last != message:
        queries.record_event(conn, kind, message, at=now, group_id=group_id, actor=actor)
