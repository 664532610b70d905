"""Discover raw subband files under the incoming directory and group them into observations.

Discovery looks only at what can have changed, so a pass that finds nothing new costs the
same with a year of files as with a week:

* A directory's mtime changes whenever an entry is added, removed or renamed in it. Each
  directory's mtime at its last listing is kept (``incoming_directories``); a pass lists a
  directory again only when its mtime moved, and reads the rows of that directory only.
  Every pass stats the root and the directories that changed within
  ``discovery.recent_hours`` (where the correlator is writing); a *sweep* every
  ``discovery.sweep_minutes`` stats all of them (a late file in an old directory).
* A file rewritten in place leaves its directory's mtime alone, so files whose mtime is
  within ``discovery.settle_minutes`` of now (still being written) are stat'd every pass.
* The kernel's file events (:mod:`reconciler.io.watch`, inotify), where a service has them,
  name the directories and files touched since the last pass, which are looked at at once.
  Events are a shortcut, never relied on: a file another host writes onto a shared
  filesystem raises none here.
* A *resync* every ``discovery.resync_hours`` (and the first pass on a root) walks the
  whole tree and compares every file with its row: the safety net for everything else.

The directory marks are shared in the database, so services on several hosts divide the
listing between them and each sees every file's row. Headers are read only of files that
are new or changed. Which files make an observation and whether it is ready is decided by
:mod:`reconciler.observations`; the rows are read and written by
:mod:`reconciler.db.discovery`. This module is the pass itself and everything it does on the
filesystem.

Completeness is level-triggered: every pass re-judges the observations that are not ready
yet (and those that lost a file), so a grace period expires without new files arriving.
Raw files are only ever opened for reading.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from reconciler.db.discovery import (
    DirectoryListing,
    KnownFile,
    apply_observation_changes,
    discovery_mark,
    file_directories,
    files_by_path,
    files_in,
    mark_scanned,
    mark_vanished,
    observation_changes,
    previous_placement,
    recent_files,
    record_directories,
    recorded_directories,
    upsert_raw_files,
)
from reconciler.db.engine import reading, writing
from reconciler.io.uvh5 import RawFileError, parse_raw_name, read_raw_header
from reconciler.io.watch import ChangeHints
from reconciler.model import ScanPolicy
from reconciler.observations import DiscoveryPolicy

#: Names discovery looks at; anything else in the incoming tree is not a raw file.
_RAW_SUFFIX = re.compile(r"_sb(\d{2})\.hdf5$")

#: A directory whose mtime is this close to its listing may change again within the same
#: timestamp tick (coarse on some filesystems): it is listed again by the next pass.
_RACY_SECONDS = 2.0


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
    directories_checked: int = 0
    directories_listed: int = 0
    swept: bool = False
    resynced: bool = False

    @property
    def found_nothing(self) -> bool:
        """Whether the pass saw the incoming tree and changed no file's or observation's row."""
        return not (
            self.incoming_missing
            or self.new_files
            or self.changed_files
            or self.vanished_files
            or self.errors
            or self.observations_created
            or self.observations_updated
            or self.observations_removed
        )

    @property
    def headers_read(self) -> int:
        """Number of raw file headers this pass read."""
        return len(self.new_files) + len(self.changed_files)


_DEFAULT_SCAN = ScanPolicy()
_NO_HINTS = ChangeHints()


def discover(
    engine: Engine,
    incoming: Path,
    *,
    now: datetime,
    policy: DiscoveryPolicy,
    scan: ScanPolicy = _DEFAULT_SCAN,
    hints: ChangeHints = _NO_HINTS,
) -> DiscoveryReport:
    """Record new and changed raw files under ``incoming`` and bring observations up to date.

    Parameters
    ----------
    engine
        Database holding ``raw_files``, ``observations`` and the directory marks.
    incoming
        Directory searched recursively for ``*_sbNN.hdf5`` files; never written to.
    now
        The pass's time (timezone-aware UTC): decides grace expiry, when a sweep or resync
        is due, and is recorded as the time new files were first seen.
    policy
        Grouping and completeness rules.
    scan
        How often every directory is swept and every file resynchronised, and which
        directories and files are looked at on every pass.
    hints
        Directories and files the kernel reported touched since the last pass.

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
    header, runs a handful of indexed queries whatever the length of the history, and
    writes only if something changed: a verdict (a grace period ran out, a file vanished),
    a directory's entries, or the time of a sweep or resync.
    """
    root = incoming.absolute()
    if not root.is_dir():
        return DiscoveryReport(incoming_missing=True)
    with reading(engine) as conn:
        mark = discovery_mark(conn, str(root))
        resync = mark is None or _due(mark.resynced_at, now, scan.resync)
        sweep = resync or hints.overflowed or _due(mark.swept_at, now, scan.sweep)
        if resync:
            look = _look_everywhere(conn, root)
        else:
            look = _look_where_changed(conn, root, now=now, scan=scan, hints=hints, sweep=sweep)
        known, on_disk = look.known, look.on_disk
        new = sorted(path for path in on_disk if path not in known)
        changed = sorted(path for path in on_disk if path in known)
        vanished = sorted(look.gone)
        touched = {obs for path in vanished if (obs := known[path].observation_id) is not None}
        find_missing = partial(look.missing, root=root)
        report = DiscoveryReport(
            vanished_files=_paths(vanished),
            directories_checked=look.checked,
            directories_listed=len(look.listings),
            swept=sweep,
            resynced=resync,
        )
        if not new and not changed:
            # Nothing to read, but a verdict may still change (a grace period ran out).
            pending = observation_changes(
                conn, [], touched, find_missing=find_missing, now=now, policy=policy
            )
            if pending.empty and not (look.listings or look.removed or vanished or sweep):
                return report
    if not new and not changed and pending.empty:
        with writing(engine) as conn:
            _record_look(conn, root, look, now=now, swept=sweep, resynced=resync)
        return report

    # Headers are read outside any transaction: it is the slow part and needs no lock.
    records = {path: _inspect(path, on_disk[path]) for path in (*new, *changed)}
    with writing(engine) as conn:
        previous = previous_placement(conn, records)
        upsert_raw_files(conn, records, now)
        # An unreadable file anchors by its name, so its observation hears about it.
        anchors = [
            row["data_start"] or row["name_time"]
            for row in records.values()
            if row["data_start"] or row["name_time"]
        ]
        anchors += [start for start, _ in previous.values() if start is not None]
        former = touched | {obs for _, obs in previous.values() if obs is not None}
        changes = observation_changes(
            conn, anchors, former, find_missing=find_missing, now=now, policy=policy
        )
        created, updated, removed = apply_observation_changes(conn, changes, now)
        # In the same transaction as the files: a directory is never marked listed before
        # its files are recorded.
        _record_look(conn, root, look, now=now, swept=sweep, resynced=resync)
    return replace(
        report,
        new_files=_paths(new),
        changed_files=_paths(changed),
        errors={Path(path): row["error"] for path, row in records.items() if row["error"]},
        observations_created=created,
        observations_updated=updated,
        observations_removed=removed,
    )


@dataclass(frozen=True)
class _Stat:
    """Size and mtime of a raw-looking entry; ``problem`` when it is not a readable file
    (then size and mtime are the entry's own, so it is reported once, until it changes)."""

    size: int
    mtime: float
    problem: str | None = None


@dataclass
class _Look:
    """What a pass saw of the tree: the differences from the rows, not the whole tree.

    ``on_disk`` holds the raw-looking entries that are new or whose size or mtime moved,
    ``known`` the rows of those and of the files found gone (``gone``). ``listings`` are
    the directories whose mtime moved, ``removed`` the recorded directories now absent,
    ``checked`` how many directories were stat'd.
    ``everything`` says the whole tree was walked, so a file under the root neither gone
    nor changed is known to be there unchanged.
    """

    on_disk: dict[str, _Stat] = field(default_factory=dict)
    known: dict[str, KnownFile] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)
    listings: list[DirectoryListing] = field(default_factory=list)
    removed: set[str] = field(default_factory=set)
    checked: int = 0
    everything: bool = False

    def compare(self, rows: Mapping[str, KnownFile], entries: Mapping[str, _Stat]) -> None:
        """Keep what differs between rows and the stat'd entries at their paths: new and
        changed entries, entries that came back, and files newly gone (a file already
        known gone is not reported again)."""
        for path, stat in entries.items():
            row = rows.get(path)
            if row is None or row.vanished or (row.size, row.mtime) != (stat.size, stat.mtime):
                self.on_disk[path] = stat
                if row is not None:
                    self.known[path] = row
        for path, row in rows.items():
            if path not in entries and not row.vanished:
                self.known[path] = row
                self.gone.add(path)

    def missing(self, paths: Iterable[str], root: Path) -> set[str]:
        """Those of ``paths`` not on disk: known gone, or (unless the whole tree under the
        root was just walked) found absent now."""
        return {
            path
            for path in paths
            if path in self.gone
            or (
                path not in self.on_disk
                and not (self.everything and _under(path, root))
                and not os.path.exists(path)
            )
        }


