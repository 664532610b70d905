"""What the web pages and their JSON show, read from the database: plain data, one function
per page part. Every function only reads.

A view is chosen by :class:`Filters` (dec strip, phase, time span), which the pages take
from query parameters so a view can be bookmarked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, func, or_, select, text, true

from reconciler.db.models import (
    Action,
    CalibratedMS,
    Image,
    MeasurementSet,
    MosaicGroup,
    MosaicGroupMember,
    Observation,
    RegistryEntry,
)
from reconciler.db.types import UTCDateTime
from reconciler.io.confine import inside
from reconciler.model import Phase
from reconciler.status import STATUS_COLUMNS, event_rows, quality_reports

#: How far back the overview looks unless told: this many days up to the newest data.
DEFAULT_DAYS = 7.0

#: Phases in the order the pages list them: the ones that need a person first.
PHASE_ORDER = (
    Phase.FAILED,
    Phase.HELD,
    Phase.BLOCKED,
    Phase.INSUFFICIENT,
    Phase.WAITING,
    Phase.NEW,
    Phase.CONVERTING,
    Phase.CALIBRATING,
    Phase.IMAGING,
    Phase.MOSAICKING,
    Phase.CATALOGUING,
    Phase.ASSESSING,
    Phase.PUBLISHING,
    Phase.PAUSED,
    Phase.PUBLISHED,
    Phase.CANCELLED,
    Phase.INVALID,
)


@dataclass(frozen=True)
class Filters:
    """The view asked for: a time span, and optionally one dec strip and one phase.

    ``end`` None means "up to the newest data" (the newest observation or window end, or
    now when there is none), so a quiet array still shows its last week.
    """

    days: float = DEFAULT_DAYS
    end: datetime | None = None
    dec: float | None = None
    phase: str | None = None

    def query(self) -> dict[str, str]:
        """The query parameters that ask for this view (for links that keep it)."""
        params = {"days": f"{self.days:g}"}
        if self.end is not None:
            params["end"] = self.end.isoformat()
        if self.dec is not None:
            params["dec"] = f"{self.dec:g}"
        if self.phase is not None:
            params["phase"] = self.phase
        return params


@dataclass(frozen=True)
class Span:
    """The half-open time span a view covers."""

    start: datetime
    end: datetime


def span_of(conn: Connection, filters: Filters) -> Span:
    """The span of ``filters``: ``days`` up to its ``end`` or to the newest data."""
    end = filters.end or newest_data_end(conn) or datetime.now(UTC)
    return Span(end - timedelta(days=filters.days), end)


def newest_data_end(conn: Connection) -> datetime | None:
    """The end of the newest observation or mosaic window."""
    newest = [
        conn.execute(select(func.max(Observation.end_time))).scalar(),
        conn.execute(select(func.max(MosaicGroup.window_end))).scalar(),
    ]
    known = [moment for moment in newest if moment is not None]
    return max(known) if known else None


def _strip(column: Any, filters: Filters, tolerance_deg: float) -> Any:
    """The condition "on the chosen dec strip" for a dec column (true when none chosen)."""
    if filters.dec is None:
        return true()
    return func.abs(column - filters.dec) <= tolerance_deg


def status(
    conn: Connection, filters: Filters, span: Span, tolerance_deg: float
) -> list[dict[str, Any]]:
    """The ``mosaic_status`` rows of the groups whose window overlaps the span (and on the
    strip, in the phase, when chosen), earliest window first: the fields of ``status``."""
    conditions = ["window_start < :end", "window_end > :start"]
    # Typed, so SQLite compares its stored spelling of a time with the same spelling.
    params: list[Any] = [
        bindparam("start", span.start, type_=UTCDateTime()),
        bindparam("end", span.end, type_=UTCDateTime()),
    ]
    if filters.dec is not None:
        conditions.append("abs(dec_deg - :dec) <= :tolerance")
        params += [bindparam("dec", filters.dec), bindparam("tolerance", tolerance_deg)]
    if filters.phase is not None:
        conditions.append("phase = :phase")
        params.append(bindparam("phase", filters.phase))
    sql = text(
        f"SELECT {', '.join(STATUS_COLUMNS)} FROM mosaic_status "
        f"WHERE {' AND '.join(conditions)} ORDER BY window_start, group_id"
    ).bindparams(*params)
    typed = sql.columns(window_start=UTCDateTime(), window_end=UTCDateTime())
    return [dict(row._mapping) for row in conn.execute(typed)]


def phase_counts(
    conn: Connection, filters: Filters, span: Span, tolerance_deg: float
) -> dict[str, int]:
    """How many groups whose window overlaps the span are in each phase (on the strip)."""
    rows = conn.execute(
        select(MosaicGroup.phase, func.count())
        .where(
            MosaicGroup.window_start < span.end,
            MosaicGroup.window_end > span.start,
            _strip(MosaicGroup.dec_deg, filters, tolerance_deg),
        )
        .group_by(MosaicGroup.phase)
    ).all()
    counts = dict(rows)
    return {str(phase): counts[phase] for phase in PHASE_ORDER if counts.get(phase)}


def _observation_state() -> Any:
    """SQL: an observation's furthest step: ``problem``, ``imaged``, ``calibrated``,
    ``converted``, ``present`` or ``arriving``."""
    return case(
        (Observation.problem.is_not(None), "problem"),
        (Image.id.is_not(None), "imaged"),
        (CalibratedMS.id.is_not(None), "calibrated"),
        (MeasurementSet.id.is_not(None), "converted"),
        (Observation.ready, "present"),
        else_="arriving",
    )


def _observations(conn: Connection, condition: Any) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(
            Observation.id,
            Observation.key,
            Observation.start_time,
            Observation.end_time,
            Observation.dec_deg,
            Observation.n_subbands,
            Observation.problem,
            _observation_state().label("state"),
        )
        .outerjoin(MeasurementSet, MeasurementSet.observation_id == Observation.id)
        .outerjoin(CalibratedMS, CalibratedMS.observation_id == Observation.id)
        .outerjoin(Image, Image.observation_id == Observation.id)
        .where(condition)
        .order_by(Observation.start_time)
    )
    return [dict(row._mapping) for row in rows]


def timeline(
    conn: Connection, filters: Filters, span: Span, tolerance_deg: float
) -> dict[str, Any]:
    """The data timeline of the span: per dec strip, its observations (each with its
    furthest step), its mosaic windows (each with its phase) and the gaps between
    observations longer than one observation."""
    observations = _observations(
        conn,
        and_(
            Observation.start_time < span.end,
            Observation.end_time > span.start,
            _strip(Observation.dec_deg, filters, tolerance_deg),
        ),
    )
    windows = [
        dict(row._mapping)
        for row in conn.execute(
            select(
                MosaicGroup.id.label("group_id"),
                MosaicGroup.window_start,
                MosaicGroup.window_end,
                MosaicGroup.dec_deg,
                MosaicGroup.phase,
            )
            .where(
                MosaicGroup.window_start < span.end,
                MosaicGroup.window_end > span.start,
                _strip(MosaicGroup.dec_deg, filters, tolerance_deg),
                *([MosaicGroup.phase == filters.phase] if filters.phase else []),
            )
            .order_by(MosaicGroup.window_start)
        )
    ]
    decs = [o["dec_deg"] for o in observations] + [
        w["dec_deg"] for w in windows if w["dec_deg"] is not None
    ]
    by_strip = []
    for dec in _strips(decs, tolerance_deg):
        near = [o for o in observations if abs(o["dec_deg"] - dec) <= tolerance_deg]
        by_strip.append(
            {
                "dec_deg": dec,
                "observations": near,
                "windows": [
                    w
                    for w in windows
                    if w["dec_deg"] is not None and abs(w["dec_deg"] - dec) <= tolerance_deg
                ],
                "gaps": _gaps(near),
            }
        )
    unplaced = [w for w in windows if w["dec_deg"] is None]
    return {"start": span.start, "end": span.end, "strips": by_strip, "unplaced": unplaced}


def strips(conn: Connection, span: Span, tolerance_deg: float) -> list[float]:
    """The dec strips observed in the span (for choosing one)."""
    decs = conn.execute(
        select(Observation.dec_deg)
        .where(Observation.start_time < span.end, Observation.end_time > span.start)
        .distinct()
    ).scalars()
    return _strips(list(decs), tolerance_deg)


def _strips(decs: list[float], tolerance_deg: float) -> list[float]:
    """The dec strips among ``decs``: each the first dec of a run of decs, in increasing
    order, that lie within ``tolerance_deg`` of it."""
    strips: list[float] = []
    for dec in sorted(decs):
        if not strips or dec - strips[-1] > tolerance_deg:
            strips.append(dec)
    return [round(dec, 2) for dec in strips]


def _gaps(observations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where the data stop for longer than one observation between two observations."""
    gaps = []
    for before, after in pairwise(observations):
        length = after["start_time"] - before["end_time"]
        if length > before["end_time"] - before["start_time"]:
            gaps.append({"start": before["end_time"], "end": after["start_time"]})
    return gaps


