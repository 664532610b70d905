"""Read-only: build the observed state of every active group from the database and files.

One snapshot transaction, a fixed number of queries whatever the history holds: only the
groups that are not finished are read, with their members' artifacts, their actions and
their calibration. Artifacts are trusted only when their files are still there
(level-triggered: check the product, not a flag). A group whose generation a reprocessing
asked for trusts only the products made under the current settings
(:mod:`reconciler.fingerprint`); every other group takes what exists, whatever the settings
were when it was made, so a change of configuration alone redoes nothing.
"""

from __future__ import annotations

import bisect
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    String,
    and_,
    any_,
    bindparam,
    cast,
    func,
    literal,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import ColumnElement

from reconciler.config import Settings
from reconciler.db.artifacts import solution_tables, solutions_valid_during
from reconciler.db.calibrators import all_calibrators
from reconciler.db.engine import reading
from reconciler.db.models import (
    OBSERVED_GROUPS,
    Action,
    CalibratedMS,
    Image,
    MeasurementSet,
    MosaicGroup,
    MosaicGroupMember,
    Observation,
    QualityReport,
    RegistryEntry,
    SourceCatalogue,
)
from reconciler.db.types import UTCDateTime
from reconciler.eligibility import (
    TransitSearch,
    serving_solution,
    solve_target,
    transits_to_solve_on,
)
from reconciler.engine.registry import ActionRegistry
from reconciler.fingerprint import Fingerprints, fingerprints
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
    Quality,
    QualityVerdict,
)
from reconciler.naming import group_target, observation_target
from reconciler.sky import TransitFinder, transit_finder

_KINDS = {str(kind): kind for kind in ActionKind}
_STATES = {str(state): state for state in ActionState}


@dataclass(frozen=True)
class ObservedGroup:
    """One group as observed, with the bookkeeping the pass writes back."""

    observed: GroupObserved
    stored_phase: str
    stored_reason: str | None
    stored_next_action: str | None
    stored_dec_deg: float | None
    stored_parked: bool
    member_ids: tuple[int, ...]
    recorded_member_ids: frozenset[int]


@dataclass(frozen=True)
class Snapshot:
    """The observed world at ``at``: active groups and the action keys already queued.
    ``turns_at``: the first moment the clock alone changes what was observed (an arriving
    observation's grace time ends); None when only a change of the data can."""

    at: datetime
    groups: tuple[ObservedGroup, ...]
    known_actions: frozenset[ActionKey]
    turns_at: datetime | None = None

    @property
    def observed(self) -> tuple[GroupObserved, ...]:
        """What the pure core takes."""
        return tuple(g.observed for g in self.groups)


class _Confined:
    """The registry's product checks, never touching a path outside the roots: such a row
    is taken as present, and the action that would read it fails, naming the row.

    One observe checks every member's products (about a thousand paths with 50 open
    windows), so the roots are resolved once, each directory once (products share a few
    per day), and each path's last component by one ``lstat`` (a symbolic link is resolved
    in full), and they are compared as strings: resolving every path in full took most of
    an idle pass.
    """

    def __init__(self, registry: ActionRegistry, roots: tuple[Path, ...]) -> None:
        self._registry = registry
        self._roots = tuple(os.path.realpath(root) for root in roots)
        self._directories: dict[str, str] = {}

    def _resolved(self, path: str) -> str:
        head, name = os.path.split(path)
        if name in ("", ".", "..") or os.path.islink(path):
            return os.path.realpath(path)
        directory = self._directories.get(head)
        if directory is None:
            directory = self._directories[head] = os.path.realpath(head)
        return os.path.join(directory, name)

    def _under_roots(self, path: str) -> bool:
        resolved = self._resolved(path)
        return any(resolved == root or resolved.startswith(root + os.sep) for root in self._roots)

    def product_exists(self, kind: ActionKind, path: str | None) -> bool:
        """As :meth:`ActionRegistry.product_exists`, for paths under the roots."""
        if path is None:
            return self._registry.product_exists(kind, path)
        paths = solution_tables(path) if kind is ActionKind.SOLVE else [path]
        if not all(self._under_roots(p) for p in paths):
            return True
        return self._registry.product_exists(kind, path)


@dataclass(frozen=True)
class _Member:
    id: int
    state: ObservationState
    #: The settings fingerprints its MS, calibrated MS and tile were made under.
    made_under: tuple[str | None, str | None, str | None] = (None, None, None)


def _as_reprocessing_sees(member: _Member, current: Fingerprints) -> _Member:
    """The member as a reprocessing sees it: a product made under other (or unknown)
    settings counts as missing, except an MS its raw data can no longer make again."""
    ms, calibrated, image = member.made_under
    state = member.state
    seen = replace(
        state,
        converted=state.converted and (ms == current.convert or not state.ready),
        calibrated=state.calibrated and calibrated == current.calibrate,
        imaged=state.imaged and image == current.image,
    )
    return replace(member, state=seen)


