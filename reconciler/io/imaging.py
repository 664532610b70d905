"""Image one calibrated Measurement Set into FITS tiles: restored, primary beam, PB-corrected.

The parent process decides everything from the data (cell, image size, w-planes, the
pointing) here; :mod:`reconciler.io.deconvolve` runs the deconvolution (tclean in a CASA
child, or WSClean) and :mod:`reconciler.io.tiles` writes the FITS products with the
primary beam.

Three choices matter for flux densities on a 5-minute drift snapshot (DESIGN §5): a
fixed circular restoring beam (see :mod:`reconciler.io.deconvolve`), a primary beam
centred on the pointing and averaged over the drift (see :mod:`reconciler.io.tiles`),
and w-projection, chosen here: at 1 degree from the centre the w term of the 1.5 km
north-south baselines is several radians.
"""

from __future__ import annotations

import math
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from astropy import units as u
from astropy.coordinates import ICRS, HADec, SkyCoord
from astropy.io import fits
from astropy.time import Time
from casacore import tables

from reconciler.io.deconvolve import (
    DeconvolutionError,
    DeconvolutionJob,
    run_tclean_child,
    run_wsclean,
)
from reconciler.io.tiles import RMS_KEY, write_tiles
from reconciler.model import Site
from reconciler.naming import attempt_path
from reconciler.sky import DSA110, SPEED_OF_LIGHT_M_S, earth_location

Backend = Literal["tclean", "wsclean"]

#: Pixels across the finest resolution, lambda_min / B_max (about 4.5 across the beam).
PIXELS_PER_RESOLUTION = 4.0
#: Seconds the deconvolution may take before the child is killed.
DEFAULT_TIMEOUT_S = 3600.0

_ARCSEC_PER_RAD = 180.0 / math.pi * 3600.0
_SECONDS_PER_DAY = 86400.0


class ImagingError(RuntimeError):
    """Imaging failed or produced no usable image; the message names the MS."""


@dataclass(frozen=True)
class ImageResult:
    """The FITS products of one imaged MS and their figures.

    ``image_path`` is the restored image (apparent brightness, Jy/beam), ``pb_path`` the
    primary beam on the same grid, ``pbcor_path`` their ratio (blank where the beam is
    below :data:`reconciler.io.tiles.PBCOR_CUTOFF`). ``rms_jy`` is the robust (MAD) rms
    of the residual.
    """

    image_path: Path
    pb_path: Path
    pbcor_path: Path
    beam_major_arcsec: float
    beam_minor_arcsec: float
    beam_pa_deg: float
    rms_jy: float
    cell_arcsec: float
    image_size: int


@dataclass(frozen=True)
class MsDescription:
    """What imaging needs to know about an MS (times are UTC MJD seconds)."""

    max_baseline_m: float
    max_w_m: float
    freq_min_hz: float
    freq_max_hz: float
    freq_mean_hz: float
    integration_times_s: tuple[float, ...]
    start_s: float
    end_s: float
    phase_centre_ra_deg: float
    phase_centre_dec_deg: float
    data_column: str


