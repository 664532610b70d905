"""The database side of discovery: ``raw_files`` rows and the observations grouped from them.

Regrouping is local: only the files whose data starts link (within the grouping tolerance)
to a changed file or to an observation under review are read, clustered and judged
(:mod:`reconciler.observations`), and only the differences from the stored rows are
written. An observation is judged again only when one of its files changed, vanished or
came back, a file arrived beside it, or its ``judge_again_at`` (the end of the grace period
it waits on) has come, so the cost of a pass follows what changed, not the length of the
history nor the number of observations left incomplete.

``raw_files.observation_id`` names the observation a file is *used in*: a file excluded
from its observation is left unlinked, so whatever converts an observation's linked files
gets a consistent set. An observation no file is used in any more is deleted, or retired
when a product or a mosaic group still refers to it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, TypeVar

from sqlalchemy import Connection, delete, exists, or_, select, update

from reconciler.db.engine import dialect_insert
from reconciler.db.models import (
    CalibratedMS,
    CalibrationSolution,
    DiscoveryMark,
    Image,
    IncomingDirectory,
    MeasurementSet,
    MosaicGroupMember,
    Observation,
    RawFile,
)
from reconciler.observations import (
    Assessment,
    DiscoveryPolicy,
    RawMember,
    assess,
    cluster_by_start,
)

_T = TypeVar("_T")

#: Bound on the size of one statement (time intervals OR'd, ids in an IN list, rows inserted).
_CHUNK = 500

#: Tables whose rows make an observation worth keeping even when no raw file is used in it.
_DEPENDENTS = (MeasurementSet, CalibrationSolution, CalibratedMS, Image, MosaicGroupMember)

RETIRED_PROBLEM = "no raw files: they were regrouped under an earlier data start"


@dataclass(frozen=True)
class KnownFile:
    """What ``raw_files`` holds about a file: enough to tell whether it changed on disk."""

    size: int
    mtime: float
    observation_id: int | None
    vanished: bool = False


def files_in(conn: Connection, directories: Iterable[str]) -> dict[str, KnownFile]:
    """The recorded files directly inside ``directories``, by path."""
    found: dict[str, KnownFile] = {}
    for chunk in _chunks(directories, _CHUNK):
        found |= _known(conn, RawFile.directory.in_(chunk))
    return found


def files_by_path(conn: Connection, paths: Iterable[str]) -> dict[str, KnownFile]:
    """The recorded files among ``paths``, by path."""
    found: dict[str, KnownFile] = {}
    for chunk in _chunks(paths, _CHUNK):
        found |= _known(conn, RawFile.path.in_(chunk))
    return found


def recent_files(conn: Connection, since_mtime: float) -> dict[str, KnownFile]:
    """The recorded files whose mtime is ``since_mtime`` (seconds since the epoch) or later."""
    return _known(conn, RawFile.mtime >= since_mtime)


def file_directories(conn: Connection) -> list[str]:
    """Every directory some recorded file is in."""
    column = RawFile.directory
    return list(conn.execute(select(column).where(column.is_not(None)).distinct()).scalars())


def _known(conn: Connection, where: Any) -> dict[str, KnownFile]:
    stmt = select(
        RawFile.path,
        RawFile.size_bytes,
        RawFile.mtime,
        RawFile.observation_id,
        RawFile.vanished_at,
    )
    return {
        row.path: KnownFile(
            row.size_bytes, row.mtime, row.observation_id, row.vanished_at is not None
        )
        for row in conn.execute(stmt.where(where))
    }


def mark_vanished(conn: Connection, paths: Iterable[str], now: datetime) -> None:
    """Record that the files at ``paths`` were found gone ``now`` (once: a file already
    marked keeps its time)."""
    for chunk in _chunks(paths, _CHUNK):
        conn.execute(
            update(RawFile)
            .where(RawFile.path.in_(chunk), RawFile.vanished_at.is_(None))
            .values(vanished_at=now)
        )


@dataclass(frozen=True)
class DirectoryListing:
    """A directory as listed: its mtime before the listing, None when too fresh to trust."""

    path: str
    mtime: float | None

    def changed(self, now: datetime) -> datetime:
        """When the directory's entries last changed, as far as ``now`` can tell."""
        if self.mtime is None:
            return now
        return min(now, datetime.fromtimestamp(self.mtime, UTC))