def _look_everywhere(conn: Connection, root: Path) -> _Look:
    """The resync: every directory listed, every raw-looking entry stat'd and compared with
    its row, one directory at a time, and every row under the root not seen found gone."""
    look = _Look(everything=True)
    top = str(root)
    recorded = recorded_directories(conn, top, everything=True)
    listed: set[str] = set()
    pending = [top]
    while pending:
        listing = _list(pending.pop())
        if listing is None:
            continue
        directory = listing.row.path
        listed.add(directory)
        look.checked += 1
        if directory not in recorded or recorded[directory] != listing.row.mtime:
            look.listings.append(listing.row)
        look.compare(files_in(conn, [directory]), _stat_paths(listing.paths))
        pending.extend(listing.subdirectories)
    unlisted = [d for d in file_directories(conn) if _within(d, root) and d not in listed]
    look.compare(files_in(conn, unlisted), {})
    look.removed = set(recorded) - listed
    return look


def _look_where_changed(
    conn: Connection,
    root: Path,
    *,
    now: datetime,
    scan: ScanPolicy,
    hints: ChangeHints,
    sweep: bool,
) -> _Look:
    """Stat the directories that can have changed and list those whose mtime moved; stat the
    files written lately or named by the kernel."""
    look = _Look()
    top = str(root)
    hinted = [d for d in hints.directories if _within(d, root)]
    recorded = recorded_directories(
        conn, top, everything=sweep, changed_since=now - scan.recent, paths=[top, *hinted]
    )
    pending = sorted({*recorded, *hinted, top}, reverse=True)
    looked: set[str] = set()
    while pending:
        directory = pending.pop()
        if directory in looked:
            continue
        looked.add(directory)
        look.checked += 1
        try:
            mtime = os.stat(directory).st_mtime
        except OSError:
            if directory in recorded and directory != top:
                look.removed |= set(recorded_directories(conn, directory, everything=True))
            continue
        if directory in recorded and recorded[directory] == mtime:
            continue
        listing = _list(directory)
        if listing is None:
            continue
        look.listings.append(listing.row)
        # Only names that came, came back or went: a file rewritten in place leaves the
        # directory's mtime alone.
        rows = files_in(conn, [directory])
        present = set(listing.paths)
        came = {path for path in present if path not in rows or rows[path].vanished}
        look.compare(
            {path: row for path, row in rows.items() if path in came or path not in present},
            _stat_paths(sorted(came)),
        )
        # A new subdirectory is listed now, a recorded one waits for its own turn, and one
        # recorded but no longer listed is gone with everything below it.
        below = recorded_directories(conn, directory, everything=True)
        recorded |= below
        pending.extend(sub for sub in listing.subdirectories if sub not in recorded)
        look.removed |= {
            path
            for path in below
            if path != directory and _child(directory, path) not in listing.subdirectories
        }
    look.compare(files_in(conn, sorted(look.removed)), {})
    # Files written lately may still be growing, and files the kernel named may have been
    # rewritten in place: neither moves its directory's mtime.
    lately = time.time() - scan.settle.total_seconds()
    watched = recent_files(conn, lately) | files_by_path(conn, sorted(hints.files))
    for path, row in watched.items():
        if not _under(path, root) or path in look.on_disk or path in look.gone:
            continue
        stat = _stat(path)
        look.compare({path: row}, {} if stat is None else {path: stat})
    return look


