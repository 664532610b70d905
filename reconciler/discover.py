"""Discover raw subband files under the incoming directory and group them into observations.

Discovery is incremental: each pass walks the directory once, compares every raw file's
size and mtime with its ``raw_files`` row, and reads headers only of files that are new or
changed. Which files make an observation and whether it is ready is decided by
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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from reconciler.db.discovery import (
    apply_observation_changes,
    known_files,
    observation_changes,
    previous_placement,
    upsert_raw_files,
)
from reconciler.db.engine import reading, writing
from reconciler.io.uvh5 import RawFileError, parse_raw_name, read_raw_header
from reconciler.observations import DiscoveryPolicy

#: Names discovery looks at; anything else in the incoming tree is not a raw file.
_RAW_SUFFIX = re.compile(r"_sb(\d{2})\.hdf5$")


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
    find_missing = partial(_missing, on_disk=on_disk, root=root)
    with reading(engine) as conn:
        known = known_files(conn)
        new = sorted(path for path in on_disk if path not in known)
        changed = sorted(
            path
            for path, stat in on_disk.items()
            if path in known and (known[path].size, known[path].mtime) != (stat.size, stat.mtime)
        )
        vanished = sorted(path for path in known if path not in on_disk and _under(path, root))
        touched = {obs for path in vanished if (obs := known[path].observation_id) is not None}
        if not new and not changed:
            # Nothing to read, but a verdict may still change (a grace period ran out).
            pending = observation_changes(
                conn, [], touched, find_missing=find_missing, now=now, policy=policy
            )
            if pending.empty:
                return DiscoveryReport(vanished_files=_paths(vanished))

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
    return DiscoveryReport(
        new_files=_paths(new),
        changed_files=_paths(changed),
        vanished_files=_paths(vanished),
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


def _scan(root: Path) -> dict[str, _Stat]:
    """Every raw-looking entry under ``root`` with its size and mtime (one walk).

    A raw-looking name that is not a readable file (a dangling symlink, a symlink loop, a
    directory) is kept with its problem, never dropped silently and never raised.
    """
    found: dict[str, _Stat] = {}
    for directory, subdirectories, names in os.walk(root):
        for name in (*names, *subdirectories):
            if _RAW_SUFFIX.search(name) is None:
                continue
            path = os.path.join(directory, name)
            entry = _stat(path)
            if entry is not None:
                found[path] = entry
    return found


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


def _missing(paths: Iterable[str], on_disk: Mapping[str, _Stat], root: Path) -> set[str]:
    """Paths no longer on disk; one outside this walk's root is checked directly."""
    return {
        path
        for path in paths
        if path not in on_disk and (_under(path, root) or not os.path.exists(path))
    }


def _under(path: str, root: Path) -> bool:
    return path.startswith(f"{root}{os.sep}")


def _paths(paths: Iterable[str]) -> tuple[Path, ...]:
    return tuple(Path(path) for path in paths)
