"""Image one calibrated Measurement Set into FITS tiles: restored, primary beam, PB-corrected.

The parent process decides everything from the data (cell, image size, w-planes, the
primary beam) and writes the FITS products; only the deconvolution runs in a child:

* ``tclean`` in ``python -m reconciler.io.imaging tclean '<json>'``, started with
  :func:`reconciler.io.casa.casa_environment` (CASA offline, DESIGN §5). CASA is never
  imported into the calling process.
* ``wsclean``, optional, if the binary is on ``PATH``.

The MS is described with python-casacore, imported lazily inside :func:`describe_ms`, so
that the CASA child, which imports this module too, never loads a second copy of the
casacore libraries.

Three choices matter for flux densities on a 5-minute drift snapshot (DESIGN §5):

* The restoring beam is fixed to a circle with the area of the fitted PSF beam: the
  snapshot PSF is far from Gaussian and its fit can be very elongated, which would make
  every tile, and the mosaic built from them, have a different and odd beam.
* The primary beam is centred on the pointing, the apparent meridian (HA 0) at the
  pointing dec, not on the ICRS phase centre, which is a few arcminutes away; and it is
  averaged over the drift, because the dish sweeps 1.25 degrees of right ascension past
  the sky during the observation.
* w-projection is needed: at 1 degree from the centre the w term of the 1.5 km
  north-south baselines is several radians.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from astropy import units as u
from astropy.coordinates import ICRS, HADec, SkyCoord
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS, FITSFixedWarning

from reconciler.io.casa import casa_environment
from reconciler.sky import DSA110, SIDEREAL_DAY_S, SPEED_OF_LIGHT_M_S, airy_power

Backend = Literal["tclean", "wsclean"]

#: Pixels across the finest resolution, lambda_min / B_max (about 4.5 across the beam).
PIXELS_PER_RESOLUTION = 4.0
#: Below this primary-beam response a PB-corrected tile is blank (NaN).
PBCOR_CUTOFF = 0.2
#: Briggs robustness: between natural (broad beam) and uniform (high sidelobes).
ROBUST = 0.0
#: tclean's default cyclefactor (1) on a snapshot PSF, whose sidelobes reach ~0.8, ends a
#: minor cycle after a handful of components: ~30 major cycles. 0.25 needs ~5, and gave
#: the same fluxes to 0.5 % on simulated snapshots.
CYCLE_FACTOR = 0.25
#: Primary-beam samples along the drift; the beam moves ~0.1 deg between samples.
DRIFT_SAMPLES = 8
#: Seconds the deconvolution may take before the child is killed.
DEFAULT_TIMEOUT_S = 3600.0

_ARCSEC_PER_RAD = 180.0 / math.pi * 3600.0
_SIDEREAL_DEG_PER_S = 360.0 / SIDEREAL_DAY_S
_SECONDS_PER_DAY = 86400.0
_RMS_KEY = "RMS"


class ImagingError(RuntimeError):
    """Imaging failed or produced no usable image; the message names the MS."""


@dataclass(frozen=True)
class ImageResult:
    """The FITS products of one imaged MS and their figures.

    ``image_path`` is the restored image (apparent brightness, Jy/beam), ``pb_path`` the
    primary beam on the same grid, ``pbcor_path`` their ratio (blank where the beam is
    below :data:`PBCOR_CUTOFF`). ``rms_jy`` is the robust (MAD) rms of the residual.
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
        pointing = pointing_icrs(mid, description.phase_centre_dec_deg)

    prefix.parent.mkdir(parents=True, exist_ok=True)
    workdir = prefix.with_name(f".{prefix.name}.work-{os.getpid()}")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    try:
        job = _Deconvolution(
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
        run = _run_tclean_child if backend == "tclean" else _run_wsclean
        outcome = run(job, timeout_s)
        _write_products(outcome, description, pointing, backend, paths, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = _existing_result(paths)
    if result is None:
        raise ImagingError(f"{ms}: imaging wrote no valid products at {prefix}")
    return result


def pointing_icrs(mid_time: datetime, pointing_dec_deg: float) -> tuple[float, float]:
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
    frame = HADec(obstime=Time(mid_time.astimezone(UTC)), location=DSA110.earth_location())
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


def circular_beam(major_arcsec: float, minor_arcsec: float) -> tuple[float, float, float]:
    """Return the circular beam (FWHM, FWHM, 0) with the area of an elliptical one."""
    fwhm = round(math.sqrt(major_arcsec * minor_arcsec), 3)
    return fwhm, fwhm, 0.0


def drift_primary_beam(
    wcs: WCS,
    shape: tuple[int, int],
    pointing: tuple[float, float],
    offsets_s: Sequence[float],
    frequency_hz: float,
) -> np.ndarray:
    """Return the Airy primary beam averaged along a meridian drift, on an image grid.

    At ``offsets_s`` seconds from the moment of ``pointing`` the dish points at the same
    dec and at an RA larger by the sidereal rate times the offset (over minutes the
    pointing's ICRS dec changes by far less than an arcsecond).

    Parameters
    ----------
    wcs, shape
        Celestial WCS and (ny, nx) shape of the image.
    pointing
        ICRS (RA, Dec) of the pointing, degrees.
    offsets_s
        Sample times relative to the pointing's moment, seconds.
    frequency_hz
        Frequency at which the beam is evaluated.
    """
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx]
    ra, dec = wcs.pixel_to_world_values(x, y)
    pixels = _unit_vectors(np.radians(ra), np.radians(dec))
    total = np.zeros(shape)
    for offset in offsets_s:
        centre = _unit_vectors(
            np.radians(pointing[0] + _SIDEREAL_DEG_PER_S * offset), np.radians(pointing[1])
        )
        # The chord gives the angle accurately at every scale, unlike arccos of a dot.
        chord = np.sqrt(np.sum((pixels - centre[:, None, None]) ** 2, axis=0))
        total += airy_power(2.0 * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0)), frequency_hz)
    beam = total / len(offsets_s)
    # Outside the sky of a SIN projection there are no pixels to correct.
    return np.where(np.isfinite(ra) & np.isfinite(dec), beam, 0.0)


