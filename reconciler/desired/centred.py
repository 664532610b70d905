"""Calibrator-centred requests (DESIGN §4): the earliest transit of a calibrator that has
data on a strip the calibrator lies in → the window ``transit ± timespan / 2`` → a group.

:func:`find_centred_window` finds the window, :func:`request_centred` asks for it; rows
inserted with plain SQL naming only a calibrator are filled in by
:mod:`reconciler.desired.calibrator_rows` with the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from reconciler.catalogue import Calibrator, closest_names
from reconciler.config import Settings
from reconciler.db import queries
from reconciler.db.calibrators import all_calibrators
from reconciler.db.engine import reading, writing
from reconciler.db.models import Observation
from reconciler.desired.explicit import RequestResult
from reconciler.desired.rows import group_with_window, insert_group, observation_span
from reconciler.errors import NotFoundError, RequestError
from reconciler.model import Origin
from reconciler.sky import TransitFinder
from reconciler.windows import ObservationSpan, Window, WindowRefusal, centred_window

#: The timespan of a calibrator-centred request that names none (DESIGN §4).
DEFAULT_TIMESPAN_MINUTES = 50.0


@dataclass(frozen=True)
class TransitWindow:
    """A calibrator-centred window that can be requested.

    Attributes
    ----------
    calibrator
        The calibrator's name.
    transit
        The transit the window is centred on (UTC).
    timespan
        The requested length.
    window
        Its members and state (``COMPLETE``, ``SHORT`` where data run out, or ``OPEN``
        while data may still arrive).
    """

    calibrator: str
    transit: datetime
    timespan: timedelta
    window: Window

    @property
    def start(self) -> datetime:
        """Group window start: the start of the first member (it overlaps the interval)."""
        return self.window.start

    @property
    def end(self) -> datetime:
        """Group window end: ``transit + timespan / 2`` (later data of the strip join)."""
        return self.transit + self.timespan / 2

    @property
    def dec_deg(self) -> float:
        """Pointing declination of the members."""
        return self.window.dec_deg


@dataclass(frozen=True)
class NoTransitData:
    """No transit of the calibrator has any data on a strip it serves (yet)."""

    calibrator: str
    reason: str


CentredResult = TransitWindow | WindowRefusal | NoTransitData


def result_reason(result: WindowRefusal | NoTransitData) -> str:
    """The operator's one-line explanation of a refusal."""
    if isinstance(result, NoTransitData):
        return result.reason
    return f"transit {result.transit:%Y-%m-%d %H:%M:%S}: {result.reason}"


def lookup_calibrator(conn: Connection, name: str) -> Calibrator:
    """The registered calibrator called ``name`` (active or not).

    Raises
    ------
    NotFoundError
        If there is none; the message lists the closest registered names.
    """
    known = all_calibrators(conn)
    for calibrator in known:
        if calibrator.name == name.strip():
            return calibrator
    suggestions = closest_names(name, known)
    hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
    listed = "" if hint else f" (registered: {', '.join(c.name for c in known) or 'none'})"
    raise NotFoundError(f"unknown calibrator {name!r}{hint}{listed}")


def check_timespan(timespan_minutes: float, settings: Settings) -> timedelta:
    """The timespan as a duration.

    Raises
    ------
    RequestError
        If it is not positive or longer than ``windows.max_window_hours``.
    """
    max_window = settings.decide_policy.max_window
    if not timespan_minutes > 0:
        raise RequestError(f"timespan of {timespan_minutes:g} minutes: must be positive")
    timespan = timedelta(minutes=timespan_minutes)
    if timespan > max_window:
        hours = max_window.total_seconds() / 3600
        raise RequestError(
            f"timespan of {timespan_minutes:g} minutes is longer than the {hours:g} h limit"
        )
    return timespan