def image_measurement_set(
    ms: Path | str,
    out_prefix: Path | str,
    *,
    field_of_view_deg: float,
    backend: Backend = "tclean",
    niter: int,
    threshold_jy: float,
    restoring_beam: tuple[float, float, float] | None = None,
    pointing: tuple[float, float] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    site: Site = DSA110,
    attempt: str = "",
) -> ImageResult:
    """Image one MS into restored, primary-beam and PB-corrected FITS tiles.

    The outputs are ``<out_prefix>.image.fits``, ``.pb.fits`` and ``.pbcor.fits``. Each
    is written under a temporary name and renamed into place; if all three already exist
    and parse, nothing is redone and their figures are returned.

    Parameters
    ----------
    ms
        Calibrated MS; its CORRECTED_DATA column is imaged if present, else DATA.
    out_prefix
        Path prefix of the products.
    field_of_view_deg
        Side of the square image, degrees. The cell is a quarter of lambda / B_max at the
        highest frequency; the size is rounded up to an even 5-smooth (fast FFT) number.
    backend
        ``"tclean"`` (CASA, in a child process) or ``"wsclean"`` (needs ``wsclean`` on
        ``PATH``).
    niter, threshold_jy
        Clean stops after ``niter`` components or at ``threshold_jy`` peak residual.
    restoring_beam
        (major arcsec, minor arcsec, position angle deg); default a circle with the area
        of the fitted PSF beam.
    pointing
        ICRS (RA, Dec) in degrees where the dish points at mid-observation; default
        :func:`pointing_icrs` at the MS mid-time and phase-centre dec (the converter
        sets the phase-centre dec to the pointing dec).
    timeout_s
        The deconvolution is killed after this many seconds.
    site
        Where the array is: the pointing and the tiles' OBSGEO follow from it.
    attempt
        This attempt's token: its working directory (the backend's files and the tiles
        before they are renamed into place) carries it. Default: a fresh one.

    Returns
    -------
    ImageResult

    Raises
    ------
    ImagingError
        If the MS cannot be read, the backend is unavailable, or it fails.
    """
    prefix = Path(out_prefix)
    paths = _product_paths(prefix)
    existing = _existing_result(paths)
    if existing is not None:
        return existing
    if backend not in ("tclean", "wsclean"):
        raise ImagingError(f"{ms}: unknown imaging backend {backend!r}")
    if backend == "wsclean" and shutil.which("wsclean") is None:
        raise ImagingError(f"{ms}: backend 'wsclean' chosen but no wsclean on PATH")
    description = describe_ms(ms)
    cell_arcsec, size = choose_grid(
        description.max_baseline_m, description.freq_max_hz, field_of_view_deg
    )
    half_diagonal_rad = math.radians(cell_arcsec / 3600.0) * size / math.sqrt(2.0)
    w_planes = w_projection_planes(
        description.max_w_m * description.freq_max_hz / SPEED_OF_LIGHT_M_S, half_diagonal_rad
    )
    if pointing is None:
        mid = _mjd_seconds_to_datetime((description.start_s + description.end_s) / 2.0)
        pointing = pointing_icrs(mid, description.phase_centre_dec_deg, site=site)

    prefix.parent.mkdir(parents=True, exist_ok=True)
    workdir = attempt_path(prefix, attempt or uuid.uuid4().hex)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    try:
        job = DeconvolutionJob(
            ms=str(ms),
            workdir=str(workdir),
            data_column=description.data_column,
            size=size,
            cell_arcsec=cell_arcsec,
            w_planes=w_planes,
            niter=niter,
            threshold_jy=threshold_jy,
            restoring_beam=restoring_beam,
        )
        run = run_tclean_child if backend == "tclean" else run_wsclean
        try:
            outcome = run(job, timeout_s)
        except DeconvolutionError as exc:
            raise ImagingError(str(exc)) from exc
        write_tiles(outcome, description, pointing, backend, paths, workdir, site=site)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = _existing_result(paths)
    if result is None:
        raise ImagingError(f"{ms}: imaging wrote no valid products at {prefix}")
    return result


def pointing_icrs(
    mid_time: datetime, pointing_dec_deg: float, *, site: Site = DSA110
) -> tuple[float, float]:
    """Return the ICRS (RA, Dec) in degrees where a meridian-pointed dish points.

    The dish points at apparent hour angle 0 and apparent (topocentric, no refraction)
    declination ``pointing_dec_deg``; in ICRS that is a few arcminutes from the phase
    centre the converter uses (ICRS dec = pointing dec), by precession and aberration.

    Parameters
    ----------
    mid_time
        Timezone-aware moment, normally mid-observation.
    pointing_dec_deg
        The pointing declination of the dec strip, degrees.
    """
    if mid_time.tzinfo is None:
        raise ValueError(f"mid_time must be timezone-aware, got {mid_time!r}")
    frame = HADec(obstime=Time(mid_time.astimezone(UTC)), location=earth_location(site))
    apparent = SkyCoord(ha=0.0 * u.deg, dec=pointing_dec_deg * u.deg, frame=frame)
    icrs = apparent.transform_to(ICRS())
    return float(icrs.ra.deg), float(icrs.dec.deg)


def choose_grid(
    max_baseline_m: float,
    max_frequency_hz: float,
    field_of_view_deg: float,
    pixels_per_resolution: float = PIXELS_PER_RESOLUTION,
) -> tuple[float, int]:
    """Return (cell arcsec, image side in pixels) for a resolution and a field of view.

    The cell samples lambda / B_max at the highest frequency with
    ``pixels_per_resolution`` pixels (rounded down to 0.01 arcsec); the side covers
    ``field_of_view_deg`` and is rounded up to an even 5-smooth number, which FFTs fast.
    """
    if max_baseline_m <= 0 or max_frequency_hz <= 0 or field_of_view_deg <= 0:
        raise ValueError("baseline, frequency and field of view must be positive")
    resolution_arcsec = SPEED_OF_LIGHT_M_S / max_frequency_hz / max_baseline_m * _ARCSEC_PER_RAD
    cell = math.floor(resolution_arcsec / pixels_per_resolution * 100.0) / 100.0
    return cell, fast_fft_size(math.ceil(field_of_view_deg * 3600.0 / cell))


