"""A real incoming tree for the scale benchmark: one empty placeholder file per raw file of
the history, in per-day directories as the correlator writes them, with the ``raw_files``
rows a discovery pass would have recorded for them.

Every file's mtime is its observation's end and every directory's mtime its newest file's,
on the history's own clock, so the tree looks as it would at the history's "now": only the
last day's directory is recent and nothing is still being written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

#: ``raw_files`` columns, in the order of :func:`file_rows`' tuples (the database assigns
#: the ids).
COLUMNS = (
    "path",
    "directory",
    "observation_id",
    "subband",
    "name_time",
    "data_start",
    "data_end",
    "dec_deg",
    "n_channels",
    "size_bytes",
    "mtime",
    "error",
    "seen_at",
)

CHANNELS_PER_SUBBAND = 48


@dataclass(frozen=True)
class Observed:
    """What the tree needs of one observation (naive UTC times, as stored)."""

    id: int
    start: datetime
    end: datetime
    dec_deg: float
    n_subbands: int


def day_directory(incoming: Path, start: datetime) -> Path:
    """The correlator's directory of the day ``start`` falls in."""
    return incoming / start.strftime("%Y-%m-%d")


def raw_name(start: datetime, subband: int) -> str:
    """The correlator's file name of one subband."""
    return f"{start:%Y-%m-%dT%H:%M:%S}_sb{subband:02d}.hdf5"


def epoch(moment: datetime) -> float:
    """Seconds since the epoch of a naive UTC time (whole seconds, exact as a float)."""
    return float(int(moment.replace(tzinfo=UTC).timestamp()))


def file_rows(incoming: Path, observations: Iterable[Observed]) -> Iterator[tuple]:
    """The ``raw_files`` rows of every subband file of ``observations``."""
    for o in observations:
        directory = str(day_directory(incoming, o.start))
        for subband in range(o.n_subbands):
            yield (
                os.path.join(directory, raw_name(o.start, subband)),
                directory,
                o.id,
                subband,
                o.start,
                o.start,
                o.end,
                o.dec_deg,
                CHANNELS_PER_SUBBAND,
                0,
                epoch(o.end),
                None,
                o.start + timedelta(minutes=1),
            )


def make_tree(incoming: Path, rows: Iterable[Sequence]) -> int:
    """Create the placeholder file of every row (empty, with the row's mtime), then give
    each directory its newest file's mtime; return the number of files."""
    newest: dict[str, float] = {}
    count = 0
    for row in rows:
        path, directory, mtime = row[0], row[1], row[10]
        if directory not in newest:
            os.makedirs(directory, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
        os.utime(path, (mtime, mtime))
        newest[directory] = max(newest.get(directory, mtime), mtime)
        count += 1
    for directory, mtime in newest.items():
        os.utime(directory, (mtime, mtime))
    last = max(newest.values(), default=time.time())
    os.utime(incoming, (last, last))
    return count


def add_observation(incoming: Path, start: datetime, end: datetime, subbands: int) -> list[Path]:
    """Placeholder files of a new observation in its day directory (mtime: its end), as
    the correlator would have just written them."""
    directory = day_directory(incoming, start)
    directory.mkdir(exist_ok=True)
    paths = [directory / raw_name(start, subband) for subband in range(subbands)]
    for path in paths:
        path.touch()
        os.utime(path, (epoch(end), epoch(end)))
    return paths