def recorded_directories(
    conn: Connection,
    root: str,
    *,
    everything: bool = False,
    changed_since: datetime | None = None,
    paths: Iterable[str] = (),
) -> dict[str, float | None]:
    """The mtime at the last trusted listing (None: not trusted yet) of the recorded
    directories at or under ``root``: all of them (``everything``), or those changed at
    ``changed_since`` or later and those among ``paths``."""
    stmt = select(IncomingDirectory.path, IncomingDirectory.mtime)
    if everything:
        below = IncomingDirectory.path.startswith(f"{root}/", autoescape=True)
        rows = conn.execute(stmt.where(or_(IncomingDirectory.path == root, below))).all()
    elif changed_since is not None:
        rows = conn.execute(stmt.where(IncomingDirectory.changed_at >= changed_since)).all()
    else:
        rows = []
    for chunk in _chunks(paths, _CHUNK):
        rows += conn.execute(stmt.where(IncomingDirectory.path.in_(chunk))).all()
    # SQLite's LIKE ignores case: the prefix is checked again exactly.
    prefix = f"{root}/"
    return {row.path: row.mtime for row in rows if row.path == root or row.path.startswith(prefix)}


def record_directories(
    conn: Connection, listings: Sequence[DirectoryListing], removed: Iterable[str], now: datetime
) -> None:
    """Record each listed directory's mtime; forget the removed ones.

    A directory changed when its mtime says (a directory first seen long after its last
    change is not recent), never later than ``now``; one whose mtime is not trusted yet
    changed ``now``.
    """
    insert = dialect_insert(conn, IncomingDirectory)
    for chunk in _chunks(listings, _CHUNK):
        stmt = insert.values(
            [
                {"path": row.path, "mtime": row.mtime, "changed_at": row.changed(now)}
                for row in chunk
            ]
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["path"],
            set_={"mtime": stmt.excluded.mtime, "changed_at": stmt.excluded.changed_at},
        )
        conn.execute(stmt)
    for chunk in _chunks(removed, _CHUNK):
        conn.execute(delete(IncomingDirectory).where(IncomingDirectory.path.in_(chunk)))


@dataclass(frozen=True)
class Mark:
    """When a root was last swept and resynchronised (None: never)."""

    swept_at: datetime | None
    resynced_at: datetime | None


def discovery_mark(conn: Connection, root: str) -> Mark | None:
    """The marks of ``root``; None if no pass discovered it yet."""
    row = conn.execute(
        select(DiscoveryMark.swept_at, DiscoveryMark.resynced_at).where(DiscoveryMark.root == root)
    ).first()
    return None if row is None else Mark(row.swept_at, row.resynced_at)


def mark_scanned(
    conn: Connection, root: str, *, now: datetime, swept: bool, resynced: bool
) -> None:
    """Record that ``root`` was swept (and resynchronised) ``now``."""
    values = {"swept_at": now} if swept else {}
    if resynced:
        values["resynced_at"] = now
    insert = dialect_insert(conn, DiscoveryMark)
    conn.execute(
        insert.values(root=root, **values).on_conflict_do_update(
            index_elements=["root"], set_=values
        )
    )


def previous_placement(
    conn: Connection, paths: Iterable[str]
) -> dict[str, tuple[datetime | None, int | None]]:
    """Data start and observation of re-read files before this pass, to regroup both.

    Paths without a row (new files) are absent from the result.
    """
    found: dict[str, tuple[datetime | None, int | None]] = {}
    for chunk in _chunks(paths, _CHUNK):
        stmt = select(RawFile.path, RawFile.data_start, RawFile.observation_id).where(
            RawFile.path.in_(chunk)
        )
        found |= {row.path: (row.data_start, row.observation_id) for row in conn.execute(stmt)}
    return found


def upsert_raw_files(
    conn: Connection, records: Mapping[str, dict[str, Any]], now: datetime
) -> None:
    """Insert or refresh the ``raw_files`` row of each record (its column values, by path).

    A new file is first seen ``now``; every written file is left unlinked from observations
    and on disk (a file that came back is no longer vanished), and its checksum is
    forgotten (it may be other bytes now).
    """
    insert = dialect_insert(conn, RawFile)
    for chunk in _chunks(records.values(), _CHUNK):
        stmt = insert.values([{**row, "seen_at": now} for row in chunk])
        # A re-read file keeps seen_at (the grace period counts from its first arrival)
        # and is unlinked until regrouping places it again.
        refreshed = {column: stmt.excluded[column] for column in chunk[0] if column != "path"}
        stmt = stmt.on_conflict_do_update(
            index_elements=["path"],
            set_={**refreshed, "observation_id": None, "vanished_at": None, "sha256": None},
        )
        conn.execute(stmt)


