"""Read the headers of DSA-110 raw UVH5 files, fast and without trusting them.

A raw file is named ``YYYY-MM-DDTHH:MM:SS_sbNN.hdf5`` (DESIGN §1). The header is read
directly with h5py, which takes milliseconds and never touches the visibilities, so the
observer can scan thousands of files per pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import h5py
import numpy as np
from astropy.time import Time

_RAW_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})_sb(\d{2})\.hdf5$")

#: Header datasets every raw file must carry; a missing one makes the file unusable.
_REQUIRED_HEADER = (
    "time_array",
    "integration_time",
    "freq_array",
    "channel_width",
    "Nbls",
    "Nblts",
    "Ntimes",
    "Nfreqs",
    "Npols",
)


class RawFileError(ValueError):
    """A raw UVH5 file is unreadable, truncated or lacks a required header item."""


@dataclass(frozen=True)
class RawHeader:
    """What the pipeline needs to know about one raw subband file.

    Times are timezone-aware UTC. ``data_start``/``data_end`` are the outer edges of the
    first and last integrations, taken from the data's own time array, not from the name.
    """

    path: Path
    subband: int
    name_time: datetime
    data_start: datetime
    data_end: datetime
    pointing_dec_deg: float
    n_times: int
    n_baselines: int
    n_channels: int
    n_pols: int
    freq_min_hz: float
    freq_max_hz: float
    channel_width_hz: float


def parse_raw_name(name: str) -> tuple[datetime, int] | None:
    """Return ``(name time as UTC, subband)`` for a raw file name, or None if it is not one.

    Parameters
    ----------
    name
        A bare file name such as ``2025-01-02T03:04:05_sb07.hdf5``.
    """
    match = _RAW_NAME.match(name)
    if match is None:
        return None
    try:
        when = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return when, int(match.group(2))


def jd_to_datetime(jd: float) -> datetime:
    """Convert a UTC Julian date to a timezone-aware datetime, rounded to the millisecond.

    A float64 Julian date resolves only ~20 microseconds, so finer digits are noise.
    """
    when = Time(jd, format="jd", scale="utc").to_datetime(timezone=UTC)
    return when.replace(microsecond=0) + timedelta(milliseconds=round(when.microsecond / 1000))


def read_raw_header(path: Path | str) -> RawHeader:
    """Read the header of one raw DSA-110 UVH5 file.

    Parameters
    ----------
    path
        A file named ``YYYY-MM-DDTHH:MM:SS_sbNN.hdf5``.

    Returns
    -------
    RawHeader
        Plain data describing the file.

    Raises
    ------
    RawFileError
        If the name does not follow the convention, the file cannot be opened as HDF5
        (corrupt or truncated), a required header item is missing, or the header
        disagrees with itself or with the shape of the stored visibilities.
    """
    path = Path(path)
    parsed = parse_raw_name(path.name)
    if parsed is None:
        raise RawFileError(f"{path}: name is not YYYY-MM-DDTHH:MM:SS_sbNN.hdf5")
    name_time, subband = parsed
    try:
        with h5py.File(path, "r") as handle:
            return _header_from_hdf5(handle, path, name_time, subband)
    except RawFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        # h5py raises OSError for truncated or non-HDF5 files and KeyError for missing
        # groups; both mean the file is unusable, which is the one thing callers handle.
        raise RawFileError(f"{path}: unreadable UVH5 file ({exc})") from exc


def _header_from_hdf5(
    handle: h5py.File, path: Path, name_time: datetime, subband: int
) -> RawHeader:
    if "Header" not in handle or "Data" not in handle:
        raise RawFileError(f"{path}: not a UVH5 file (no Header or Data group)")
    header = handle["Header"]
    missing = [key for key in _REQUIRED_HEADER if key not in header]
    if missing:
        raise RawFileError(f"{path}: header lacks {', '.join(missing)}")
    extra = header.get("extra_keywords")
    if extra is None or "phase_center_dec" not in extra:
        raise RawFileError(f"{path}: header lacks extra_keywords/phase_center_dec")

    n_blts = int(header["Nblts"][()])
    n_times = int(header["Ntimes"][()])
    n_baselines = int(header["Nbls"][()])
    n_channels = int(header["Nfreqs"][()])
    n_pols = int(header["Npols"][()])
    times = np.asarray(header["time_array"][()], dtype=float)
    integration = np.asarray(header["integration_time"][()], dtype=float)
    freqs = np.asarray(header["freq_array"][()], dtype=float).ravel()
    width = np.abs(np.asarray(header["channel_width"][()], dtype=float).ravel())

    if n_blts == 0 or times.size != n_blts or integration.size != n_blts:
        raise RawFileError(f"{path}: time axis is empty or has the wrong length")
    if n_blts != n_baselines * n_times:
        raise RawFileError(f"{path}: Nblts {n_blts} != Nbls {n_baselines} * Ntimes {n_times}")
    if freqs.size != n_channels:
        raise RawFileError(f"{path}: freq_array has {freqs.size} channels, Nfreqs {n_channels}")
    visdata = handle["Data"].get("visdata")
    if visdata is None:
        raise RawFileError(f"{path}: no Data/visdata")
    if visdata.shape[0] != n_blts or visdata.shape[-1] != n_pols:
        raise RawFileError(f"{path}: visdata shape {visdata.shape} disagrees with the header")

    first, last = int(np.argmin(times)), int(np.argmax(times))
    seconds_per_day = 86400.0
    start_jd = times[first] - integration[first] / 2.0 / seconds_per_day
    end_jd = times[last] + integration[last] / 2.0 / seconds_per_day
    return RawHeader(
        path=path,
        subband=subband,
        name_time=name_time,
        data_start=jd_to_datetime(start_jd),
        data_end=jd_to_datetime(end_jd),
        pointing_dec_deg=float(np.degrees(float(np.asarray(extra["phase_center_dec"][()])))),
        n_times=n_times,
        n_baselines=n_baselines,
        n_channels=n_channels,
        n_pols=n_pols,
        freq_min_hz=float(freqs.min()),
        freq_max_hz=float(freqs.max()),
        channel_width_hz=float(np.median(width)),
    )
