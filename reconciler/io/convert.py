"""Convert the raw subband files of one observation into one Measurement Set.

Memory is the wall (DESIGN §5): each subband is read, rephased and written as its own MS,
one at a time (or a few in parallel), and the parts are then joined row chunk by row
chunk into a single spectral window with frequencies ascending.

Phasing: the correlator fringe-stops every integration on the meridian at the pointing
dec and stores uvws towards that point, yet labels the file "drift" (DESIGN §1), so
pyuvdata calls it unprojected. Trusting that label would rephase from zenith and leave
gains wrong by tens of degrees. Here the catalogue entry is relabelled as the drift-scan
point it really is, so pyuvdata rephases from the stored w terms, to one ICRS centre for
the whole observation: the pointing dec at the RA that is on the apparent meridian at
mid-observation.
"""

from __future__ import annotations

import itertools
import math
import shutil
import uuid
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import HADec, SkyCoord
from astropy.time import Time
from casacore import tables
from pyuvdata import UVData

from reconciler.io.ms import MsError, MsSummary, read_ms_summary
from reconciler.io.uvh5 import RawFileError, RawHeader, read_raw_header
from reconciler.model import Site
from reconciler.naming import attempt_path
from reconciler.sky import DSA110, earth_location

#: Subbands of one observation must agree on their time axes to this many seconds.
_TIME_TOLERANCE_S = 0.01
#: Pointing decs of one observation's subbands must agree to this many degrees.
_DEC_TOLERANCE_DEG = 1e-6
#: Bytes of visibilities per joined chunk; bounds the join's memory.
_JOIN_CHUNK_BYTES = 64 * 1024 * 1024
#: Columns whose channel axis is joined; every other column is copied from one part.
_CHANNEL_COLUMNS = ("DATA", "FLAG", "WEIGHT_SPECTRUM")


class ConversionError(ValueError):
    """The raw files of an observation cannot be converted; the message names the file."""


@dataclass(frozen=True)
class _Part:
    """One subband converted to its own MS."""

    header: RawHeader
    ms_path: Path


def phase_centre_ra_deg(when: datetime, dec_deg: float, *, site: Site = DSA110) -> float:
    """Return the ICRS RA whose point at ``dec_deg`` is at hour angle 0 at ``when``.

    The hour angle is astropy's topocentric HADec, the frame pyuvdata phases in, so the
    rephasing is exact to milliarcseconds. :func:`reconciler.sky.meridian_ra_deg` (the
    apparent place, used for transits) differs by ~0.3 arcsec (polar motion, diurnal
    aberration): negligible for scheduling, but several degrees of phase on a 2.5 km
    baseline, so conversion must use this one.
    """
    location = earth_location(site)
    obstime = Time(when)
    frame = HADec(obstime=obstime, location=location)
    ra = obstime.sidereal_time("apparent", longitude=location.lon).deg
    # Precession moves the apparent place by minutes of arc from the ICRS one; three
    # Newton steps on the hour angle converge far below a milliarcsecond.
    for _ in range(3):
        hour_angle = SkyCoord(ra * u.deg, dec_deg * u.deg, frame="icrs").transform_to(frame).ha
        ra += hour_angle.wrap_at(180 * u.deg).deg
    return ra % 360.0


def convert_observation(
    subband_paths: Sequence[Path],
    out_ms: Path,
    *,
    scratch_dir: Path,
    workers: int = 1,
    site: Site = DSA110,
    attempt: str = "",
) -> MsSummary:
    """Convert one observation's raw subband files into one single-window MS.

    Parameters
    ----------
    subband_paths
        The raw ``*_sbNN.hdf5`` files of one observation, in any order.
    out_ms
        Where the MS goes. It is written under a temporary name in the same directory
        and renamed into place; if a valid MS is already there, nothing is redone.
    scratch_dir
        Directory for the per-subband MSs, removed again after the join.
    workers
        Number of subbands converted at once (each needs ~1 GB at full size).
    site
        Where the array is: the data are rephased to its meridian at mid-observation.
    attempt
        This attempt's token: the temporary names carry it (default a fresh one).

    Returns
    -------
    MsSummary
        Of the finished MS.

    Raises
    ------
    ConversionError
        If no files are given, a file is unreadable, or the subbands disagree on
        channel layout, time axis, polarisations or pointing dec.
    """
    out_ms = Path(out_ms)
    existing = _valid_summary(out_ms)
    if existing is not None:
        return existing
    if out_ms.exists():
        # A leftover from a crash at our own deterministic path: redo it.
        shutil.rmtree(out_ms)
    headers = _consistent_headers(subband_paths)
    centre_ra = phase_centre_ra_deg(_mid_time(headers[0]), headers[0].pointing_dec_deg, site=site)
    field_name = f"meridian_{_mid_time(headers[0]):%Y%m%dT%H%M%S}"

    out_ms.parent.mkdir(parents=True, exist_ok=True)
    attempt = attempt or uuid.uuid4().hex
    parts_dir = attempt_path(Path(scratch_dir) / f"{out_ms.name}.parts", attempt)
    partial = attempt_path(out_ms, attempt)
    shutil.rmtree(parts_dir, ignore_errors=True)
    shutil.rmtree(partial, ignore_errors=True)
    parts_dir.mkdir(parents=True)
    try:
        jobs = [
            (header, parts_dir / f"sb{header.subband:02d}.ms", centre_ra, field_name)
            for header in headers
        ]
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                parts = list(pool.map(_convert_subband, *zip(*jobs, strict=True)))
        else:
            parts = [_convert_subband(*job) for job in jobs]
        _join_parts(parts, partial)
        summary = read_ms_summary(partial)
        if not summary.frequencies_ascending or summary.n_spectral_windows != 1:
            raise ConversionError(f"{out_ms}: joined MS does not have one ascending window")
        partial.rename(out_ms)
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)
        shutil.rmtree(partial, ignore_errors=True)
    return read_ms_summary(out_ms)