def describe_ms(ms: Path | str) -> MsDescription:
    """Read what imaging needs from an MS with python-casacore. Not for CASA children.

    Raises
    ------
    ImagingError
        If the MS is missing, unreadable or has no cross-correlations.
    """
    from casacore import tables

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


@dataclass(frozen=True)
class _Deconvolution:
    """One deconvolution job, as plain data so that it crosses to a child as JSON."""

    ms: str
    workdir: str
    data_column: str
    size: int
    cell_arcsec: float
    w_planes: int
    niter: int
    threshold_jy: float
    restoring_beam: tuple[float, float, float] | None


@dataclass(frozen=True)
class _Outcome:
    """What a backend leaves behind: a restored image FITS and figures."""

    image_fits: str
    psf_beam: tuple[float, float, float]
    restoring_beam: tuple[float, float, float]
    rms_jy: float
    cell_arcsec: float
    size: int


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
    required = ("BMAJ", "BMIN", "BPA", _RMS_KEY, "CDELT2", "NAXIS1", "DATE-OBS")
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
        rms_jy=float(image[_RMS_KEY]),
        cell_arcsec=round(abs(float(image["CDELT2"])) * 3600.0, 6),
        image_size=int(image["NAXIS1"]),
    )


def _write_products(
    outcome: _Outcome,
    description: MsDescription,
    pointing: tuple[float, float],
    backend: str,
    paths: dict[str, Path],
    workdir: Path,
) -> None:
    """Write the image, PB and PB-corrected FITS from a backend's restored image."""
    with fits.open(outcome.image_fits) as hdus:
        source_header = hdus[0].header
        image = np.asarray(hdus[0].data, dtype=np.float32)
    # Both backends write degenerate frequency/Stokes axes (or none); keep the sky plane.
    image = image.reshape(image.shape[-2:])
    with warnings.catch_warnings():
        # CASA writes an OBSGEO that astropy "fixes" noisily; the tile header replaces it.
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(source_header).celestial
    header = _tile_header(wcs, source_header, outcome, description, pointing, backend)

    mid_s = (description.start_s + description.end_s) / 2.0
    times = np.asarray(description.integration_times_s)
    samples = np.linspace(times.min(), times.max(), min(DRIFT_SAMPLES, times.size))
    beam = drift_primary_beam(
        wcs, image.shape, pointing, samples - mid_s, description.freq_mean_hz
    ).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        corrected = np.where(beam >= PBCOR_CUTOFF, image / beam, np.nan).astype(np.float32)

    pb_header = header.copy()
    pb_header["BUNIT"] = ""
    pb_header["BTYPE"] = "Beam"
    for key in ("BMAJ", "BMIN", "BPA", _RMS_KEY):
        del pb_header[key]
    pbcor_header = header.copy()
    pbcor_header["BUNIT"] = ("Jy/beam", "PB-corrected brightness")
    pbcor_header["PBCUT"] = (PBCOR_CUTOFF, "blank where the primary beam is below this")
    # The restored image goes last: its presence is what says "complete" to a reader.
    for kind, data, hdr in (
        ("pb", beam, pb_header),
        ("pbcor", corrected, pbcor_header),
        ("image", image, header),
    ):
        partial = workdir / f"{kind}.fits"
        fits.PrimaryHDU(data=data, header=hdr).writeto(partial, overwrite=True)
        os.replace(partial, paths[kind])


