"""Commands on a desired mosaic: pause, resume, cancel, retry, accept a held one.

These write only desired state (and reset failed actions on ``retry``); the service does
the rest on its next pass.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, select, update

from reconciler.db import queries
from reconciler.db.engine import writing
from reconciler.db.models import MosaicGroup, QualityReport
from reconciler.errors import NotFoundError, RequestError
from reconciler.model import Quality
from reconciler.naming import group_target, observation_target
from reconciler.observe import Snapshot


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
        conn.execute(
            update(MosaicGroup)
            .where(MosaicGroup.id == group_id)
            .values(cancelled=True, parked=False)
        )
        cancelled = queries.cancel_pending(conn, group_id, now=now)
        queries.record_event(
            conn, "cancelled", "group cancelled", at=now, group_id=group_id, actor=actor
        )
    return cancelled


def retry(
    engine: Engine,
    snapshot: Snapshot,
    group_id: int,
    *,
    max_window: timedelta,
    actor: str = "cli",
) -> int:
    """Give the failed actions of a group a fresh set of attempts. Returns how many.

    ``snapshot`` must hold the group (observe it by id), so the member and calibration
    targets are known. The group is woken (passes observe it again), and so is every
    parked group that holds one of its observations: they may have waited on the same
    failed action.
    """
    now = datetime.now(UTC)
    found = [g for g in snapshot.groups if g.observed.group.id == group_id]
    if not found:
        raise NotFoundError(f"no mosaic group with id {group_id}")
    observed = found[0].observed
    keys = [m.key for m in observed.members]
    if observed.calibration.solve_target is not None:
        keys.append(observed.calibration.solve_target)
    targets = [group_target(group_id)] + [observation_target(key) for key in keys]
    with writing(engine) as conn:
        reset = queries.reset_failed(conn, targets)
        around = queries.groups_around(conn, keys, max_window=max_window)
        woken = queries.wake(conn, [group_id, *around])
        others = [g for g in woken if g != group_id]
        also = f"; group(s) {', '.join(map(str, others))} woken too" if others else ""
        queries.record_event(
            conn,
            "retry",
            f"retry requested: {reset} failed action(s) reset{also}",
            at=now,
            group_id=group_id,
            actor=actor,
        )
    return reset


def accept(engine: Engine, group_id: int, *, reason: str | None = None, actor: str = "cli") -> str:
    """Publish a held mosaic anyway: record the override on its failed quality assessment
    and wake the group; the next pass publishes it. Returns what was done, as a sentence.

    Raises
    ------
    NotFoundError
        If there is no such group.
    RequestError
        If the group's current mosaic has no quality assessment yet, or did not fail it.
    """
    now = datetime.now(UTC)
    with writing(engine) as conn:
        generation = conn.execute(
            select(MosaicGroup.generation).where(MosaicGroup.id == group_id)
        ).scalar()
        if generation is None:
            raise NotFoundError(f"no mosaic group with id {group_id}")
        report = conn.execute(
            select(QualityReport.quality, QualityReport.accepted_at).where(
                QualityReport.group_id == group_id, QualityReport.generation == generation
            )
        ).first()
        if report is None:
            raise RequestError(
                f"group {group_id} generation {generation} has no quality assessment yet: "
                "nothing to accept"
            )
        if report.quality != str(Quality.FAILED):
            raise RequestError(
                f"the quality assessment of group {group_id} generation {generation} is "
                f"{report.quality}, not failed: it is published without being accepted"
            )
        if report.accepted_at is not None:
            return f"group {group_id} generation {generation} was already accepted"
        conn.execute(
            update(QualityReport)
            .where(QualityReport.group_id == group_id, QualityReport.generation == generation)
            .values(accepted_at=now, accepted_by=actor, accept_reason=reason)
        )
        queries.wake(conn, [group_id])
        queries.record_event(
            conn,
            "accepted",
            f"failed quality assessment of generation {generation} accepted"
            f"{f': {reason}' if reason else ''}; it will be published",
            at=now,
            group_id=group_id,
            actor=actor,
        )
    return f"group {group_id} generation {generation} accepted: the next pass publishes it"