def _valid_summary(out_ms: Path) -> MsSummary | None:
    if not out_ms.exists():
        return None
    try:
        summary = read_ms_summary(out_ms)
    except MsError:
        return None
    return summary if summary.frequencies_ascending else None


def _mid_time(header: RawHeader) -> datetime:
    return header.data_start + (header.data_end - header.data_start) / 2


def _consistent_headers(subband_paths: Sequence[Path]) -> list[RawHeader]:
    """Read every header and check the subbands belong together; ascending frequency."""
    if not subband_paths:
        raise ConversionError("no raw files given")
    headers = []
    for path in subband_paths:
        try:
            headers.append(read_raw_header(path))
        except RawFileError as exc:
            raise ConversionError(str(exc)) from exc
    headers.sort(key=lambda header: header.freq_min_hz)
    reference = headers[0]
    seen: set[int] = set()
    for header in headers:
        if header.subband in seen:
            raise ConversionError(f"{header.path}: subband {header.subband} given twice")
        seen.add(header.subband)
        layout = (header.n_channels, header.n_pols, header.n_baselines, header.n_times)
        reference_layout = (
            reference.n_channels,
            reference.n_pols,
            reference.n_baselines,
            reference.n_times,
        )
        if layout != reference_layout or not math.isclose(
            header.channel_width_hz, reference.channel_width_hz, rel_tol=1e-6
        ):
            raise ConversionError(
                f"{header.path}: layout (channels, pols, baselines, times) {layout} and "
                f"channel width {header.channel_width_hz} Hz differ from {reference.path}: "
                f"{reference_layout}, {reference.channel_width_hz} Hz"
            )
        for edge in ("data_start", "data_end"):
            offset = abs((getattr(header, edge) - getattr(reference, edge)).total_seconds())
            if offset > _TIME_TOLERANCE_S:
                raise ConversionError(
                    f"{header.path}: {edge} differs from {reference.path} by {offset:.3f} s"
                )
        if abs(header.pointing_dec_deg - reference.pointing_dec_deg) > _DEC_TOLERANCE_DEG:
            raise ConversionError(
                f"{header.path}: pointing dec {header.pointing_dec_deg:.6f} deg differs from "
                f"{reference.path}: {reference.pointing_dec_deg:.6f} deg"
            )
    for lower, upper in itertools.pairwise(headers):
        if upper.freq_min_hz <= lower.freq_max_hz:
            raise ConversionError(f"{upper.path}: frequencies overlap those of {lower.path}")
    return headers


def _convert_subband(header: RawHeader, ms_path: Path, centre_ra_deg: float, field: str) -> _Part:
    """Read one subband, rephase it to the observation's centre, write it as an MS."""
    uvd = UVData()
    with warnings.catch_warnings():
        # The stored uvws point at the meridian, not zenith, so pyuvdata's check that they
        # match an unprojected array always fails; that is the known convention.
        warnings.filterwarnings("ignore", message="The uvw_array does not match")
        try:
            uvd.read(str(header.path), file_type="uvh5")
        except (OSError, ValueError, KeyError) as exc:
            raise ConversionError(f"{header.path}: pyuvdata cannot read it ({exc})") from exc
    _flag_non_finite(uvd, header.path)
    _declare_meridian_phasing(uvd, math.radians(header.pointing_dec_deg))
    uvd.phase(
        lon=math.radians(centre_ra_deg),
        lat=math.radians(header.pointing_dec_deg),
        epoch="J2000",
        phase_frame="icrs",
        cat_name=field,
    )
    uvd.reorder_freqs(channel_order="freq")
    with warnings.catch_warnings():
        # Raw data are uncalibrated; pyuvdata warns that CASA may assume Jy regardless.
        warnings.filterwarnings("ignore", message="Writing in the MS file that the units")
        try:
            uvd.write_ms(str(ms_path), clobber=True)
        except ValueError as exc:
            raise ConversionError(f"{header.path}: cannot be written as an MS ({exc})") from exc
    return _Part(header=header, ms_path=ms_path)