def find_centred_window(
    conn: Connection,
    calibrator: Calibrator,
    timespan: timedelta,
    settings: Settings,
    *,
    transits: TransitFinder,
    now: datetime,
) -> CentredResult:
    """The window centred on the earliest transit of ``calibrator`` that has enough data.

    Transits are searched from the first to the last observation pointed within the
    calibrator's ``dec_tolerance_deg`` (so the calibrator is in the primary beam). For each
    transit, the observations overlapping ``transit ± timespan / 2`` on the strip of the
    observation nearest the transit are the members (:func:`~reconciler.windows.centred_window`);
    the first transit with at least ``windows.min_observations`` wins.

    Returns
    -------
    TransitWindow
        The window to request.
    WindowRefusal
        When transits have data but none enough: the one where waiting may still help,
        else the earliest; its reason says what is missing.
    NoTransitData
        When no transit has any data on a strip the calibrator serves.
    """
    tolerance = calibrator.dec_tolerance_deg
    on_strip = Observation.dec_deg.between(
        calibrator.dec_deg - tolerance, calibrator.dec_deg + tolerance
    )
    first, last = conn.execute(
        select(func.min(Observation.start_time), func.max(Observation.end_time)).where(on_strip)
    ).one()
    where = f"dec {calibrator.dec_deg:.2f}±{tolerance:g}"
    if first is None:
        return NoTransitData(
            calibrator.name, f"no observations at {where} (where {calibrator.name} is) yet"
        )
    half = timespan / 2
    closed_before = now - settings.decide_policy.arrival_grace
    refusals: list[WindowRefusal] = []
    for transit in sorted(
        transits(calibrator.ra_deg, calibrator.dec_deg, first - half, last + half)
    ):
        rows = conn.execute(
            select(
                Observation.key, Observation.start_time, Observation.end_time, Observation.dec_deg
            )
            .where(
                on_strip,
                Observation.start_time < transit + half,
                Observation.end_time > transit - half,
            )
            .order_by(Observation.start_time, Observation.key)
        ).all()
        if not rows:
            continue
        spans = [observation_span(row) for row in rows]
        nearest = min(spans, key=lambda s: _distance(s, transit))
        result = centred_window(
            transit,
            timespan,
            spans,
            dec_deg=nearest.dec_deg,
            dec_tolerance_deg=settings.calibration.dec_strip_tolerance_deg,
            min_size=settings.windows.min_observations,
            closed_before=closed_before,
        )
        if isinstance(result, Window):
            return TransitWindow(calibrator.name, transit, timespan, result)
        refusals.append(result)
    if refusals:
        return next((r for r in refusals if not r.final), refusals[0])
    return NoTransitData(
        calibrator.name,
        f"no data within ±{half.total_seconds() / 60:g} min of any transit of "
        f"{calibrator.name} (observations at {where} span {first:%Y-%m-%d %H:%M:%S} – "
        f"{last:%Y-%m-%d %H:%M:%S})",
    )


def _distance(span: ObservationSpan, moment: datetime) -> timedelta:
    if span.start <= moment < span.end:
        return timedelta(0)
    return min(abs(span.start - moment), abs(span.end - moment))


def request_centred(
    engine: Engine,
    settings: Settings,
    calibrator_name: str,
    timespan_minutes: float = DEFAULT_TIMESPAN_MINUTES,
    *,
    transits: TransitFinder,
    now: datetime,
    actor: str = "cli",
) -> tuple[RequestResult, TransitWindow]:
    """Ask for the mosaic centred on the earliest transit of a calibrator that has data.

    Returns the group (an identical window returns the existing group) and the window.

    Raises
    ------
    NotFoundError
        For an unknown calibrator (the message lists the closest names).
    RequestError
        For a bad timespan, or when no transit has enough data (the message says what was
        found and what is missing).
    """
    timespan = check_timespan(timespan_minutes, settings)
    with reading(engine) as conn:
        calibrator = lookup_calibrator(conn, calibrator_name)
        found = find_centred_window(
            conn, calibrator, timespan, settings, transits=transits, now=now
        )
    if not isinstance(found, TransitWindow):
        raise RequestError(f"no window centred on {calibrator.name}: {result_reason(found)}")
    with writing(engine) as conn:
        values = centred_values(found)
        created = insert_group(conn, values)
        if created is not None:
            queries.record_event(
                conn, "requested", centred_text(found), at=now, group_id=created, actor=actor
            )
            return RequestResult(created, True), found
        existing = group_with_window(conn, found.start, found.end)
    assert existing is not None, "the insert conflicted, so the window exists"
    return RequestResult(existing, False), found


def centred_values(found: TransitWindow) -> dict[str, Any]:
    return {
        "window_start": found.start,
        "window_end": found.end,
        "origin": str(Origin.CALIBRATOR),
        "calibrator_name": found.calibrator,
        "timespan_minutes": found.timespan.total_seconds() / 60,
        "dec_deg": found.dec_deg,
    }


def centred_text(found: TransitWindow) -> str:
    return (
        f"window {found.start:%Y-%m-%d %H:%M:%S} – {found.end:%Y-%m-%d %H:%M:%S} centred on "
        f"the transit of {found.calibrator} at {found.transit:%Y-%m-%d %H:%M:%S} "
        f"({len(found.window.members)} observation(s) at dec {found.dec_deg:.2f}, "
        f"{found.window.state})"
    )