@dataclass
class ObservationChanges:
    """The writes that bring observations in line with their files; empty if none."""

    create: list[Assessment] = field(default_factory=list)
    update: list[tuple[int, Assessment]] = field(default_factory=list)
    link: list[tuple[str, list[int]]] = field(default_factory=list)
    unlink: list[int] = field(default_factory=list)
    retire: dict[int, str] = field(default_factory=dict)
    remove: dict[int, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """Whether the observations already match their files."""
        return not (
            self.create or self.update or self.link or self.unlink or self.retire or self.remove
        )


def observation_changes(
    conn: Connection,
    anchors: Sequence[datetime],
    former: Collection[int],
    *,
    find_missing: Callable[[Collection[str]], Collection[str]],
    now: datetime,
    policy: DiscoveryPolicy,
) -> ObservationChanges:
    """Regroup the files near ``anchors``, near every observation in ``former`` and near
    every observation whose ``judge_again_at`` has come, and list what must change. Reads
    only.

    ``find_missing`` returns those of the given paths that are no longer on disk.
    """
    # Two indexed lookups, not one OR: an OR (with an empty IN list, above all) makes
    # SQLite scan every observation.
    columns = select(Observation.id, Observation.start_time)
    rejudge = conn.execute(columns.where(Observation.judge_again_at <= now)).all()
    for chunk in _chunks(sorted(former), _CHUNK):
        rejudge += conn.execute(columns.where(Observation.id.in_(chunk))).all()
    members = _neighbourhood(
        conn, [*anchors, *(row.start_time for row in rejudge)], policy.group_tolerance
    )
    candidates = {*former, *(row.id for row in rejudge)}
    candidates |= {m.observation_id for m in members if m.observation_id is not None}
    missing = find_missing({m.path for m in members})
    clusters = cluster_by_start(members, policy.group_tolerance)
    broken = _unreadable_near(conn, clusters, policy.group_tolerance)
    verdicts = [
        assess(
            c,
            missing=missing,
            now=now,
            policy=policy,
            unreadable=[
                text
                for name_time, text in broken
                if abs(name_time - min(m.data_start for m in c)) <= policy.group_tolerance
            ],
        )
        for c in clusters
    ]
    stored = _stored(conn, [v.key for v in verdicts], candidates)
    by_key = {row["key"]: row for row in stored.values()}

    changes = ObservationChanges()
    for cluster, verdict in zip(clusters, verdicts, strict=True):
        row = by_key.get(verdict.key)
        if row is None:
            changes.create.append(verdict)
        elif _differs(row, verdict):
            changes.update.append((row["id"], verdict))
        relink = [
            m.id
            for m in cluster
            if m.id in verdict.used and (row is None or m.observation_id != row["id"])
        ]
        if relink:
            changes.link.append((verdict.key, relink))
        changes.unlink += [
            m.id for m in cluster if m.id not in verdict.used and m.observation_id is not None
        ]
    placed = {by_key[v.key]["id"] for v in verdicts if v.key in by_key}
    orphans = {obs_id for obs_id in candidates - placed if obs_id in stored}
    if orphans:
        referenced = _referenced(conn, orphans)
        for obs_id in orphans:
            row = stored[obs_id]
            if obs_id not in referenced:
                changes.remove[obs_id] = row["key"]
            elif (row["ready"], row["n_subbands"], row["problem"]) != (False, 0, RETIRED_PROBLEM):
                changes.retire[obs_id] = row["key"]
    return changes


def apply_observation_changes(
    conn: Connection, changes: ObservationChanges, now: datetime
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Write ``changes``; return the keys created, updated (or retired) and removed."""
    ids: dict[str, int] = {}
    insert = dialect_insert(conn, Observation)
    for verdict in changes.create:
        values = _values(verdict)
        # The unique key, not the read that found the key absent, is what prevents a
        # duplicate under concurrency.
        stmt = insert.values(key=verdict.key, updated_at=now, **values).on_conflict_do_update(
            index_elements=["key"], set_={**values, "updated_at": now}
        )
        ids[verdict.key] = conn.execute(stmt.returning(Observation.id)).scalar_one()
    for obs_id, verdict in changes.update:
        conn.execute(
            update(Observation)
            .where(Observation.id == obs_id)
            .values(updated_at=now, **_values(verdict))
        )
    for key, file_ids in changes.link:
        obs_id = (
            ids.get(key)
            or conn.execute(select(Observation.id).where(Observation.key == key)).scalar_one()
        )
        for chunk in _chunks(file_ids, _CHUNK):
            conn.execute(update(RawFile).where(RawFile.id.in_(chunk)).values(observation_id=obs_id))
    for chunk in _chunks(changes.unlink, _CHUNK):
        conn.execute(update(RawFile).where(RawFile.id.in_(chunk)).values(observation_id=None))
    if changes.retire:
        conn.execute(
            update(Observation)
            .where(Observation.id.in_(list(changes.retire)))
            .values(
                ready=False,
                n_subbands=0,
                problem=RETIRED_PROBLEM,
                judge_again_at=None,
                updated_at=now,
            )
        )
    if changes.remove:
        # Guarded by the files themselves: an observation a file is still used in stays.
        conn.execute(
            delete(Observation).where(
                Observation.id.in_(list(changes.remove)),
                ~exists().where(RawFile.observation_id == Observation.id),
            )
        )
    updated = {verdict.key for _, verdict in changes.update} | set(changes.retire.values())
    return (
        tuple(v.key for v in changes.create),
        tuple(sorted(updated)),
        tuple(sorted(changes.remove.values())),
    )


def _unreadable_near(
    conn: Connection, clusters: Sequence[Sequence[RawMember]], tolerance: timedelta
) -> list[tuple[datetime, str]]:
    """(name time, error naming the file) of unreadable files named near any cluster."""
    if not clusters:
        return []
    starts = [min(m.data_start for m in c) for c in clusters]
    rows = conn.execute(
        select(RawFile.path, RawFile.name_time, RawFile.error).where(
            RawFile.error.is_not(None),
            RawFile.name_time.between(min(starts) - tolerance, max(starts) + tolerance),
        )
    ).all()
    return [(row.name_time, row.error) for row in rows]


def _neighbourhood(
    conn: Connection, anchors: Iterable[datetime], tolerance: timedelta
) -> list[RawMember]:
    """Every readable file linked to an anchor time through starts within ``tolerance``.

    Grows outwards until closed, so a cluster is always regrouped whole, including one a
    new file bridges to its neighbour.
    """
    readable = select(
        RawFile.id,
        RawFile.path,
        RawFile.subband,
        RawFile.data_start,
        RawFile.data_end,
        RawFile.dec_deg,
        RawFile.n_channels,
        RawFile.seen_at,
        RawFile.observation_id,
    ).where(RawFile.error.is_(None), RawFile.data_start.is_not(None))
    found: dict[int, RawMember] = {}
    covered: list[tuple[datetime, datetime]] = []
    frontier = list(anchors)
    while frontier:
        wanted = _merge(
            (t - tolerance, t + tolerance) for t in frontier if not _inside(t, tolerance, covered)
        )
        covered = _merge([*covered, *wanted])
        frontier = []
        for chunk in _chunks(wanted, _CHUNK):
            near = or_(*(RawFile.data_start.between(low, high) for low, high in chunk))
            for row in conn.execute(readable.where(near)):
                if row.id not in found:
                    found[row.id] = RawMember(**row._mapping)
                    frontier.append(row.data_start)
    return list(found.values())


def _merge(intervals: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for low, high in sorted(intervals):
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(high, merged[-1][1]))
        else:
            merged.append((low, high))
    return merged


def _inside(t: datetime, tolerance: timedelta, covered: list[tuple[datetime, datetime]]) -> bool:
    """Whether ``t ± tolerance`` lies inside one of the sorted, disjoint ``covered``."""
    index = bisect.bisect_right(covered, (t, t)) - 1
    return any(
        low <= t - tolerance and t + tolerance <= high
        for low, high in covered[max(index, 0) : index + 2]
    )


def _stored(conn: Connection, keys: Sequence[str], ids: Collection[int]) -> dict[int, Any]:
    """Observation rows under ``keys`` or ``ids``, by id."""
    found: dict[int, Any] = {}
    for key_chunk in _chunks(keys, _CHUNK):
        stmt = select(Observation).where(Observation.key.in_(key_chunk))
        found |= {row["id"]: row for row in conn.execute(stmt).mappings()}
    for id_chunk in _chunks(set(ids) - set(found), _CHUNK):
        stmt = select(Observation).where(Observation.id.in_(id_chunk))
        found |= {row["id"]: row for row in conn.execute(stmt).mappings()}
    return found


def _referenced(conn: Connection, obs_ids: Collection[int]) -> set[int]:
    """Observations among ``obs_ids`` that a product or a mosaic group refers to."""
    referenced: set[int] = set()
    for table in _DEPENDENTS:
        column = table.__table__.c.observation_id
        referenced |= set(conn.execute(select(column).where(column.in_(list(obs_ids)))).scalars())
    return referenced


def _values(verdict: Assessment) -> dict[str, Any]:
    return {
        "start_time": verdict.start,
        "end_time": verdict.end,
        "dec_deg": verdict.dec_deg,
        "n_subbands": verdict.n_subbands,
        "ready": verdict.ready,
        "problem": verdict.problem,
        "first_seen_at": verdict.first_seen,
        "judge_again_at": verdict.judge_again_at,
    }


def _differs(stored: Mapping[str, Any], verdict: Assessment) -> bool:
    for column, value in _values(verdict).items():
        if isinstance(value, float):
            # Floats round-trip exactly on both backends; the slack is for summation order.
            if abs(stored[column] - value) > 1e-9:
                return True
        elif stored[column] != value:
            return True
    return False


def _chunks(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
