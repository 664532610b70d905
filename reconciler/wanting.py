"""The ways of wanting a mosaic that need the database (DESIGN §4).

* Calibrator-centred: the earliest transit of a calibrator that has data on a strip the
  calibrator lies in → the window ``transit ± timespan / 2`` → a group
  (:func:`find_centred_window`, :func:`request_centred`), also for rows inserted with plain
  SQL naming only a calibrator (:func:`resolve_calibrator_rows`).
* Default tiling, the earliest incomplete window (:func:`create_tiling_windows`), with
  :func:`report_late_data` for data that arrive after a window was published and
  :func:`new_generation` to make a new version of it.

The window logic itself is pure (:mod:`reconciler.windows`); this module reads the
observations it needs and writes desired state only. The pass calls :func:`want` once,
right after discovery.

Tiling cost is bounded whatever the history holds: it continues from the latest tiling
window, reads at most ``size + (max_new_per_pass + 1) * stride + 1`` observations from that
window's start on (one indexed range scan), and creates at most ``max_new_per_pass``
windows per pass. The late-data check reads only published windows that ended within
``late_lookback_hours``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, and_, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from reconciler.catalogue import Calibrator, closest_names
from reconciler.config import Settings
from reconciler.db import queries
from reconciler.db.calibrators import all_calibrators
from reconciler.db.engine import reading, writing
from reconciler.db.models import Event, MosaicGroup, MosaicGroupMember, Observation
from reconciler.errors import NotFoundError, RequestError
from reconciler.groups import RequestResult
from reconciler.model import Origin, Phase
from reconciler.observe import ACTIVE_GROUPS, TransitFinder
from reconciler.windows import (
    ObservationSpan,
    Window,
    WindowRefusal,
    WindowState,
    centred_window,
    tile_windows,
)

log = logging.getLogger("reconciler")

#: The timespan of a calibrator-centred request that names none (DESIGN §4).
DEFAULT_TIMESPAN_MINUTES = 50.0

#: Phases of a tiling window that is being worked on (counted against ``max_in_flight``);
#: waiting, failed and insufficient windows are not, so they never block later ones.
IN_FLIGHT = tuple(
    str(p)
    for p in (
        Phase.NEW,
        Phase.CONVERTING,
        Phase.CALIBRATING,
        Phase.IMAGING,
        Phase.MOSAICKING,
        Phase.PUBLISHING,
    )
)


# --- calibrator-centred windows --------------------------------------------------------


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
        spans = [_span(row) for row in rows]
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


def _span(row: Row[Any]) -> ObservationSpan:
    return ObservationSpan(row.key, row.start_time, row.end_time, row.dec_deg)


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
        values = _centred_values(found)
        created = _insert_group(conn, values)
        if created is not None:
            queries.record_event(
                conn, "requested", _centred_text(found), at=now, group_id=created, actor=actor
            )
            return RequestResult(created, True), found
        existing = _group_with_window(conn, found.start, found.end)
    assert existing is not None, "the insert conflicted, so the window exists"
    return RequestResult(existing, False), found


def _centred_values(found: TransitWindow) -> dict[str, Any]:
    return {
        "window_start": found.start,
        "window_end": found.end,
        "origin": str(Origin.CALIBRATOR),
        "calibrator_name": found.calibrator,
        "timespan_minutes": found.timespan.total_seconds() / 60,
        "dec_deg": found.dec_deg,
    }


def _centred_text(found: TransitWindow) -> str:
    return (
        f"window {found.start:%Y-%m-%d %H:%M:%S} – {found.end:%Y-%m-%d %H:%M:%S} centred on "
        f"the transit of {found.calibrator} at {found.transit:%Y-%m-%d %H:%M:%S} "
        f"({len(found.window.members)} observation(s) at dec {found.dec_deg:.2f}, "
        f"{found.window.state})"
    )


def _insert_group(conn: Connection, values: dict[str, Any]) -> int | None:
    """Insert a desired mosaic; None when a group with the same window exists."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = (
        dialect.insert(MosaicGroup)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["window_start", "window_end"])
        .returning(MosaicGroup.id)
    )
    return conn.execute(stmt).scalar()


def _group_with_window(conn: Connection, start: datetime, end: datetime) -> int | None:
    return conn.execute(
        select(MosaicGroup.id).where(
            MosaicGroup.window_start == start, MosaicGroup.window_end == end
        )
    ).scalar()


# --- calibrator-only rows (plain SQL) --------------------------------------------------


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
    return _resolve_rows(engine, settings, rows, transits=transits, now=now, actor=actor)


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