@dataclass(frozen=True)
class _Listing:
    """One directory's row to record, its raw-looking entries and its subdirectories."""

    row: DirectoryListing
    paths: tuple[str, ...]
    subdirectories: tuple[str, ...]


def _list(directory: str) -> _Listing | None:
    """List ``directory``; None when it is gone or cannot be listed (looked at again later).

    The mtime is read before the listing, so a change during it moves the mtime past the
    one recorded; one too close to now to tell a later change apart is recorded as None.
    """
    started = time.time()
    try:
        mtime = os.stat(directory).st_mtime
        with os.scandir(directory) as entries:
            found = list(entries)
    except OSError:
        return None
    paths = tuple(e.path for e in found if _RAW_SUFFIX.search(e.name) is not None)
    subdirectories = tuple(e.path for e in found if _is_directory(e))
    trusted = mtime if mtime < started - _RACY_SECONDS else None
    return _Listing(DirectoryListing(directory, trusted), paths, subdirectories)


def _is_directory(entry: os.DirEntry[str]) -> bool:
    """A real directory (a symbolic link to one is not followed, as ``os.walk`` does not)."""
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _stat_paths(paths: Iterable[str]) -> dict[str, _Stat]:
    """Raw-looking entries by path; an entry gone meanwhile is left for the next pass."""
    found: dict[str, _Stat] = {}
    for path in paths:
        entry = _stat(path)
        if entry is not None:
            found[path] = entry
    return found


