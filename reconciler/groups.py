"""Desired-state commands: request a window, pause, resume, cancel, retry a group.

These write only desired state (and reset failed actions on ``retry``); the service does
the rest on its next pass. Asking twice for the same window returns the existing group:
the unique constraint on the window decides, not a Python ``if``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite

from reconciler.db import queries
from reconciler.db.engine import writing
from reconciler.db.models import MosaicGroup
from reconciler.decide import window_problem
from reconciler.errors import NotFoundError, RequestError
from reconciler.model import Origin
from reconciler.naming import group_target, observation_target
from reconciler.observe import Snapshot


def parse_time(text: str, *, what: str) -> datetime:
    """Parse an ISO 8601 time; one without a zone is UTC.

    Raises
    ------
    RequestError
        Naming ``what`` and the text when it is not a time.
    """
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise RequestError(
            f"{what} {text!r} is not an ISO time such as 2025-01-01T00:00:00"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class RequestResult:
    """The group that serves a request, and whether this request created it."""

    group_id: int
    created: bool


def request_window(
    engine: Engine,
    start: datetime,
    end: datetime,
    *,
    max_window: timedelta,
    origin: Origin = Origin.MANUAL,
    calibrator: str | None = None,
    actor: str = "cli",
) -> RequestResult:
    """Ask for a mosaic of ``[start, end)``; an identical window returns the existing group.

    Raises
    ------
    RequestError
        When the end is not after the start or the window is longer than ``max_window``.
    """
    problem = window_problem(start, end, max_window)
    if problem is not None:
        raise RequestError(problem)
    now = datetime.now(UTC)
    with writing(engine) as conn:
        insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
            MosaicGroup
        )
        stmt = (
            insert.values(
                window_start=start,
                window_end=end,
                origin=str(origin),
                calibrator_name=calibrator,
                timespan_minutes=(end - start).total_seconds() / 60,
            )
            .on_conflict_do_nothing(index_elements=["window_start", "window_end"])
            .returning(MosaicGroup.id)
        )
        created_id = conn.execute(stmt).scalar()
        if created_id is not None:
            queries.record_event(
                conn,
                "requested",
                f"window {start:%Y-%m-%d %H:%M:%S} – {end:%Y-%m-%d %H:%M:%S} requested ({origin})",
                at=now,
                group_id=created_id,
                actor=actor,
            )
            return RequestResult(created_id, True)
        existing = conn.execute(
            select(MosaicGroup.id).where(
                MosaicGroup.window_start == start, MosaicGroup.window_end == end
            )
        ).scalar_one()
        return RequestResult(existing, False)


def _require_group(conn: Connection, group_id: int) -> None:
    if not queries.group_exists(conn, group_id):
        raise NotFoundError(f"no mosaic group with id {group_id}")


def set_paused(engine: Engine, group_id: int, paused: bool, *, actor: str = "cli") -> int:
    """Pause (no new work; queued work is cancelled) or resume a group.

    Returns the number of queued actions cancelled by a pause.
    """
    now = datetime.now(UTC)
    with writing(engine) as conn:
        _require_group(conn, group_id)
        conn.execute(update(MosaicGroup).where(MosaicGroup.id == group_id).values(paused=paused))
        cancelled = queries.cancel_pending(conn, group_id, now=now) if paused else 0
        word = "paused" if paused else "resumed"
        queries.record_event(conn, word, f"group {word}", at=now, group_id=group_id, actor=actor)
    return cancelled


def cancel(engine: Engine, group_id: int, *, actor: str = "cli") -> int:
    """Cancel a group for good; its queued actions are cancelled. Returns how many."""
    now = datetime.now(UTC)
    with writing(engine) as conn:
        _require_group(conn, group_id)
        conn.execute(update(MosaicGroup).where(MosaicGroup.id == group_id).values(cancelled=True))
        cancelled = queries.cancel_pending(conn, group_id, now=now)
        queries.record_event(
            conn, "cancelled", "group cancelled", at=now, group_id=group_id, actor=actor
        )
    return cancelled


def retry(engine: Engine, snapshot: Snapshot, group_id: int, *, actor: str = "cli") -> int:
    """Give the failed actions of a group a fresh set of attempts. Returns how many.

    ``snapshot`` must hold the group (observe it by id), so the member and calibration
    targets are known.
    """
    now = datetime.now(UTC)
    found = [g for g in snapshot.groups if g.observed.group.id == group_id]
    if not found:
        raise NotFoundError(f"no mosaic group with id {group_id}")
    observed = found[0].observed
    targets = [group_target(group_id)]
    targets += [observation_target(m.key) for m in observed.members]
    if observed.calibration.solve_target is not None:
        targets.append(observation_target(observed.calibration.solve_target))
    with writing(engine) as conn:
        reset = queries.reset_failed(conn, targets)
        queries.record_event(
            conn,
            "retry",
            f"retry requested: {reset} failed action(s) reset",
            at=now,
            group_id=group_id,
            actor=actor,
        )
    return reset