def fast_fft_size(minimum: int) -> int:
    """Return the smallest even number >= ``minimum`` with no prime factor above 5."""
    size = max(2, minimum + minimum % 2)
    while True:
        remainder = size
        for factor in (2, 3, 5):
            while remainder % factor == 0:
                remainder //= factor
        if remainder == 1:
            return size
        size += 2


def w_projection_planes(max_w_wavelengths: float, half_diagonal_rad: float) -> int:
    """Return the number of w-planes (or WSClean w-layers) for a field.

    The w term's phase at angle theta from the centre is about ``pi w theta**2``. Six
    planes per radian of it over the field, at least 16: measured on a simulated
    snapshot (6 rad over the field), 14 planes lost 2-3 % of the flux of sources a degree
    out, 32 recovered it, and 64 or 128 changed nothing.
    """
    phase_range = math.pi * max_w_wavelengths * half_diagonal_rad**2
    return max(16, math.ceil(6.0 * phase_range))


def describe_ms(ms: Path | str) -> MsDescription:
    """Read what imaging needs from an MS with python-casacore. Not for CASA children.

    Raises
    ------
    ImagingError
        If the MS is missing, unreadable or has no cross-correlations.
    """
    ms = str(ms)
    if not Path(ms).is_dir():
        raise ImagingError(f"{ms}: no Measurement Set there")
    try:
        with tables.table(ms, ack=False) as main:
            uvw = main.getcol("UVW")
            cross = main.getcol("ANTENNA1") != main.getcol("ANTENNA2")
            times = main.getcol("TIME")
            intervals = main.getcol("INTERVAL")
            column = "CORRECTED_DATA" if "CORRECTED_DATA" in main.colnames() else "DATA"
        with tables.table(f"{ms}/SPECTRAL_WINDOW", ack=False) as spw:
            frequencies = np.concatenate(
                [spw.getcell("CHAN_FREQ", row) for row in range(spw.nrows())]
            )
        with tables.table(f"{ms}/FIELD", ack=False) as field:
            phase_dir = field.getcol("PHASE_DIR")
    except RuntimeError as exc:
        raise ImagingError(f"{ms}: unreadable Measurement Set ({exc})") from exc
    if not cross.any():
        raise ImagingError(f"{ms}: no cross-correlations to image")
    baselines = np.hypot(uvw[cross, 0], uvw[cross, 1])
    return MsDescription(
        max_baseline_m=float(baselines.max()),
        max_w_m=float(np.abs(uvw[cross, 2]).max()),
        freq_min_hz=float(frequencies.min()),
        freq_max_hz=float(frequencies.max()),
        freq_mean_hz=float(frequencies.mean()),
        integration_times_s=tuple(float(t) for t in np.unique(times)),
        start_s=float(np.min(times - intervals / 2.0)),
        end_s=float(np.max(times + intervals / 2.0)),
        phase_centre_ra_deg=float(np.degrees(phase_dir[0, 0, 0]) % 360.0),
        phase_centre_dec_deg=float(np.degrees(phase_dir[0, 0, 1])),
        data_column=column,
    )


def _product_paths(prefix: Path) -> dict[str, Path]:
    return {
        kind: prefix.with_name(f"{prefix.name}.{kind}.fits") for kind in ("image", "pb", "pbcor")
    }


def _existing_result(paths: dict[str, Path]) -> ImageResult | None:
    """Return the figures of complete products, or None if any is missing or broken."""
    try:
        headers = {kind: fits.getheader(path) for kind, path in paths.items()}
    except (OSError, ValueError):
        return None
    image = headers["image"]
    required = ("BMAJ", "BMIN", "BPA", RMS_KEY, "CDELT2", "NAXIS1", "DATE-OBS")
    if any(key not in image for key in required):
        return None
    shape = (image["NAXIS1"], image["NAXIS2"])
    if any((h.get("NAXIS1"), h.get("NAXIS2")) != shape for h in headers.values()):
        return None
    return ImageResult(
        image_path=paths["image"],
        pb_path=paths["pb"],
        pbcor_path=paths["pbcor"],
        beam_major_arcsec=float(image["BMAJ"]) * 3600.0,
        beam_minor_arcsec=float(image["BMIN"]) * 3600.0,
        beam_pa_deg=float(image["BPA"]),
        rms_jy=float(image[RMS_KEY]),
        cell_arcsec=round(abs(float(image["CDELT2"])) * 3600.0, 6),
        image_size=int(image["NAXIS1"]),
    )


def _mjd_seconds_to_datetime(seconds: float) -> datetime:
    moment = Time(seconds / _SECONDS_PER_DAY, format="mjd", scale="utc")
    return moment.to_datetime(timezone=UTC)