def observe(
    engine: Engine,
    registry: ActionRegistry,
    settings: Settings,
    *,
    now: datetime,
    group_ids: Iterable[int] | None = None,
    transits: TransitFinder | None = None,
) -> Snapshot:
    """Read the observed state of the groups a pass works on (active, not parked), or of
    ``group_ids`` whatever their phase."""
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
    products = _Confined(registry, (settings.paths.work, settings.paths.products))
    stmt = select(MosaicGroup).order_by(MosaicGroup.window_start, MosaicGroup.id)
    if group_ids is None:
        stmt = stmt.where(OBSERVED_GROUPS)
    else:
        stmt = stmt.where(MosaicGroup.id.in_(list(group_ids)))
    groups = list(conn.execute(stmt))
    if not groups:
        return Snapshot(at=now, groups=(), known_actions=frozenset())
    ids = [row.id for row in groups]
    tolerance = settings.calibration.dec_strip_tolerance_deg
    grace = timedelta(minutes=settings.discovery.grace_minutes)
    members, arriving_since = _members(
        conn, groups, products, tolerance, {r.id: r.dec_deg for r in groups}, now - grace
    )
    current = fingerprints(settings)
    reprocessing = {row.id for row in groups if row.reprocessing_id is not None}
    for group_id in reprocessing & members.keys():
        members[group_id] = [_as_reprocessing_sees(m, current) for m in members[group_id]]
    recorded = _recorded_members(conn, ids)
    targets = [group_target(i) for i in ids] + [
        observation_target(m.state.key) for ms in members.values() for m in ms
    ]
    calibration = _calibration(
        conn,
        groups,
        members,
        settings,
        products,
        transits or transit_finder(settings.site),
        current=current,
        reprocessing=reprocessing,
    )
    targets += [observation_target(c.solve_target) for c in calibration.values() if c.solve_target]
    actions = _actions(conn, targets)
    registry_rows = _mosaics(conn, ids, products)
    catalogued = _catalogued(conn, ids, products)
    assessed = _assessed(conn, ids, products)
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
            catalogued=(row.id, row.generation) in catalogued,
            quality=assessed.get((row.id, row.generation)),
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
                stored_parked=row.parked,
                member_ids=tuple(m.id for m in group_members),
                recorded_member_ids=recorded.get(row.id, frozenset()),
            )
        )
    return Snapshot(
        at=now,
        groups=tuple(observed),
        known_actions=frozenset(actions),
        turns_at=None if arriving_since is None else arriving_since + grace,
    )


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
        reprocessing_id=row.reprocessing_id,
    )