def group(
    conn: Connection, group_id: int, products_root: Path, work_root: Path
) -> dict[str, Any] | None:
    """Everything the mosaic page shows of one group: its status row, members (each with
    its furthest step), quality assessments (each with ``figure_url``, the link to its QA
    figure, None when there is none to show), published products and their files, events.
    None when there is no such group."""
    rows = conn.execute(
        text(f"SELECT {', '.join(STATUS_COLUMNS)} FROM mosaic_status WHERE group_id = :g")
        .bindparams(g=group_id)
        .columns(window_start=UTCDateTime(), window_end=UTCDateTime())
    ).all()
    if not rows:
        return None
    member_ids = select(MosaicGroupMember.observation_id).where(
        MosaicGroupMember.group_id == group_id
    )
    roles = dict(
        conn.execute(
            select(MosaicGroupMember.observation_id, MosaicGroupMember.role).where(
                MosaicGroupMember.group_id == group_id
            )
        ).all()
    )
    members = [
        {**member, "role": roles.get(member["id"])}
        for member in _observations(conn, Observation.id.in_(member_ids))
    ]
    return {
        "status": dict(rows[0]._mapping),
        "members": members,
        "quality": [
            {**report, "figure_url": _figure_url(report, products_root, work_root)}
            for report in quality_reports(conn, group_id)
        ],
        "products": products(conn, group_id, products_root),
        "events": event_rows(conn, group_id=group_id, limit=100),
    }


