"""Read-only: build the observed state of every active group from the database and files.

One snapshot transaction, a fixed number of queries whatever the history holds: only the
groups that are not finished are read, with their members' artifacts, their actions and
their calibration. Artifacts are trusted only when their files are still there
(level-triggered: check the product, not a flag).
"""

from __future__ import annotations

import bisect
import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    String,
    any_,
    bindparam,
    cast,
    func,
    literal,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import ColumnElement

from reconciler.catalogue import Calibrator, choose_calibrator
from reconciler.config import Settings, SiteSettings
from reconciler.db.calibrators import all_calibrators
from reconciler.db.engine import reading
from reconciler.db.models import (
    Action,
    CalibratedMS,
    CalibrationSolution,
    Image,
    MeasurementSet,
    MosaicGroup,
    MosaicGroupMember,
    Observation,
    RegistryEntry,
)
from reconciler.db.types import UTCDateTime
from reconciler.model import (
    ActionKey,
    ActionKind,
    ActionState,
    ActionStatus,
    CalibrationState,
    DesiredGroup,
    GroupObserved,
    ObservationState,
    Origin,
)
from reconciler.naming import group_target, observation_target
from reconciler.steps.registry import ActionRegistry

#: Matches the predicate of ``ix_mosaic_groups_active`` literally, so PostgreSQL uses it.
ACTIVE_GROUPS = text("mosaic_groups.phase NOT IN ('published', 'cancelled', 'invalid')")

_KINDS = {str(kind): kind for kind in ActionKind}
_STATES = {str(state): state for state in ActionState}

TransitFinder = Callable[[float, float, datetime, datetime], Sequence[datetime]]


@dataclass(frozen=True)
class ObservedGroup:
    """One group as observed, with the bookkeeping the pass writes back."""

    observed: GroupObserved
    stored_phase: str
    stored_reason: str | None
    stored_next_action: str | None
    stored_dec_deg: float | None
    member_ids: tuple[int, ...]
    recorded_member_ids: frozenset[int]


@dataclass(frozen=True)
class Snapshot:
    """The observed world at ``at``: active groups and the action keys already queued."""

    at: datetime
    groups: tuple[ObservedGroup, ...]
    known_actions: frozenset[ActionKey]

    @property
    def observed(self) -> tuple[GroupObserved, ...]:
        """What the pure core takes."""
        return tuple(g.observed for g in self.groups)


@dataclass(frozen=True)
class _Member:
    id: int
    state: ObservationState


def observe(
    engine: Engine,
    registry: ActionRegistry,
    settings: Settings,
    *,
    now: datetime,
    group_ids: Iterable[int] | None = None,
    transits: TransitFinder | None = None,
) -> Snapshot:
    """Read the observed state of the active groups (or of ``group_ids``, final or not)."""
    with reading(engine) as conn:
        return observe_in(conn, registry, settings, now=now, group_ids=group_ids, transits=transits)


