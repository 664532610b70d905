"""Discover raw subband files under the incoming directory and group them into observations.

Discovery is incremental: each pass walks the directory once, compares every raw file's
size and mtime with its ``raw_files`` row, and reads headers only of files that are new or
changed. Files are grouped by the data's own start time (DESIGN §1: file names of one
observation differ by a few seconds, the data do not), so the result depends only on the
set of files present, never on the order in which they arrived.

Completeness is level-triggered: every pass re-judges the observations that are not ready
yet (and those that lost a file), so a grace period expires without new files arriving.

``raw_files.observation_id`` names the observation a file is *used in*: a file excluded
from its observation (other channel layout, other dec, duplicate subband) is left unlinked,
so whatever converts an observation's linked files gets a consistent set. Raw files are only
ever opened for reading.
"""

from __future__ import annotations

import bisect
import os
import re
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from statistics import fmean
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, delete, exists, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from reconciler.db.engine import reading, writing
from reconciler.db.models import (
    CalibratedMS,
    CalibrationSolution,
    Image,
    MeasurementSet,
    MosaicGroupMember,
    Observation,
    RawFile,
)
from reconciler.io.uvh5 import RawFileError, parse_raw_name, read_raw_header
from reconciler.naming import observation_key

_T = TypeVar("_T")

#: Names discovery looks at; anything else in the incoming tree is not a raw file.
_RAW_SUFFIX = re.compile(r"_sb(\d{2})\.hdf5$")

#: Bound on the size of one statement (time intervals OR'd, ids in an IN list, rows inserted).
_CHUNK = 500

#: Tables whose rows make an observation worth keeping even when no raw file is used in it.
_DEPENDENTS = (MeasurementSet, CalibrationSolution, CalibratedMS, Image, MosaicGroupMember)

RETIRED_PROBLEM = "no raw files: they were regrouped under an earlier data start"


@dataclass(frozen=True)
class DiscoveryPolicy:
    """How raw files become observations and when an observation is ready.

    ``grace`` is how long after its first file was seen an observation missing subbands
    waits for them; after that it is ready with at least ``min_subbands`` of
    ``expected_subbands``, or incomplete. Files whose data start times lie within
    ``group_tolerance`` of each other (transitively) form one observation; subbands of one
    observation must point within ``dec_tolerance_deg`` of each other.
    """

    grace: timedelta
    min_subbands: int = 16
    expected_subbands: int = 16
    group_tolerance: timedelta = timedelta(seconds=60)
    dec_tolerance_deg: float = 0.1

    def __post_init__(self) -> None:
        if not 1 <= self.min_subbands <= self.expected_subbands:
            raise ValueError("need 1 <= min_subbands <= expected_subbands")
        if self.grace < timedelta(0) or self.group_tolerance < timedelta(0):
            raise ValueError("grace and group_tolerance must not be negative")


@dataclass(frozen=True)
class DiscoveryReport:
    """What one discovery pass found and changed.

    ``errors`` maps each file read in this pass that cannot be used to the reason.
    ``observations_removed`` are keys no file is used in any more (their files were
    regrouped under an earlier data start) that nothing downstream referred to.
    ``incoming_missing`` says the incoming directory was not there, so nothing was judged.
    """

    new_files: tuple[Path, ...] = ()
    changed_files: tuple[Path, ...] = ()
    vanished_files: tuple[Path, ...] = ()
    errors: Mapping[Path, str] = field(default_factory=dict)
    observations_created: tuple[str, ...] = ()
    observations_updated: tuple[str, ...] = ()
    observations_removed: tuple[str, ...] = ()
    incoming_missing: bool = False

    @property
    def headers_read(self) -> int:
        """Number of raw file headers this pass read."""
        return len(self.new_files) + len(self.changed_files)


@dataclass(frozen=True)
class RawMember:
    """A readable raw file as grouping sees it (the columns of one ``raw_files`` row)."""

    id: int
    path: str
    subband: int
    data_start: datetime
    data_end: datetime
    dec_deg: float
    n_channels: int
    seen_at: datetime
    observation_id: int | None