def _tile_header(
    wcs: WCS,
    source: fits.Header,
    outcome: _Outcome,
    description: MsDescription,
    pointing: tuple[float, float],
    backend: str,
) -> fits.Header:
    header = wcs.to_header()
    # Drop keywords astropy derives from the source header's dates; set ours below.
    for key in ("MJD-OBS", "MJDREF", "DATE-OBS", "DATE-END", "MJD-END", "TIMESYS"):
        header.remove(key, ignore_missing=True)
    header["BUNIT"] = ("Jy/beam", "apparent brightness (not PB-corrected)")
    header["BTYPE"] = "Intensity"
    major, minor, angle = outcome.restoring_beam
    header["BMAJ"] = (major / 3600.0, "restoring beam major FWHM, deg")
    header["BMIN"] = (minor / 3600.0, "restoring beam minor FWHM, deg")
    header["BPA"] = (angle, "restoring beam position angle, deg")
    header["PSFMAJ"] = (outcome.psf_beam[0] / 3600.0, "fitted PSF major FWHM, deg")
    header["PSFMIN"] = (outcome.psf_beam[1] / 3600.0, "fitted PSF minor FWHM, deg")
    header["PSFPA"] = (outcome.psf_beam[2], "fitted PSF position angle, deg")
    header[_RMS_KEY] = (outcome.rms_jy, "robust (MAD) residual rms, Jy/beam")
    header["FREQ"] = (description.freq_mean_hz, "mean frequency of the data, Hz")
    header["BANDWID"] = (description.freq_max_hz - description.freq_min_hz, "Hz")
    header["TIMESYS"] = "UTC"
    header["DATE-OBS"] = _iso(description.start_s)
    header["DATE-END"] = _iso(description.end_s)
    header["MJD-OBS"] = description.start_s / _SECONDS_PER_DAY
    header["MJD-END"] = description.end_s / _SECONDS_PER_DAY
    header["PNT-RA"] = (pointing[0], "pointing ICRS RA at mid-observation, deg")
    header["PNT-DEC"] = (pointing[1], "pointing ICRS Dec at mid-observation, deg")
    header["TELESCOP"] = "DSA-110"
    header["OBJECT"] = str(source.get("OBJECT", ""))
    # CASA writes an array-relative OBSGEO; the site's ITRS position replaces it (wcslib
    # derives OBSGEO-L/B/H from it on its own ellipsoid, 3 m off WGS84: not written).
    site = DSA110.earth_location()
    header["OBSGEO-X"] = (float(site.x.to_value(u.m)), "m")
    header["OBSGEO-Y"] = (float(site.y.to_value(u.m)), "m")
    header["OBSGEO-Z"] = (float(site.z.to_value(u.m)), "m")
    header["IMAGER"] = (backend, "deconvolution backend")
    header["HISTORY"] = "imaged by reconciler.io.imaging"
    return header


