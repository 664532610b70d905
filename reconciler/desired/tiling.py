"""Default tiling (DESIGN §4): per dec strip, windows of ``tiling.size`` observations every
``tiling.stride``, created earliest first once their data are complete or closed; and the
earliest incomplete window.

Tiling cost is bounded whatever the history holds: it continues from the latest tiling
window, reads at most ``size + (max_new_per_pass + 1) * stride + 1`` observations from that
window's start on (one indexed range scan), and creates at most ``max_new_per_pass``
windows per pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, func, select

from reconciler.config import Settings
from reconciler.db import queries
from reconciler.db.engine import reading, writing
from reconciler.db.models import ACTIVE_GROUPS, MosaicGroup, MosaicGroupMember, Observation
from reconciler.desired.rows import insert_group, observation_span
from reconciler.model import Origin, Phase
from reconciler.windows import ObservationSpan, Window, WindowState, tile_windows

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
        Phase.CATALOGUING,
        Phase.PUBLISHING,
    )
)


@dataclass(frozen=True)
class TilingCandidates:
    """The windows after the latest tiling window, as the data stand.

    Attributes
    ----------
    windows
        Candidate windows in time order: complete, short, too short and (last) open ones.
    existing
        ``(start, end)`` of the candidates that already have a group (of any origin).
    observations_read
        How many observation rows were read to find them: the cost of one pass.
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
    """Most observations read to find ``windows`` new windows past the latest one."""
    t = settings.tiling
    return t.size + (windows + 1) * t.stride + 1


def tiling_candidates(
    conn: Connection, settings: Settings, *, now: datetime, windows: int
) -> TilingCandidates:
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
    spans = [observation_span(row) for row in rows]
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
    return TilingCandidates(candidates, existing, len(rows))


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
    return create_tiling_groups(engine, settings, report, todo, now=now, actor=actor)


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
    candidates = tiling_candidates(conn, settings, now=now, windows=room)
    report.observations_read = candidates.observations_read
    todo: list[Window] = []
    for window in candidates.windows:
        if window.state is WindowState.OPEN or len(todo) == room:
            break
        if (window.start, window.end) not in candidates.existing:
            todo.append(window)
    return report, todo


def create_tiling_groups(
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
    group_id = insert_group(conn, values)
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
        candidates = tiling_candidates(conn, settings, now=now, windows=2)
    for window in candidates.windows:
        if (
            window.state is WindowState.TOO_SHORT
            or (window.start, window.end) in candidates.existing
        ):
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