@dataclass(frozen=True)
class Assessment:
    """The verdict on one observation, judged from its files; ``used`` are file ids."""

    key: str
    start: datetime
    end: datetime
    dec_deg: float
    n_subbands: int
    ready: bool
    problem: str | None
    first_seen: datetime
    used: frozenset[int]


def discover(
    engine: Engine, incoming: Path, *, now: datetime, policy: DiscoveryPolicy
) -> DiscoveryReport:
    """Record new and changed raw files under ``incoming`` and bring observations up to date.

    Parameters
    ----------
    engine
        Database holding ``raw_files`` and ``observations``.
    incoming
        Directory searched recursively for ``*_sbNN.hdf5`` files; never written to.
    now
        The pass's time (timezone-aware UTC): decides grace expiry and is recorded as the
        time new files were first seen.
    policy
        Grouping and completeness rules.

    Returns
    -------
    DiscoveryReport
        Files found, unusable files with their reasons, observations created/updated.

    Notes
    -----
    An unreadable, corrupt or truncated file is recorded with its error and skipped; it is
    read again once its size or mtime changes. A vanished file keeps its row and makes its
    observation not ready. A missing ``incoming`` directory changes nothing: an unmounted
    disk must not read as every raw file gone. A pass that finds nothing new reads no
    header, runs a handful of queries and writes only if a verdict changed (a grace period
    ran out, a file vanished).
    """
    root = incoming.absolute()
    if not root.is_dir():
        return DiscoveryReport(incoming_missing=True)
    on_disk = _scan(root)
    with reading(engine) as conn:
        known = _known_files(conn)
        new = sorted(path for path in on_disk if path not in known)
        changed = sorted(
            path
            for path, stat in on_disk.items()
            if path in known and (known[path].size, known[path].mtime) != (stat.size, stat.mtime)
        )
        vanished = sorted(path for path in known if path not in on_disk and _under(path, root))
        touched = {obs for path in vanished if (obs := known[path].observation_id) is not None}
        idle = not new and not changed
        if idle and _plan(conn, [], touched, on_disk, root, now, policy).empty:
            return DiscoveryReport(vanished_files=_paths(vanished))

    # Headers are read outside any transaction: it is the slow part and needs no lock.
    records = {path: _inspect(path, on_disk[path]) for path in (*new, *changed)}
    with writing(engine) as conn:
        previous = _previous_placement(conn, records)
        _upsert_files(conn, records, now)
        # An unreadable file anchors by its name, so its observation hears about it.
        anchors = [
            row["data_start"] or row["name_time"]
            for row in records.values()
            if row["data_start"] or row["name_time"]
        ]
        anchors += [start for start, _ in previous.values() if start is not None]
        former = touched | {obs for _, obs in previous.values() if obs is not None}
        plan = _plan(conn, anchors, former, on_disk, root, now, policy)
        created, updated, removed = _apply(conn, plan, now)
    return DiscoveryReport(
        new_files=_paths(new),
        changed_files=_paths(changed),
        vanished_files=_paths(vanished),
        errors={Path(path): row["error"] for path, row in records.items() if row["error"]},
        observations_created=created,
        observations_updated=updated,
        observations_removed=removed,
    )


def cluster_by_start(members: Iterable[RawMember], tolerance: timedelta) -> list[list[RawMember]]:
    """Split files into observations: single linkage on data start within ``tolerance``.

    The result depends only on the set of files: clusters come out in time order, each
    sorted by (data start, path).
    """
    ordered = sorted(members, key=lambda m: (m.data_start, m.path))
    clusters: list[list[RawMember]] = []
    for member in ordered:
        if clusters and member.data_start - clusters[-1][-1].data_start <= tolerance:
            clusters[-1].append(member)
        else:
            clusters.append([member])
    return clusters