def _members(
    conn: Connection,
    groups: list[Row[Any]],
    registry: _Confined,
    tolerance_deg: float,
    group_dec: dict[int, float | None],
    seen_before: datetime,
) -> tuple[dict[int, list[_Member]], datetime | None]:
    """Observations starting inside each window, at the group's dec strip, and when the
    earliest of them still arriving was first seen.

    A group without a dec yet takes the dec of its earliest observation; the pass then
    records it, so a later change of pointing inside the window does not move the group.
    The observations of all windows are read once (overlapping windows share them) and
    handed to the windows here; each observation's products are checked once. One not
    ready that was first seen after ``seen_before`` is still arriving.
    """
    windows = [g for g in groups if g.window_start is not None and g.window_end is not None]
    if not windows:
        return {}, None
    stmt = (
        select(
            Observation.id,
            Observation.key,
            Observation.start_time,
            Observation.end_time,
            Observation.dec_deg,
            Observation.ready,
            Observation.problem,
            Observation.first_seen_at,
            MeasurementSet.path,
            CalibratedMS.path,
            Image.path,
            MeasurementSet.fingerprint,
            CalibratedMS.fingerprint,
            Image.fingerprint,
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
    made_under: list[tuple[str | None, str | None, str | None]] = []
    arriving_since: datetime | None = None
    # Rows unpacked by position: attribute access per column costs more than the query.
    for (
        id_,
        key,
        start,
        end,
        dec_deg,
        ready,
        problem,
        seen,
        ms,
        calibrated,
        image,
        ms_made_under,
        calibrated_made_under,
        image_made_under,
    ) in conn.execute(stmt).all():
        # Discovery waits its grace time for missing files after it first saw any.
        arriving = not ready and seen > seen_before
        if arriving and (arriving_since is None or seen < arriving_since):
            arriving_since = seen
        ids.append(id_)
        made_under.append((ms_made_under, calibrated_made_under, image_made_under))
        states.append(
            ObservationState(
                key=key,
                start=start,
                end=end,
                dec_deg=dec_deg,
                ready=ready,
                problem=problem,
                arriving=arriving,
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
            _Member(ids[i], states[i], made_under[i])
            for i in range(first, last)
            if abs(states[i].dec_deg - dec) <= tolerance_deg
        ]
        if inside:
            found[group.id] = inside
    return found, arriving_since


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
    conn: Connection, group_ids: list[int], registry: _Confined
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


def _catalogued(
    conn: Connection, group_ids: list[int], registry: _Confined
) -> set[tuple[int, int]]:
    """The (group, generation)s whose staged mosaic has its source catalogue."""
    rows = conn.execute(
        select(SourceCatalogue.group_id, SourceCatalogue.generation, SourceCatalogue.path).where(
            SourceCatalogue.group_id.in_(group_ids)
        )
    ).all()
    return {
        (group_id, generation)
        for group_id, generation, path in rows
        if registry.product_exists(ActionKind.CATALOGUE, path)
    }


def _assessed(
    conn: Connection, group_ids: list[int], registry: _Confined
) -> dict[tuple[int, int], QualityVerdict]:
    """(group, generation) → the verdict on its staged mosaic, where its QA figure is there."""
    rows = conn.execute(
        select(
            QualityReport.group_id,
            QualityReport.generation,
            QualityReport.quality,
            QualityReport.summary,
            QualityReport.accepted_at,
            QualityReport.figure_path,
        ).where(QualityReport.group_id.in_(group_ids))
    ).all()
    return {
        (row.group_id, row.generation): QualityVerdict(
            Quality(row.quality), row.summary, accepted=row.accepted_at is not None
        )
        for row in rows
        if registry.product_exists(ActionKind.ASSESS, row.figure_path)
    }


def _calibration(
    conn: Connection,
    groups: list[Row[Any]],
    members: dict[int, list[_Member]],
    settings: Settings,
    registry: _Confined,
    transits: TransitFinder,
    *,
    current: Fingerprints,
    reprocessing: set[int],
) -> dict[int, CalibrationState]:
    """For each group with members: solved (a solution serves every member still to be
    calibrated), or the observation to solve on, or why there is none. A group a
    reprocessing asked for (``reprocessing``) takes only solutions, and calibrator MSs,
    made under the ``current`` settings.

    The rules are :mod:`reconciler.eligibility`'s, the same the solve and apply steps use.
    """
    tolerance = settings.calibration.dec_strip_tolerance_deg
    validity = timedelta(hours=settings.calibration.validity_hours)
    with_members = [g for g in groups if members.get(g.id)]
    if not with_members:
        return {}
    earliest = min(g.window_start for g in with_members)
    latest = max(g.window_end for g in with_members)
    solutions = [
        s
        for s in solutions_valid_during(conn, earliest, latest)
        if registry.product_exists(ActionKind.SOLVE, s.tables)
    ]
    made_now = [s for s in solutions if s.fingerprint == current.calibrate]
    calibrators = all_calibrators(conn, active_only=True)
    states = {}
    for g in with_members:
        reprocessed = g.id in reprocessing
        serving = made_now if reprocessed else solutions
        group_members = [m.state for m in members[g.id]]
        unserved = [
            m
            for m in group_members
            if not m.calibrated
            and serving_solution(
                serving, dec_deg=m.dec_deg, start=m.start, end=m.end, tolerance_deg=tolerance
            )
            is None
        ]
        if not unserved:
            states[g.id] = CalibrationState(solved=True)
            continue
        search = transits_to_solve_on(
            calibrators,
            transits,
            dec_deg=group_members[0].dec_deg,
            start=unserved[0].start,
            end=unserved[-1].end,
            validity=validity,
        )
        candidates = _holding(conn, search)
        found = solve_target(search, candidates, calibrators, transits, validity)
        if isinstance(found, str):
            states[g.id] = CalibrationState(problem=found)
        else:
            converted = registry.product_exists(ActionKind.CONVERT, found.ms)
            if reprocessed:
                converted = converted and found.ms_fingerprint == current.convert
            states[g.id] = CalibrationState(
                solve_target=found.key, solve_target_converted=converted
            )
    return states


@dataclass(frozen=True)
class _Candidate:
    """An observation that may hold a calibrator transit, as eligibility sees it."""

    key: str
    start: datetime
    end: datetime
    dec_deg: float
    ready: bool
    ms: str | None
    ms_fingerprint: str | None


def _holding(conn: Connection, search: TransitSearch) -> list[_Candidate]:
    """The observations holding any of the search's transits, pointed where its calibrator
    is in the beam."""
    calibrator = search.calibrator
    if calibrator is None or not search.moments:
        return []
    holds = or_(
        *(
            and_(Observation.start_time <= moment, Observation.end_time > moment)
            for moment in search.moments
        )
    )
    rows = conn.execute(
        select(
            Observation.key,
            Observation.start_time,
            Observation.end_time,
            Observation.dec_deg,
            Observation.ready,
            MeasurementSet.path,
            MeasurementSet.fingerprint,
        )
        .outerjoin(MeasurementSet, MeasurementSet.observation_id == Observation.id)
        .where(
            holds,
            func.abs(Observation.dec_deg - calibrator.dec_deg) <= calibrator.dec_tolerance_deg,
        )
        .order_by(Observation.start_time, Observation.key)
    )
    return [_Candidate(*row) for row in rows]