def observe_in(
    conn: Connection,
    registry: ActionRegistry,
    settings: Settings,
    *,
    now: datetime,
    group_ids: Iterable[int] | None = None,
    transits: TransitFinder | None = None,
) -> Snapshot:
    """:func:`observe` inside a transaction the caller holds."""
    stmt = select(MosaicGroup).order_by(MosaicGroup.window_start, MosaicGroup.id)
    if group_ids is None:
        stmt = stmt.where(ACTIVE_GROUPS)
    else:
        stmt = stmt.where(MosaicGroup.id.in_(list(group_ids)))
    groups = list(conn.execute(stmt))
    if not groups:
        return Snapshot(at=now, groups=(), known_actions=frozenset())
    ids = [row.id for row in groups]
    tolerance = settings.calibration.dec_strip_tolerance_deg
    members = _members(conn, groups, registry, tolerance, {r.id: r.dec_deg for r in groups})
    recorded = _recorded_members(conn, ids)
    targets = [group_target(i) for i in ids] + [
        observation_target(m.state.key) for ms in members.values() for m in ms
    ]
    calibration = _calibration(
        conn, groups, members, settings, registry, transits or transit_finder(settings.site)
    )
    targets += [observation_target(c.solve_target) for c in calibration.values() if c.solve_target]
    actions = _actions(conn, targets)
    registry_rows = _mosaics(conn, ids, registry)
    data_through = conn.execute(select(func.max(Observation.end_time))).scalar()

    observed = []
    for row in groups:
        group_members = members.get(row.id, [])
        mosaic_done, published = registry_rows.get((row.id, row.generation), (False, None))
        state = GroupObserved(
            group=_desired(row),
            members=tuple(m.state for m in group_members),
            calibration=calibration.get(row.id, CalibrationState()),
            data_through=data_through,
            mosaic_done=mosaic_done,
            published_path=published,
            actions=actions,
        )
        observed.append(
            ObservedGroup(
                observed=state,
                stored_phase=row.phase,
                stored_reason=row.status_reason,
                stored_next_action=row.next_action,
                stored_dec_deg=row.dec_deg,
                member_ids=tuple(m.id for m in group_members),
                recorded_member_ids=recorded.get(row.id, frozenset()),
            )
        )
    return Snapshot(at=now, groups=tuple(observed), known_actions=frozenset(actions))


def _desired(row: Row[Any]) -> DesiredGroup:
    return DesiredGroup(
        id=row.id,
        window_start=row.window_start,
        window_end=row.window_end,
        generation=row.generation,
        paused=row.paused,
        cancelled=row.cancelled,
        origin=Origin(row.origin),
        calibrator=row.calibrator_name,
    )


def _members(
    conn: Connection,
    groups: list[Row[Any]],
    registry: ActionRegistry,
    tolerance_deg: float,
    group_dec: dict[int, float | None],
) -> dict[int, list[_Member]]:
    """Observations starting inside each window, at the group's dec strip.

    A group without a dec yet takes the dec of its earliest observation; the pass then
    records it, so a later change of pointing inside the window does not move the group.
    The observations of all windows are read once (overlapping windows share them) and
    handed to the windows here; each observation's products are checked once.
    """
    windows = [g for g in groups if g.window_start is not None and g.window_end is not None]
    if not windows:
        return {}
    stmt = (
        select(
            Observation.id,
            Observation.key,
            Observation.start_time,
            Observation.end_time,
            Observation.dec_deg,
            Observation.ready,
            Observation.problem,
            MeasurementSet.path,
            CalibratedMS.path,
            Image.path,
        )
        .outerjoin(MeasurementSet, MeasurementSet.observation_id == Observation.id)
        .outerjoin(CalibratedMS, CalibratedMS.observation_id == Observation.id)
        .outerjoin(Image, Image.observation_id == Observation.id)
        .where(_starting_in(_merged_spans(windows)))
        .order_by(Observation.start_time, Observation.key)
    )
    exists = registry.product_exists
    ids: list[int] = []
    states: list[ObservationState] = []
    # Rows unpacked by position: attribute access per column costs more than the query.
    for id_, key, start, end, dec_deg, ready, problem, ms, calibrated, image in conn.execute(
        stmt
    ).all():
        ids.append(id_)
        states.append(
            ObservationState(
                key=key,
                start=start,
                end=end,
                dec_deg=dec_deg,
                ready=ready,
                problem=problem,
                converted=exists(ActionKind.CONVERT, ms),
                calibrated=exists(ActionKind.APPLY, calibrated),
                imaged=exists(ActionKind.IMAGE, image),
            )
        )
    starts = [state.start for state in states]
    found: dict[int, list[_Member]] = {}
    for group in windows:
        first = bisect.bisect_left(starts, group.window_start)
        last = bisect.bisect_left(starts, group.window_end)
        if first == last:
            continue
        dec = group_dec.get(group.id)
        if dec is None:
            dec = group_dec[group.id] = states[first].dec_deg
        inside = [
            _Member(ids[i], states[i])
            for i in range(first, last)
            if abs(states[i].dec_deg - dec) <= tolerance_deg
        ]
        if inside:
            found[group.id] = inside
    return found