def assess(
    members: Sequence[RawMember],
    *,
    missing: Collection[str],
    now: datetime,
    policy: DiscoveryPolicy,
    unreadable: Sequence[str] = (),
) -> Assessment:
    """Judge one observation from the files of one cluster; pure, no I/O.

    Parameters
    ----------
    members
        The readable files of one cluster (at least one).
    missing
        Paths that are no longer on disk.
    unreadable
        Errors (naming their files) of files whose names place them in this observation
        but which could not be read: the problem says so, so "missing" never hides
        "broken".
    now, policy
        Time of the pass and the completeness rules.

    Returns
    -------
    Assessment
        Key and start from the earliest data start, end from the latest data end;
        ``n_subbands`` counts distinct subbands consistent with the rest and on disk;
        ``problem`` names every excluded file and says why the observation is not (fully)
        ready, or is None when there is nothing to say.
    """
    used, problems = _consistent(members, policy)
    problems[:0] = list(unreadable)
    # With every file excluded the observation still needs an extent to be listed under.
    extent = used or list(members)
    start = min(m.data_start for m in members)
    first_seen = min(m.seen_at for m in members)
    gone = sorted(_name(m) for m in used if m.path in missing)
    present = {m.subband for m in used if m.path not in missing}
    absent = ", ".join(f"sb{s:02d}" for s in range(policy.expected_subbands) if s not in present)
    count = f"{len(present)}/{policy.expected_subbands} subbands"
    deadline = first_seen + policy.grace
    if gone:
        ready = False
        problems.append(f"raw file{'s' if len(gone) > 1 else ''} vanished: {', '.join(gone)}")
    elif len(present) >= policy.expected_subbands:
        ready = True
    elif now < deadline:
        ready = False
        problems.append(f"{count} (missing {absent}); waiting until {_clock(deadline, now)}")
    elif len(present) >= policy.min_subbands:
        ready = True
        problems.append(f"{count} (missing {absent}); ready without them after the grace period")
    else:
        ready = False
        problems.append(f"incomplete: {count}, needs {policy.min_subbands} (missing {absent})")
    return Assessment(
        key=observation_key(start),
        start=start,
        end=max(m.data_end for m in extent),
        dec_deg=fmean(m.dec_deg for m in extent),
        n_subbands=len(present),
        ready=ready,
        problem="; ".join(problems) or None,
        first_seen=first_seen,
        used=frozenset(m.id for m in used),
    )


def _consistent(
    members: Sequence[RawMember], policy: DiscoveryPolicy
) -> tuple[list[RawMember], list[str]]:
    """Drop files that cannot be combined with the rest, saying why for each one.

    The majority decides what "the rest" is, ties broken by subband then path, so the odd
    file out is the same whatever order the files arrived in.
    """
    problems: list[str] = []
    in_range: list[RawMember] = []
    for member in sorted(members, key=lambda m: (m.subband, m.path)):
        if member.subband < policy.expected_subbands:
            in_range.append(member)
        else:
            last = policy.expected_subbands - 1
            problems.append(f"excluded {_name(member)}: subband outside sb00..sb{last:02d}")
    if not in_range:
        return [], problems
    layouts = Counter(m.n_channels for m in in_range)
    channels = max(in_range, key=lambda m: (layouts[m.n_channels], -m.subband)).n_channels
    reference = max(
        (m for m in in_range if m.n_channels == channels),
        key=lambda m: (
            sum(abs(o.dec_deg - m.dec_deg) <= policy.dec_tolerance_deg for o in in_range),
            -m.subband,
        ),
    )
    used: dict[int, RawMember] = {}
    for member in in_range:
        if member.n_channels != channels:
            problems.append(
                f"excluded {_name(member)}: {member.n_channels} channels, the others {channels}"
            )
        elif abs(member.dec_deg - reference.dec_deg) > policy.dec_tolerance_deg:
            problems.append(
                f"excluded {_name(member)}: dec {member.dec_deg:.3f}°, the others "
                f"{reference.dec_deg:.3f}° (tolerance {policy.dec_tolerance_deg}°)"
            )
        elif member.subband in used:
            problems.append(f"excluded {_name(member)}: duplicate of {_name(used[member.subband])}")
        else:
            used[member.subband] = member
    return list(used.values()), problems