def _figure_url(report: dict[str, Any], products_root: Path, work_root: Path) -> str | None:
    """The link to a quality report's figure: published, or staged under work/ while the
    mosaic is held; None when the file is not there or lies outside both roots."""
    path = Path(report["figure_path"])
    if not path.is_file() or not (inside(path, products_root) or inside(path, work_root)):
        return None
    return f"/groups/{report['group_id']}/qa/{report['generation']}.png"


def qa_figure(conn: Connection, group_id: int, generation: int, roots: list[Path]) -> Path | None:
    """The QA figure of one group generation's mosaic, when it is a file under one of
    ``roots`` (after following symlinks); None otherwise."""
    for report in quality_reports(conn, group_id):
        if report["generation"] == generation:
            path = Path(report["figure_path"])
            if path.is_file() and any(inside(path, root) for root in roots):
                return path
    return None


def products(conn: Connection, group_id: int, products_root: Path) -> list[dict[str, Any]]:
    """The group's published products, newest generation first, each with its files: the
    mosaic and its companions, each with the link the site serves it under (None for a
    file outside the products root, which is never served)."""
    found = []
    for row in conn.execute(
        select(
            RegistryEntry.id,
            RegistryEntry.generation,
            RegistryEntry.status,
            RegistryEntry.published_path,
            RegistryEntry.published_at,
            RegistryEntry.companions,
            RegistryEntry.superseded_by,
            RegistryEntry.problem,
        )
        .where(RegistryEntry.group_id == group_id, RegistryEntry.published_path.is_not(None))
        .order_by(RegistryEntry.generation.desc(), RegistryEntry.id.desc())
    ):
        paths = [row.published_path, *sorted(json.loads(row.companions or "{}"))]
        found.append(
            {
                "product_id": row.id,
                "generation": row.generation,
                "status": row.status,
                "published_path": row.published_path,
                "published_at": row.published_at,
                "superseded_by": row.superseded_by,
                "problem": row.problem,
                "files": [
                    {"path": path, "url": file_url(Path(path), products_root)} for path in paths
                ],
            }
        )
    return found