def _due(last: datetime | None, now: datetime, every: timedelta) -> bool:
    return last is None or now - last >= every


def _record_look(
    conn: Connection, root: Path, look: _Look, *, now: datetime, swept: bool, resynced: bool
) -> None:
    mark_vanished(conn, sorted(look.gone), now)
    record_directories(conn, look.listings, look.removed, now=now)
    if swept or resynced:
        mark_scanned(conn, str(root), now=now, swept=swept, resynced=resynced)


def _stat(path: str) -> _Stat | None:
    """The entry at ``path``; None when it is gone (the next pass sees it as it is then)."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        problem = "dangling symbolic link"
    except OSError as exc:
        problem = exc.strerror or str(exc)
    else:
        if os.path.isdir(path):
            problem = "a directory, not a file"
        else:
            return _Stat(stat.st_size, stat.st_mtime)
    try:
        own = os.lstat(path)
    except OSError:
        return None
    return _Stat(own.st_size, own.st_mtime, problem)


def _inspect(path: str, stat: _Stat) -> dict[str, Any]:
    """The ``raw_files`` values of one file: its header, or the reason it is unusable."""
    name = os.path.basename(path)
    parsed = parse_raw_name(name)
    suffix = _RAW_SUFFIX.search(name)
    assert suffix is not None, "the scan admits only raw-looking names"
    row: dict[str, Any] = {
        "path": path,
        "directory": os.path.dirname(path),
        "subband": parsed[1] if parsed else int(suffix.group(1)),
        "name_time": parsed[0] if parsed else None,
        "data_start": None,
        "data_end": None,
        "dec_deg": None,
        "n_channels": None,
        "size_bytes": stat.size,
        "mtime": stat.mtime,
        "error": stat.problem,
    }
    if stat.problem is not None:
        return row
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


def _under(path: str, root: Path) -> bool:
    return path.startswith(f"{root}{os.sep}")


def _child(directory: str, below: str) -> str:
    """The entry of ``directory`` that ``below`` (a path under it) is in or is."""
    return os.path.join(directory, below[len(directory) + 1 :].split(os.sep, 1)[0])


def _within(directory: str, root: Path) -> bool:
    """The root itself or a directory below it."""
    return directory == str(root) or _under(directory, root)


def _paths(paths: Iterable[str]) -> tuple[Path, ...]:
    return tuple(Path(path) for path in paths)