def _iso(mjd_seconds: float) -> str:
    return _mjd_seconds_to_datetime(mjd_seconds).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def _mjd_seconds_to_datetime(seconds: float) -> datetime:
    moment = Time(seconds / _SECONDS_PER_DAY, format="mjd", scale="utc")
    return moment.to_datetime(timezone=UTC)


def _unit_vectors(ra_rad: np.ndarray | float, dec_rad: np.ndarray | float) -> np.ndarray:
    cos_dec = np.cos(dec_rad)
    return np.stack([cos_dec * np.cos(ra_rad), cos_dec * np.sin(ra_rad), np.sin(dec_rad)])


def _robust_rms(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(finite - np.median(finite))))


def _run_tclean_child(job: _Deconvolution, timeout_s: float) -> _Outcome:
    """Run :func:`_tclean` in a child process with CASA's offline environment."""
    log = Path(job.workdir) / "casa.log"
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "reconciler.io.imaging", "tclean", json.dumps(asdict(job))],
            env={**os.environ, **casa_environment(log)},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            cwd=job.workdir,
        )
    except subprocess.TimeoutExpired as exc:
        raise ImagingError(f"{job.ms}: tclean took longer than {timeout_s:.0f} s") from exc
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        raise ImagingError(
            f"{job.ms}: tclean child failed (exit {completed.returncode}): "
            f"{completed.stderr[-2000:]}"
        )
    reply = json.loads(lines[-1])
    return _Outcome(**{**reply, "psf_beam": tuple(reply["psf_beam"])})


def _tclean(job: _Deconvolution) -> _Outcome:
    """Clean, restore with a fixed beam, export FITS. Runs only in a CASA child."""
    import casatools
    from casatasks import exportfits, tclean

    imagename = str(Path(job.workdir) / "tile")
    common: dict[str, Any] = {
        "vis": job.ms,
        "imagename": imagename,
        "datacolumn": "corrected" if job.data_column == "CORRECTED_DATA" else "data",
        "imsize": [job.size, job.size],
        "cell": f"{job.cell_arcsec}arcsec",
        "stokes": "I",
        "specmode": "mfs",
        "gridder": "wproject",
        "wprojplanes": job.w_planes,
        "deconvolver": "hogbom",
        "weighting": "briggs",
        "robust": ROBUST,
        "cyclefactor": CYCLE_FACTOR,
        # No CASA primary beam: it knows no DSA-110 dish; ours is written by the parent.
        "pblimit": -1.0,
    }
    tclean(
        **common,
        niter=job.niter,
        threshold=f"{job.threshold_jy}Jy",
        restoration=False,
    )
    image = casatools.image()
    try:
        image.open(f"{imagename}.psf")
        psf_beam = _beam_tuple(image.restoringbeam())
        image.close()
        beam = job.restoring_beam or circular_beam(psf_beam[0], psf_beam[1])
        # Restoration only: reuses the model and residual, no gridding.
        tclean(
            **common,
            niter=0,
            calcpsf=False,
            calcres=False,
            restart=True,
            restoration=True,
            restoringbeam=[f"{beam[0]}arcsec", f"{beam[1]}arcsec", f"{beam[2]}deg"],
        )
        image.open(f"{imagename}.residual")
        rms = _robust_rms(np.asarray(image.getchunk()))
        image.close()
    finally:
        image.done()
    if not Path(f"{imagename}.image").is_dir():
        raise ImagingError(f"{job.ms}: tclean wrote no restored image")
    fits_path = str(Path(job.workdir) / "tile.image.fits")
    exportfits(imagename=f"{imagename}.image", fitsimage=fits_path, dropdeg=True, overwrite=True)
    return _Outcome(
        image_fits=fits_path,
        psf_beam=psf_beam,
        restoring_beam=tuple(beam),
        rms_jy=rms,
        cell_arcsec=job.cell_arcsec,
        size=job.size,
    )