def file_url(path: Path, products_root: Path) -> str | None:
    """The site's link to a published file, or None when it lies outside the products
    root (after following symlinks)."""
    if not inside(path, products_root):
        return None
    relative = Path(path).resolve().relative_to(products_root.resolve())
    return f"/files/{relative.as_posix()}"


def failures(conn: Connection, now: datetime) -> list[dict[str, Any]]:
    """Every failed action, stuck action (running past its lease) and failed or held
    group, newest first, each with its reason, attempts and the command that acts on it."""
    items: list[dict[str, Any]] = []
    stuck = and_(Action.state == "running", Action.lease_expires_at < now)
    for row in conn.execute(
        select(
            Action.id,
            Action.kind,
            Action.target,
            Action.group_id,
            Action.state,
            Action.attempts,
            Action.error_kind,
            Action.last_error,
            Action.lease_owner,
            func.coalesce(Action.finished_at, Action.lease_expires_at).label("at"),
        ).where(or_(Action.state == "failed", stuck))
    ):
        group_id = row.group_id if row.group_id is not None else _group_of(conn, row.target)
        items.append(
            {
                "what": "action",
                "id": row.id,
                "kind": row.kind,
                "target": row.target,
                "group_id": group_id,
                "state": "stuck" if row.state == "running" else row.state,
                "attempts": row.attempts,
                "error_kind": row.error_kind,
                "reason": row.last_error
                or (f"lease held by {row.lease_owner} ran out" if row.state == "running" else ""),
                "at": row.at,
                "command": None if group_id is None else f"reconciler retry {group_id}",
            }
        )
    for row in conn.execute(
        text(
            "SELECT group_id, phase, reason, last_error, attempts, status_updated_at "
            "FROM mosaic_status WHERE phase IN ('failed', 'held')"
        ).columns(status_updated_at=UTCDateTime())
    ):
        command = (
            f"reconciler publish --accept {row.group_id}"
            if row.phase == Phase.HELD
            else f"reconciler retry {row.group_id}"
        )
        items.append(
            {
                "what": "group",
                "id": row.group_id,
                "kind": "mosaic",
                "target": f"group:{row.group_id}",
                "group_id": row.group_id,
                "state": row.phase,
                "attempts": row.attempts,
                "error_kind": None,
                "reason": row.reason or row.last_error or "",
                "at": row.status_updated_at,
                "command": command,
            }
        )
    oldest = datetime.min.replace(tzinfo=UTC)
    return sorted(items, key=lambda item: item["at"] or oldest, reverse=True)


def _group_of(conn: Connection, target: str) -> int | None:
    """A group holding the observation of an action target (``obs:KEY``), if any."""
    if not target.startswith("obs:"):
        return None
    return conn.execute(
        select(MosaicGroupMember.group_id)
        .join(Observation, Observation.id == MosaicGroupMember.observation_id)
        .where(Observation.key == target.removeprefix("obs:"))
        .order_by(MosaicGroupMember.group_id)
        .limit(1)
    ).scalar()


def events(conn: Connection, group_id: int | None, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` events (of one group if given), newest first."""
    return list(reversed(event_rows(conn, group_id=group_id, limit=limit)))