def _resolve_rows(
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
        existing = _group_with_window(conn, found.start, found.end)
        if existing is None:
            try:
                with conn.begin_nested():
                    conn.execute(
                        update(MosaicGroup)
                        .where(MosaicGroup.id == row.id, MosaicGroup.window_start.is_(None))
                        .values(**_centred_values(found))
                    )
            except IntegrityError:
                # Another writer took the window between the check and the update.
                existing = _group_with_window(conn, found.start, found.end)
        if existing is not None and existing != row.id:
            reason = (
                f"same window as group {existing} ({found.start:%Y-%m-%d %H:%M:%S} – "
                f"{found.end:%Y-%m-%d %H:%M:%S}, centred on the transit of {found.calibrator} "
                f"at {found.transit:%Y-%m-%d %H:%M:%S}): follow group {existing}"
            )
            _mark_invalid(conn, row.id, reason, now=now, actor=actor)
            return "invalid"
        queries.record_event(
            conn, "resolved", _centred_text(found), at=now, group_id=row.id, actor=actor
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


# --- default tiling --------------------------------------------------------------------


@dataclass(frozen=True)
class TilingPlan:
    """The windows after the latest tiling window, as the data stand.

    Attributes
    ----------
    windows
        Candidate windows in time order: complete, short, too short and (last) open ones.
    existing
        ``(start, end)`` of the candidates that already have a group (of any origin).
    observations_read
        How many observation rows were read to plan: the cost of one pass.
    """

    windows: tuple[Window, ...]
    existing: frozenset[tuple[datetime, datetime]]
    observations_read: int


@dataclass
class TilingReport:
    """What :func:`create_tiling_windows` did."""

    created: list[int] = field(default_factory=list)
    too_short: list[int] = field(default_factory=list)
    observations_read: int = 0
    skipped: str | None = None


def observation_limit(settings: Settings, windows: int) -> int:
    """Most observations read to plan ``windows`` new windows past the latest one."""
    t = settings.tiling
    return t.size + (windows + 1) * t.stride + 1


def plan_tiling(conn: Connection, settings: Settings, *, now: datetime, windows: int) -> TilingPlan:
    """Tile the observations after the latest tiling window, enough for ``windows`` more.

    Continuing from the latest tiling window keeps the work per pass bounded however long
    the history: the observations are read from that window's start on, at most
    :func:`observation_limit` of them, and only those that started more than
    ``windows.arrival_grace_minutes`` before ``now`` (later ones may still be arriving out
    of order). The next window shares ``size - stride``
    observations with it when the data run on without a gap or dec change; otherwise a new
    run starts after it (anchored at its first observation, as :func:`tile_windows` does).
    """
    t = settings.tiling
    tolerance = settings.calibration.dec_strip_tolerance_deg
    max_gap = timedelta(minutes=t.max_gap_minutes)
    anchor = conn.execute(
        select(MosaicGroup.window_start, MosaicGroup.window_end, MosaicGroup.dec_deg)
        .where(MosaicGroup.origin == str(Origin.TILING), MosaicGroup.window_start.is_not(None))
        .order_by(MosaicGroup.window_start.desc(), MosaicGroup.id.desc())
        .limit(1)
    ).first()
    limit = observation_limit(settings, windows)
    # Files may arrive out of order, but not later than the arrival grace: only the data
    # before the horizon are taken as known, so arrival order cannot change the windows.
    horizon = now - settings.decide_policy.arrival_grace
    stmt = (
        select(Observation.key, Observation.start_time, Observation.end_time, Observation.dec_deg)
        .where(Observation.start_time < horizon)
        .order_by(Observation.start_time, Observation.key)
    )
    if anchor is not None:
        stmt = stmt.where(Observation.start_time >= anchor.window_start)
    rows = conn.execute(stmt.limit(limit)).all()
    spans = [_span(row) for row in rows]
    if anchor is not None:
        spans = _continuation(spans, anchor.window_end, t.size - t.stride, max_gap, tolerance)
    tiling = tile_windows(
        spans,
        max_gap=max_gap,
        dec_tolerance_deg=tolerance,
        size=t.size,
        stride=t.stride,
        min_size=settings.windows.min_observations,
        # A truncated read does not show where the last run ends.
        closed_before=None if len(rows) == limit else horizon,
    )
    candidates = tuple(sorted(tiling.windows + tiling.too_short, key=lambda w: (w.start, w.end)))
    existing: frozenset[tuple[datetime, datetime]] = frozenset()
    if candidates:
        found = conn.execute(
            select(MosaicGroup.window_start, MosaicGroup.window_end).where(
                MosaicGroup.window_start.between(candidates[0].start, candidates[-1].start)
            )
        ).all()
        existing = frozenset((r.window_start, r.window_end) for r in found)
    return TilingPlan(candidates, existing, len(rows))


def _continuation(
    spans: list[ObservationSpan],
    anchor_end: datetime,
    overlap: int,
    max_gap: timedelta,
    tolerance: float,
) -> list[ObservationSpan]:
    """The observations to tile after the anchor window (which ``spans`` starts with)."""
    inside = [s for s in spans if s.start < anchor_end]
    after = spans[len(inside) :]
    if not inside or not after:
        return after
    contiguous = (
        after[0].start - max(s.end for s in inside) <= max_gap
        and abs(after[0].dec_deg - inside[0].dec_deg) <= tolerance
    )
    return spans[max(len(inside) - overlap, 0) :] if contiguous else after


def create_tiling_windows(
    engine: Engine, settings: Settings, *, now: datetime, actor: str = "service"
) -> TilingReport:
    """Create the earliest tiling windows whose data are complete or closed.

    At most ``tiling.max_new_per_pass`` windows, and none while ``tiling.max_in_flight``
    tiling windows are being worked on. Complete and short windows become groups (origin
    ``tiling``); a window closed with fewer than ``windows.min_observations`` members
    becomes an ``invalid`` group saying so, so it is reported and never silently dropped.
    An open window (data may still arrive) waits. A window is never created twice: the
    unique constraint on the window and ``ON CONFLICT DO NOTHING`` see to it.
    """
    with reading(engine) as conn:
        report, todo = next_tiling_windows(conn, settings, now=now)
    return _create_tiling_groups(engine, settings, report, todo, now=now, actor=actor)


def next_tiling_windows(
    conn: Connection, settings: Settings, *, now: datetime
) -> tuple[TilingReport, list[Window]]:
    """The tiling windows to create now, and a report of how they were found."""
    t = settings.tiling
    report = TilingReport()
    in_flight = conn.execute(
        select(func.count())
        .select_from(MosaicGroup)
        .where(
            # The (redundant) active-groups predicate lets the partial index serve.
            ACTIVE_GROUPS,
            MosaicGroup.origin == str(Origin.TILING),
            MosaicGroup.phase.in_(IN_FLIGHT),
        )
    ).scalar_one()
    room = min(t.max_new_per_pass, t.max_in_flight - in_flight)
    if room <= 0:
        report.skipped = f"{in_flight} tiling window(s) in flight (max {t.max_in_flight})"
        return report, []
    plan = plan_tiling(conn, settings, now=now, windows=room)
    report.observations_read = plan.observations_read
    todo: list[Window] = []
    for window in plan.windows:
        if window.state is WindowState.OPEN or len(todo) == room:
            break
        if (window.start, window.end) not in plan.existing:
            todo.append(window)
    return report, todo


def _create_tiling_groups(
    engine: Engine,
    settings: Settings,
    report: TilingReport,
    todo: list[Window],
    *,
    now: datetime,
    actor: str,
) -> TilingReport:
    if todo:
        with writing(engine) as conn:
            for window in todo:
                _create_tiling_group(conn, window, settings, report, now=now, actor=actor)
    return report


def _create_tiling_group(
    conn: Connection,
    window: Window,
    settings: Settings,
    report: TilingReport,
    *,
    now: datetime,
    actor: str,
) -> None:
    values: dict[str, Any] = {
        "window_start": window.start,
        "window_end": window.end,
        "origin": str(Origin.TILING),
        "timespan_minutes": (window.end - window.start).total_seconds() / 60,
        "dec_deg": window.dec_deg,
    }
    span = f"{window.members[0]} – {window.members[-1]}"
    if window.state is WindowState.TOO_SHORT:
        reason = (
            f"too short to mosaic: only {len(window.members)} observation(s) ({span}) between "
            f"gaps or dec changes; a mosaic needs at least {settings.windows.min_observations}"
        )
        values |= {"phase": str(Phase.INVALID), "status_reason": reason, "status_updated_at": now}
    group_id = _insert_group(conn, values)
    if group_id is None:
        return
    if window.state is WindowState.TOO_SHORT:
        report.too_short.append(group_id)
        ids = conn.execute(
            select(Observation.id)
            .where(Observation.key.in_(window.members))
            .order_by(Observation.start_time)
        ).scalars()
        conn.execute(
            MosaicGroupMember.__table__.insert(),
            [
                {"group_id": group_id, "observation_id": oid, "position": i, "role": "member"}
                for i, oid in enumerate(ids)
            ],
        )
        queries.record_event(conn, "tiling", reason, at=now, group_id=group_id, actor=actor)
        return
    report.created.append(group_id)
    message = (
        f"tiling window {window.start:%Y-%m-%d %H:%M:%S} – {window.end:%Y-%m-%d %H:%M:%S}: "
        f"{len(window.members)} observation(s) ({span}) at dec {window.dec_deg:.2f}, "
        f"{window.state}"
    )
    queries.record_event(conn, "requested", message, at=now, group_id=group_id, actor=actor)


# --- late data and new versions --------------------------------------------------------


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
    return _write_late_notes(engine, notes, now=now, actor=actor)


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


def _write_late_notes(
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
        conn.execute(
            update(MosaicGroup)
            .where(MosaicGroup.id == group_id)
            .values(
                generation=generation,
                phase=str(Phase.NEW),
                status_reason=f"new version (generation {generation}) requested",
                next_action=None,
                published_path=None,
                status_updated_at=now,
            )
        )
        queries.record_event(
            conn,
            "new_version",
            f"generation {generation} requested; generation {row.generation} stays published",
            at=now,
            group_id=group_id,
            actor=actor,
        )
    return generation


# --- the earliest incomplete window ----------------------------------------------------


def earliest_incomplete_window(
    engine: Engine, settings: Settings, *, now: datetime, dec_deg: float | None = None
) -> Window | None:
    """The earliest tiling window without a published mosaic (on the strip ``dec_deg``).

    Either an existing tiling group that is not published yet (nor given up: invalid or
    cancelled), or else the next window the tiling will create (open while its data are
    still arriving). None when every window of the data is published. Reads no more than a
    pass does.
    """
    tolerance = settings.calibration.dec_strip_tolerance_deg
    with reading(engine) as conn:
        stmt = (
            select(MosaicGroup.window_start, MosaicGroup.window_end, MosaicGroup.dec_deg)
            .where(ACTIVE_GROUPS, MosaicGroup.origin == str(Origin.TILING))
            .order_by(MosaicGroup.window_start)
        )
        if dec_deg is not None:
            stmt = stmt.where(func.abs(MosaicGroup.dec_deg - dec_deg) <= tolerance)
        group = conn.execute(stmt.limit(1)).first()
        if group is not None:
            return _group_window(conn, group, settings)
        plan = plan_tiling(conn, settings, now=now, windows=2)
    for window in plan.windows:
        if window.state is WindowState.TOO_SHORT or (window.start, window.end) in plan.existing:
            continue
        if dec_deg is None or abs(window.dec_deg - dec_deg) <= tolerance:
            return window
    return None


def _group_window(conn: Connection, group: Row[Any], settings: Settings) -> Window:
    rows = conn.execute(
        select(Observation.key, Observation.start_time, Observation.end_time, Observation.dec_deg)
        .where(
            Observation.start_time >= group.window_start,
            Observation.start_time < group.window_end,
            func.abs(Observation.dec_deg - group.dec_deg)
            <= settings.calibration.dec_strip_tolerance_deg,
        )
        .order_by(Observation.start_time, Observation.key)
    ).all()
    state = WindowState.COMPLETE if len(rows) >= settings.tiling.size else WindowState.SHORT
    return Window(
        start=group.window_start,
        end=group.window_end,
        members=tuple(r.key for r in rows),
        dec_deg=group.dec_deg,
        state=state,
    )


# --- once per pass ---------------------------------------------------------------------


@dataclass(frozen=True)
class WantReport:
    """What the pass's wanting step did."""

    resolve: ResolveReport
    tiling: TilingReport | None
    late: tuple[int, ...]


def want(
    engine: Engine,
    settings: Settings,
    *,
    transits: TransitFinder,
    now: datetime,
    actor: str = "service",
) -> WantReport:
    """The pass's desired-state step: resolve calibrator-only rows, tile, note late data.

    All three read in one snapshot; each writes (in its own transaction) only when it has
    something to write, so an idle pass costs one read transaction here.
    """
    with reading(engine) as conn:
        unresolved = unresolved_calibrator_rows(conn)
        tiling = next_tiling_windows(conn, settings, now=now) if settings.tiling.enabled else None
        notes = late_data_notes(conn, settings, now=now)
    resolve = _resolve_rows(engine, settings, unresolved, transits=transits, now=now, actor=actor)
    created = None
    if tiling is not None:
        created = _create_tiling_groups(engine, settings, *tiling, now=now, actor=actor)
    late = _write_late_notes(engine, notes, now=now, actor=actor)
    return WantReport(resolve, created, tuple(late))