@dataclass
class _Plan:
    """The writes that bring observations in line with their files; empty if none."""

    create: list[Assessment] = field(default_factory=list)
    update: list[tuple[int, Assessment]] = field(default_factory=list)
    link: list[tuple[str, list[int]]] = field(default_factory=list)
    unlink: list[int] = field(default_factory=list)
    retire: dict[int, str] = field(default_factory=dict)
    remove: dict[int, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (
            self.create or self.update or self.link or self.unlink or self.retire or self.remove
        )


def _plan(
    conn: Connection,
    anchors: Sequence[datetime],
    former: Collection[int],
    on_disk: Mapping[str, _Stat],
    root: Path,
    now: datetime,
    policy: DiscoveryPolicy,
) -> _Plan:
    """Regroup the files near ``anchors`` and near every observation not ready or in
    ``former``, and list what must change. Reads only.

    Observations already ready are left alone unless named in ``former``, so the cost of a
    pass follows the number not ready, not the length of the history.
    """
    rejudge = conn.execute(
        select(Observation.id, Observation.start_time).where(
            or_(Observation.ready.is_(False), Observation.id.in_(list(former)))
        )
    ).all()
    members = _neighbourhood(
        conn, [*anchors, *(row.start_time for row in rejudge)], policy.group_tolerance
    )
    candidates = {*former, *(row.id for row in rejudge)}
    candidates |= {m.observation_id for m in members if m.observation_id is not None}
    missing = _missing({m.path for m in members}, on_disk, root)
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

    plan = _Plan()
    for cluster, verdict in zip(clusters, verdicts, strict=True):
        row = by_key.get(verdict.key)
        if row is None:
            plan.create.append(verdict)
        elif _differs(row, verdict):
            plan.update.append((row["id"], verdict))
        relink = [
            m.id
            for m in cluster
            if m.id in verdict.used and (row is None or m.observation_id != row["id"])
        ]
        if relink:
            plan.link.append((verdict.key, relink))
        plan.unlink += [
            m.id for m in cluster if m.id not in verdict.used and m.observation_id is not None
        ]
    placed = {by_key[v.key]["id"] for v in verdicts if v.key in by_key}
    orphans = {obs_id for obs_id in candidates - placed if obs_id in stored}
    if orphans:
        referenced = _referenced(conn, orphans)
        for obs_id in orphans:
            row = stored[obs_id]
            if obs_id not in referenced:
                plan.remove[obs_id] = row["key"]
            elif (row["ready"], row["n_subbands"], row["problem"]) != (False, 0, RETIRED_PROBLEM):
                plan.retire[obs_id] = row["key"]
    return plan


def _apply(
    conn: Connection, plan: _Plan, now: datetime
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Carry out a plan; returns the keys created, updated and removed."""
    ids: dict[str, int] = {}
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
        Observation
    )
    for verdict in plan.create:
        values = _values(verdict)
        # The unique key, not the plan, is what prevents a duplicate under concurrency.
        stmt = insert.values(key=verdict.key, updated_at=now, **values).on_conflict_do_update(
            index_elements=["key"], set_={**values, "updated_at": now}
        )
        ids[verdict.key] = conn.execute(stmt.returning(Observation.id)).scalar_one()
    for obs_id, verdict in plan.update:
        conn.execute(
            update(Observation)
            .where(Observation.id == obs_id)
            .values(updated_at=now, **_values(verdict))
        )
    for key, file_ids in plan.link:
        obs_id = (
            ids.get(key)
            or conn.execute(select(Observation.id).where(Observation.key == key)).scalar_one()
        )
        for chunk in _chunks(file_ids, _CHUNK):
            conn.execute(update(RawFile).where(RawFile.id.in_(chunk)).values(observation_id=obs_id))
    for chunk in _chunks(plan.unlink, _CHUNK):
        conn.execute(update(RawFile).where(RawFile.id.in_(chunk)).values(observation_id=None))
    if plan.retire:
        conn.execute(
            update(Observation)
            .where(Observation.id.in_(list(plan.retire)))
            .values(ready=False, n_subbands=0, problem=RETIRED_PROBLEM, updated_at=now)
        )
    if plan.remove:
        # Guarded by the files themselves: an observation a file is still used in stays.
        conn.execute(
            delete(Observation).where(
                Observation.id.in_(list(plan.remove)),
                ~exists().where(RawFile.observation_id == Observation.id),
            )
        )
    updated = {verdict.key for _, verdict in plan.update} | set(plan.retire.values())
    return (
        tuple(v.key for v in plan.create),
        tuple(sorted(updated)),
        tuple(sorted(plan.remove.values())),
    )


@dataclass(frozen=True)
class _Stat:
    size: int
    mtime: float


@dataclass(frozen=True)
class _Known:
    size: int
    mtime: float
    observation_id: int | None


def _scan(root: Path) -> dict[str, _Stat]:
    """Every raw-looking file under ``root`` with its size and mtime (one walk)."""
    found: dict[str, _Stat] = {}
    for directory, _, names in os.walk(root):
        for name in names:
            if _RAW_SUFFIX.search(name) is None:
                continue
            path = os.path.join(directory, name)
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                # Gone between listing and stat: the next pass sees it as it is then.
                continue
            found[path] = _Stat(stat.st_size, stat.st_mtime)
    return found


def _known_files(conn: Connection) -> dict[str, _Known]:
    stmt = select(RawFile.path, RawFile.size_bytes, RawFile.mtime, RawFile.observation_id)
    return {
        row.path: _Known(row.size_bytes, row.mtime, row.observation_id)
        for row in conn.execute(stmt)
    }


def _inspect(path: str, stat: _Stat) -> dict[str, Any]:
    """The ``raw_files`` values of one file: its header, or the reason it is unusable."""
    name = os.path.basename(path)
    parsed = parse_raw_name(name)
    suffix = _RAW_SUFFIX.search(name)
    assert suffix is not None, "the scan admits only raw-looking names"
    row: dict[str, Any] = {
        "path": path,
        "subband": parsed[1] if parsed else int(suffix.group(1)),
        "name_time": parsed[0] if parsed else None,
        "data_start": None,
        "data_end": None,
        "dec_deg": None,
        "n_channels": None,
        "size_bytes": stat.size,
        "mtime": stat.mtime,
        "error": None,
    }
    try:
        header = read_raw_header(path)
    except RawFileError as exc:
        row["error"] = str(exc)
        return row
    row.update(
        data_start=header.data_start,
        data_end=header.data_end,
        dec_deg=header.pointing_dec_deg,
        n_channels=header.n_channels,
    )
    return row


def _previous_placement(
    conn: Connection, records: Mapping[str, Any]
) -> dict[str, tuple[datetime | None, int | None]]:
    """Data start and observation of re-read files before this pass, to regroup both."""
    found: dict[str, tuple[datetime | None, int | None]] = {}
    for chunk in _chunks(records, _CHUNK):
        stmt = select(RawFile.path, RawFile.data_start, RawFile.observation_id).where(
            RawFile.path.in_(chunk)
        )
        found |= {row.path: (row.data_start, row.observation_id) for row in conn.execute(stmt)}
    return found


def _upsert_files(conn: Connection, records: Mapping[str, dict[str, Any]], now: datetime) -> None:
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(RawFile)
    for chunk in _chunks(records.values(), _CHUNK):
        stmt = insert.values([{**row, "seen_at": now} for row in chunk])
        # A re-read file keeps seen_at (the grace period counts from its first arrival)
        # and is unlinked until regrouping places it again.
        refreshed = {column: stmt.excluded[column] for column in chunk[0] if column != "path"}
        stmt = stmt.on_conflict_do_update(
            index_elements=["path"], set_={**refreshed, "observation_id": None}
        )
        conn.execute(stmt)


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


def _missing(paths: Iterable[str], on_disk: Mapping[str, _Stat], root: Path) -> set[str]:
    """Paths no longer on disk; one outside this walk's root is checked directly."""
    return {
        path
        for path in paths
        if path not in on_disk and (_under(path, root) or not os.path.exists(path))
    }


def _under(path: str, root: Path) -> bool:
    return path.startswith(f"{root}{os.sep}")


def _name(member: RawMember) -> str:
    return os.path.basename(member.path)


def _clock(when: datetime, now: datetime) -> str:
    """A deadline as HH:MM:SS UTC, with the date when it is not on the day of ``now``."""
    when, now = when.astimezone(UTC), now.astimezone(UTC)
    return f"{when:%H:%M:%S}" if when.date() == now.date() else f"{when:%Y-%m-%d %H:%M:%S}"


def _paths(paths: Iterable[str]) -> tuple[Path, ...]:
    return tuple(Path(path) for path in paths)


def _chunks(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