def _beam_tuple(beam: dict[str, Any]) -> tuple[float, float, float]:
    """(major arcsec, minor arcsec, PA deg) from a casatools beam record."""
    major = (beam["major"]["value"] * u.Unit(beam["major"]["unit"])).to_value(u.arcsec)
    minor = (beam["minor"]["value"] * u.Unit(beam["minor"]["unit"])).to_value(u.arcsec)
    angle = (beam["positionangle"]["value"] * u.Unit(beam["positionangle"]["unit"])).to_value(u.deg)
    return float(major), float(minor), float(angle)


def _run_wsclean(job: _Deconvolution, timeout_s: float) -> _Outcome:
    """Image with WSClean: a PSF-only pass for the beam fit, then clean with a fixed beam."""
    name = str(Path(job.workdir) / "tile")
    common = [
        "wsclean",
        "-name",
        name,
        "-size",
        str(job.size),
        str(job.size),
        "-scale",
        f"{job.cell_arcsec}asec",
        "-weight",
        "briggs",
        str(ROBUST),
        "-pol",
        "I",
        "-data-column",
        job.data_column,
        # Explicit: sources a degree from the centre need w-correction (DESIGN §5).
        "-nwlayers",
        str(job.w_planes),
    ]
    beam = job.restoring_beam
    psf_beam: tuple[float, float, float] | None = None
    if beam is None:
        _run_command([*common, "-make-psf-only", job.ms], job.ms, timeout_s)
        psf_beam = _fits_beam(f"{name}-psf.fits")
        beam = circular_beam(psf_beam[0], psf_beam[1])
    clean = [
        *common,
        "-niter",
        str(job.niter),
        "-threshold",
        str(job.threshold_jy),
        "-mgain",
        "0.8",
        # Without a mask WSClean does not converge on a snapshot PSF (DESIGN §5).
        "-auto-mask",
        "3",
        "-beam-shape",
        f"{beam[0]}asec",
        f"{beam[1]}asec",
        f"{beam[2]}deg",
        job.ms,
    ]
    _run_command(clean, job.ms, timeout_s)
    with fits.open(f"{name}-residual.fits") as hdus:
        rms = _robust_rms(np.asarray(hdus[0].data))
    return _Outcome(
        image_fits=f"{name}-image.fits",
        psf_beam=psf_beam or _fits_beam(f"{name}-psf.fits"),
        restoring_beam=tuple(beam),
        rms_jy=rms,
        cell_arcsec=job.cell_arcsec,
        size=job.size,
    )


def _run_command(command: list[str], ms: str, timeout_s: float) -> None:
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ImagingError(f"{ms}: {command[0]} took longer than {timeout_s:.0f} s") from exc
    if completed.returncode != 0:
        raise ImagingError(
            f"{ms}: {command[0]} failed (exit {completed.returncode}): {completed.stderr[-2000:]}"
        )


def _fits_beam(path: str) -> tuple[float, float, float]:
    header = fits.getheader(path)
    return header["BMAJ"] * 3600.0, header["BMIN"] * 3600.0, float(header["BPA"])


def _main(argv: Sequence[str]) -> int:
    """``python -m reconciler.io.imaging tclean '<json job>'``: print the outcome as JSON."""
    if len(argv) != 2 or argv[0] != "tclean":
        print(_main.__doc__, file=sys.stderr)
        return 2
    arguments = json.loads(argv[1])
    if arguments["restoring_beam"] is not None:
        arguments["restoring_beam"] = tuple(arguments["restoring_beam"])
    print(json.dumps(asdict(_tclean(_Deconvolution(**arguments)))))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