def _merged_spans(windows: list[Row[Any]]) -> list[tuple[datetime, datetime]]:
    """The windows as few disjoint spans: consecutive tiling windows overlap."""
    spans: list[tuple[datetime, datetime]] = []
    for start, end in sorted((w.window_start, w.window_end) for w in windows):
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((start, end))
    return spans


def _starting_in(spans: list[tuple[datetime, datetime]]) -> ColumnElement[bool]:
    """Observations starting in any of the spans: one indexed range each.

    Written as text with typed parameters: building the expression trees every pass
    costs more than the query.
    """
    column = "observations.start_time"
    clauses = [f"({column} >= :s{i} AND {column} < :e{i})" for i in range(len(spans))]
    params = [bindparam(f"s{i}", s, type_=UTCDateTime()) for i, (s, _) in enumerate(spans)]
    params += [bindparam(f"e{i}", e, type_=UTCDateTime()) for i, (_, e) in enumerate(spans)]
    return text(f"({' OR '.join(clauses)})").bindparams(*params)


def _recorded_members(conn: Connection, group_ids: list[int]) -> dict[int, frozenset[int]]:
    stmt = select(MosaicGroupMember.group_id, MosaicGroupMember.observation_id).where(
        MosaicGroupMember.group_id.in_(group_ids), MosaicGroupMember.role == "member"
    )
    recorded: dict[int, set[int]] = defaultdict(set)
    for row in conn.execute(stmt).all():
        recorded[row.group_id].add(row.observation_id)
    return {k: frozenset(v) for k, v in recorded.items()}


def _actions(conn: Connection, targets: list[str]) -> dict[ActionKey, ActionStatus]:
    stmt = select(
        Action.kind,
        Action.target,
        Action.generation,
        Action.state,
        Action.attempts,
        Action.version,
        Action.not_before,
        Action.last_error,
    ).where(any_of(conn, Action.target, targets))
    statuses = {}
    for kind, target, generation, state, attempts, version, not_before, last_error in conn.execute(
        stmt
    ).all():
        key = ActionKey(_KINDS[kind], target, generation)
        statuses[key] = ActionStatus(
            key=key,
            state=_STATES[state],
            attempts=attempts,
            version=version,
            not_before=not_before,
            last_error=last_error,
        )
    return statuses


def any_of(conn: Connection, column: Any, values: Iterable[str]) -> ColumnElement[bool]:
    """``column IN (values)``; one array parameter on PostgreSQL instead of hundreds."""
    distinct = sorted(set(values))
    if conn.dialect.name == "postgresql":
        return column == any_(cast(literal(distinct), ARRAY(String)))
    return column.in_(distinct)


def _mosaics(
    conn: Connection, group_ids: list[int], registry: ActionRegistry
) -> dict[tuple[int, int], tuple[bool, str | None]]:
    """(group, generation) → (mosaic made, published path) from the product registry."""
    stmt = select(
        RegistryEntry.group_id,
        RegistryEntry.generation,
        RegistryEntry.status,
        RegistryEntry.stage_path,
        RegistryEntry.published_path,
    ).where(RegistryEntry.group_id.in_(group_ids), RegistryEntry.kind == "mosaic")
    found = {}
    for row in conn.execute(stmt).all():
        published = None
        if row.status == "published" and registry.product_exists(
            ActionKind.PUBLISH, row.published_path
        ):
            published = row.published_path
        made = published is not None or registry.product_exists(ActionKind.MOSAIC, row.stage_path)
        found[(row.group_id, row.generation)] = (made, published)
    return found


