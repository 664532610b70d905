"""Explicit requests: a person asks for the mosaic of a window (CLI, Python or plain SQL).

Asking twice for the same window returns the existing group: the unique constraint on the
window decides, not a Python ``if``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from reconciler.db import queries
from reconciler.db.engine import writing
from reconciler.decide import window_problem
from reconciler.desired.rows import group_with_window, insert_group
from reconciler.errors import RequestError
from reconciler.model import Origin


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
        created_id = insert_group(
            conn,
            {
                "window_start": start,
                "window_end": end,
                "origin": str(origin),
                "calibrator_name": calibrator,
                "timespan_minutes": (end - start).total_seconds() / 60,
            },
        )
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
        existing = group_with_window(conn, start, end)
    assert existing is not None, "the insert conflicted, so the window exists"
    return RequestResult(existing, False)