def _flag_non_finite(uvd: UVData, path: Path) -> None:
    """Flag NaN or infinite visibilities and zero them, so tools downstream never see them.

    Raises
    ------
    ConversionError
        When no finite visibility is left: the file is useless.
    """
    bad = ~np.isfinite(uvd.data_array)
    if not bad.any():
        return
    if bad.all():
        raise ConversionError(f"{path}: every visibility is NaN or infinite")
    uvd.data_array[bad] = 0
    uvd.flag_array |= bad


def _declare_meridian_phasing(uvd: UVData, dec_rad: float) -> None:
    """Relabel the data as phased to (HA 0, pointing dec), which is what they are.

    Declared as pyuvdata's "driftscan" type (a fixed azimuth and elevation), so that
    ``phase`` removes the stored w term instead of assuming a zenith phase centre.
    """
    latitude = uvd.telescope.location.lat.rad
    north_of_zenith = dec_rad > latitude
    azimuth = 0.0 if north_of_zenith else math.pi
    elevation = math.pi / 2 - abs(dec_rad - latitude)
    for entry in uvd.phase_center_catalog.values():
        entry.update(cat_type="driftscan", cat_frame="altaz", cat_lon=azimuth, cat_lat=elevation)
    uvd.phase_center_app_ra = uvd.lst_array.copy()
    uvd.phase_center_app_dec = np.full(uvd.Nblts, dec_rad)
    uvd.phase_center_frame_pa = np.zeros(uvd.Nblts)


def _join_parts(parts: Sequence[_Part], out_ms: Path) -> None:
    """Join per-subband MSs (ascending frequency) into one MS with one spectral window."""
    opened = [tables.table(str(part.ms_path), ack=False) for part in parts]
    try:
        _check_same_rows(parts, opened)
        opened[0].copy(str(out_ms), deep=True)
        with tables.table(str(out_ms), readonly=False, ack=False) as out:
            _widen_channel_columns(out, opened)
        _write_spectral_window(out_ms, [part.ms_path for part in parts])
    finally:
        for table in opened:
            table.close()


def _check_same_rows(parts: Sequence[_Part], opened: Sequence[tables.table]) -> None:
    reference = opened[0]
    for part, table in zip(parts[1:], opened[1:], strict=True):
        for column in ("TIME", "ANTENNA1", "ANTENNA2"):
            if table.nrows() != reference.nrows() or not np.array_equal(
                table.getcol(column), reference.getcol(column)
            ):
                raise ConversionError(
                    f"{part.header.path}: rows ({column}) differ from {parts[0].header.path}"
                )


def _widen_channel_columns(out: tables.table, opened: Sequence[tables.table]) -> None:
    n_rows = out.nrows()
    first = opened[0].getcell("DATA", 0)
    n_channels = first.shape[0] * len(opened)
    n_pols = first.shape[1]
    rows_per_chunk = max(1, _JOIN_CHUNK_BYTES // (n_channels * n_pols * 8))
    rows_per_tile = max(1, 65536 // (n_channels * n_pols))
    present = [column for column in _CHANNEL_COLUMNS if column in out.colnames()]
    for column in present:
        description = out.getcoldesc(column)
        out.removecols(column)
        dminfo = {
            "TYPE": "TiledShapeStMan",
            "NAME": f"Tiled{column}",
            "SPEC": {"DEFAULTTILESHAPE": np.array([n_pols, n_channels, rows_per_tile])},
        }
        out.addcols(tables.maketabdesc(tables.makecoldesc(column, description)), dminfo)
    for start in range(0, n_rows, rows_per_chunk):
        count = min(rows_per_chunk, n_rows - start)
        for column in present:
            joined = np.concatenate(
                [table.getcol(column, start, count) for table in opened], axis=1
            )
            out.putcol(column, joined, start, count)


def _write_spectral_window(out_ms: Path, part_paths: Sequence[Path]) -> None:
    frequencies, widths = [], []
    for path in part_paths:
        with tables.table(str(path / "SPECTRAL_WINDOW"), ack=False) as spw:
            frequencies.append(spw.getcell("CHAN_FREQ", 0))
            widths.append(spw.getcell("CHAN_WIDTH", 0))
    chan_freq = np.concatenate(frequencies)
    chan_width = np.concatenate(widths)
    with tables.table(str(out_ms / "SPECTRAL_WINDOW"), readonly=False, ack=False) as spw:
        spw.putcell("NUM_CHAN", 0, chan_freq.size)
        spw.putcell("CHAN_FREQ", 0, chan_freq)
        spw.putcell("CHAN_WIDTH", 0, chan_width)
        spw.putcell("EFFECTIVE_BW", 0, np.abs(chan_width))
        spw.putcell("RESOLUTION", 0, np.abs(chan_width))
        spw.putcell("REF_FREQUENCY", 0, float(chan_freq[0]))
        spw.putcell("TOTAL_BANDWIDTH", 0, float(np.abs(chan_width).sum()))
