"""Read Measurement Set metadata with python-casacore; plain data out, milliseconds.

Every other module asks this one what an MS contains, so "does this MS exist and is it
usable" has one answer: :func:`read_ms_summary` returns a summary or raises
:class:`MsError` naming the path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from astropy.time import Time
from casacore import tables

_SECONDS_PER_DAY = 86400.0


class MsError(ValueError):
    """A Measurement Set is missing, empty or unreadable."""


@dataclass(frozen=True)
class MsSummary:
    """What the pipeline needs to know about one MS.

    Times are timezone-aware UTC at the outer edges of the first and last integrations.
    Frequencies are over all spectral windows; ``frequencies_ascending`` is True when the
    channels, taken window by window in order, increase monotonically.
    """

    path: Path
    phase_centre_ra_deg: float
    phase_centre_dec_deg: float
    phase_centre_frame: str
    n_fields: int
    start: datetime
    end: datetime
    mid: datetime
    n_rows: int
    n_times: int
    n_antennas: int
    n_spectral_windows: int
    n_channels: int
    n_pols: int
    freq_min_hz: float
    freq_max_hz: float
    frequencies_ascending: bool
    flagged_fraction: float | None


def mjd_seconds_to_datetime(seconds: float) -> datetime:
    """Convert an MS time (UTC MJD seconds) to a datetime, rounded to the millisecond."""
    when = Time(seconds / _SECONDS_PER_DAY, format="mjd", scale="utc").to_datetime(timezone=UTC)
    return when.replace(microsecond=0) + timedelta(milliseconds=round(when.microsecond / 1000))


def read_ms_summary(path: Path | str, *, with_flagged_fraction: bool = False) -> MsSummary:
    """Summarise one Measurement Set.

    Parameters
    ----------
    path
        The MS directory.
    with_flagged_fraction
        Also read the FLAG column to report the flagged fraction; this reads every
        visibility flag, so it is off by default.

    Returns
    -------
    MsSummary

    Raises
    ------
    MsError
        If the path is not a readable MS, or its main table has no rows.
    """
    path = Path(path)
    if not path.is_dir():
        raise MsError(f"{path}: no Measurement Set there")
    try:
        return _summarise(path, with_flagged_fraction)
    except MsError:
        raise
    except (RuntimeError, OSError, KeyError, IndexError) as exc:
        # casacore reports a broken or half-written table as RuntimeError.
        raise MsError(f"{path}: unreadable Measurement Set ({exc})") from exc


def ms_has_rows(path: str) -> bool:
    """An MS that opens and has rows: the check that an MS product still exists.

    A yes is remembered per (path, modification time, size) of the table descriptor, so a
    pass only stats a known-good MS; an MS replaced or emptied since is opened again. A no
    is never remembered: a read that failed once is tried again on the next pass. (The row
    count in ``table.dat`` itself is not kept current by casacore, so the table is opened.)
    """
    try:
        stat = (Path(path) / "table.dat").stat()
    except OSError:
        return False
    seen = (path, stat.st_mtime_ns, stat.st_size)
    if seen in _GOOD_MS:
        return True
    try:
        good = read_ms_summary(path).n_rows > 0
    except MsError:
        return False
    if good:
        if len(_GOOD_MS) >= _GOOD_MS_MAX:
            _GOOD_MS.clear()
        _GOOD_MS.add(seen)
    return good


#: (path, mtime, size) of descriptors of MSs that opened with rows; bounded, cleared when full.
_GOOD_MS: set[tuple[str, int, int]] = set()
_GOOD_MS_MAX = 65536


def _summarise(path: Path, with_flagged_fraction: bool) -> MsSummary:
    with tables.table(str(path), ack=False) as main:
        n_rows = main.nrows()
        if n_rows == 0:
            raise MsError(f"{path}: Measurement Set has no rows")
        time = main.getcol("TIME")
        interval = main.getcol("INTERVAL")
        flagged = _flagged_fraction(main) if with_flagged_fraction else None
    with tables.table(str(path / "FIELD"), ack=False) as field:
        if field.nrows() == 0:
            raise MsError(f"{path}: FIELD table is empty")
        phase_dir = field.getcol("PHASE_DIR")
        measure = field.getcolkeyword("PHASE_DIR", "MEASINFO")
        n_fields = field.nrows()
    with tables.table(str(path / "SPECTRAL_WINDOW"), ack=False) as spw:
        chan_freqs = [np.asarray(spw.getcell("CHAN_FREQ", row)) for row in range(spw.nrows())]
    with tables.table(str(path / "POLARIZATION"), ack=False) as pol:
        n_pols = int(pol.getcell("NUM_CORR", 0))
    with tables.table(str(path / "ANTENNA"), ack=False) as antenna:
        n_antennas = antenna.nrows()
    if not chan_freqs:
        raise MsError(f"{path}: SPECTRAL_WINDOW table is empty")

    start_s = float(np.min(time - interval / 2.0))
    end_s = float(np.max(time + interval / 2.0))
    frequencies = np.concatenate(chan_freqs)
    ra_rad, dec_rad = phase_dir[0, 0, 0], phase_dir[0, 0, 1]
    return MsSummary(
        path=path,
        phase_centre_ra_deg=float(np.degrees(ra_rad) % 360.0),
        phase_centre_dec_deg=float(np.degrees(dec_rad)),
        phase_centre_frame=str(measure.get("Ref", "")),
        n_fields=n_fields,
        start=mjd_seconds_to_datetime(start_s),
        end=mjd_seconds_to_datetime(end_s),
        mid=mjd_seconds_to_datetime((start_s + end_s) / 2.0),
        n_rows=n_rows,
        n_times=int(np.unique(time).size),
        n_antennas=n_antennas,
        n_spectral_windows=len(chan_freqs),
        n_channels=int(frequencies.size),
        n_pols=n_pols,
        freq_min_hz=float(frequencies.min()),
        freq_max_hz=float(frequencies.max()),
        frequencies_ascending=bool(np.all(np.diff(frequencies) > 0)),
        flagged_fraction=flagged,
    )


def _flagged_fraction(main: tables.table) -> float:
    flagged = 0
    total = 0
    # Chunked so a multi-GB MS never needs its whole FLAG column in memory.
    chunk = 10_000
    for start in range(0, main.nrows(), chunk):
        flags = main.getcol("FLAG", start, min(chunk, main.nrows() - start))
        flagged += int(np.count_nonzero(flags))
        total += flags.size
    return flagged / total if total else 0.0