def _calibration(
    conn: Connection,
    groups: list[Row[Any]],
    members: dict[int, list[_Member]],
    settings: Settings,
    registry: ActionRegistry,
    transits: TransitFinder,
) -> dict[int, CalibrationState]:
    """For each group with members: a valid solution, the transit to solve on, or why not."""
    tolerance = settings.calibration.dec_strip_tolerance_deg
    validity = timedelta(hours=settings.calibration.validity_hours)
    with_members = [g for g in groups if members.get(g.id)]
    if not with_members:
        return {}
    earliest = min(g.window_start for g in with_members)
    latest = max(g.window_end for g in with_members)
    solutions = list(
        conn.execute(
            select(
                CalibrationSolution.dec_deg,
                CalibrationSolution.valid_from,
                CalibrationSolution.valid_until,
                CalibrationSolution.tables,
            ).where(
                CalibrationSolution.valid_until >= earliest,
                CalibrationSolution.valid_from <= latest,
            )
        )
    )
    solutions = [s for s in solutions if registry.product_exists(ActionKind.SOLVE, s.tables)]
    calibrators = all_calibrators(conn, active_only=True)
    states = {}
    for g in with_members:
        first = members[g.id][0].state
        start, end = first.start, members[g.id][-1].state.end
        dec = first.dec_deg
        if any(
            abs(s.dec_deg - dec) <= tolerance and s.valid_from <= start and s.valid_until >= end
            for s in solutions
        ):
            states[g.id] = CalibrationState(solved=True)
            continue
        states[g.id] = _solve_target(
            conn, registry, calibrators, dec, start, end, validity, transits
        )
    return states


def _solve_target(
    conn: Connection,
    registry: ActionRegistry,
    calibrators: list[Calibrator],
    dec: float,
    start: datetime,
    end: datetime,
    validity: timedelta,
    transits: TransitFinder,
) -> CalibrationState:
    """The observation holding the calibrator transit nearest the members, before or after."""
    calibrator = choose_calibrator(calibrators, dec)
    if calibrator is None:
        return CalibrationState(problem=f"no bandpass calibrator registered for dec {dec:.2f}")
    middle = start + (end - start) / 2
    moments = transits(calibrator.ra_deg, calibrator.dec_deg, end - validity, start + validity)
    for moment in sorted(moments, key=lambda t: abs(t - middle)):
        row = conn.execute(
            select(Observation.key, MeasurementSet.path)
            .outerjoin(MeasurementSet, MeasurementSet.observation_id == Observation.id)
            .where(
                Observation.start_time <= moment,
                Observation.end_time > moment,
                func.abs(Observation.dec_deg - dec) <= calibrator.dec_tolerance_deg,
                Observation.ready.is_(True),
            )
        ).first()
        if row is not None:
            return CalibrationState(
                solve_target=row.key,
                solve_target_converted=registry.product_exists(ActionKind.CONVERT, row.path),
            )
    hours = validity.total_seconds() / 3600
    return CalibrationState(
        problem=f"no observation holds a transit of {calibrator.name} within {hours:g} h"
    )


@functools.lru_cache(maxsize=4096)
def _site_transits(
    site: SiteSettings, ra_deg: float, dec_deg: float, start: datetime, end: datetime
) -> tuple[datetime, ...]:
    from reconciler.sky import Site, meridian_transits

    where = Site(site.latitude_deg, site.longitude_deg, site.height_m)
    return tuple(meridian_transits(ra_deg, dec_deg, start, end, site=where))


def transit_finder(site: SiteSettings) -> TransitFinder:
    """Meridian transits (apparent hour angle zero) at ``site``, cached across passes.

    The returned function takes ``(ra_deg, dec_deg, start, end)`` and returns the transits
    in ``[start, end]``; the search interval is rounded out to whole hours so that repeated
    passes hit the cache.
    """

    def find(ra_deg: float, dec_deg: float, start: datetime, end: datetime) -> list[datetime]:
        hour = timedelta(hours=1)
        lo = start.replace(minute=0, second=0, microsecond=0)
        hi = end.replace(minute=0, second=0, microsecond=0) + hour
        return [t for t in _site_transits(site, ra_deg, dec_deg, lo, hi) if start <= t <= end]

    return find
