"""Write the FITS tiles of one imaged MS: restored image, primary beam and PB-corrected.

The tiles are written from a backend's restored image (:mod:`reconciler.io.deconvolve`)
on its grid. The primary beam is centred on the pointing, the apparent meridian (HA 0) at
the pointing dec, not on the ICRS phase centre, which is a few arcminutes away; and it is
averaged over the drift, because the dish sweeps 1.25 degrees of right ascension past the
sky during the observation (DESIGN §5).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS, FITSFixedWarning

from reconciler.io.deconvolve import DeconvolutionOutcome
from reconciler.model import Site
from reconciler.sky import SIDEREAL_DAY_S, airy_power, earth_location

if TYPE_CHECKING:
    # A type only: imaging imports this module, so a run-time import would be circular.
    from reconciler.io.imaging import MsDescription

#: Below this primary-beam response a PB-corrected tile is blank (NaN).
PBCOR_CUTOFF = 0.2
#: Primary-beam samples along the drift; the beam moves ~0.1 deg between samples.
DRIFT_SAMPLES = 8
#: Header keyword of the restored image holding the robust residual rms.
RMS_KEY = "RMS"

_SIDEREAL_DEG_PER_S = 360.0 / SIDEREAL_DAY_S
_SECONDS_PER_DAY = 86400.0


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


def write_tiles(
    outcome: DeconvolutionOutcome,
    description: MsDescription,
    pointing: tuple[float, float],
    backend: str,
    paths: dict[str, Path],
    workdir: Path,
    *,
    site: Site,
) -> None:
    """Write the image, PB and PB-corrected FITS from a backend's restored image.

    ``paths`` maps ``"image"``, ``"pb"`` and ``"pbcor"`` to the final names; each file is
    written in ``workdir`` and renamed into place, the restored image last.
    """
    with fits.open(outcome.image_fits) as hdus:
        source_header = hdus[0].header
        image = np.asarray(hdus[0].data, dtype=np.float32)
    # Both backends write degenerate frequency/Stokes axes (or none); keep the sky plane.
    image = image.reshape(image.shape[-2:])
    with warnings.catch_warnings():
        # CASA writes an OBSGEO that astropy "fixes" noisily; the tile header replaces it.
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(source_header).celestial
    header = _tile_header(wcs, source_header, outcome, description, pointing, backend, site)

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
    for key in ("BMAJ", "BMIN", "BPA", RMS_KEY):
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
    outcome: DeconvolutionOutcome,
    description: MsDescription,
    pointing: tuple[float, float],
    backend: str,
    site: Site,
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
    header[RMS_KEY] = (outcome.rms_jy, "robust (MAD) residual rms, Jy/beam")
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
    location = earth_location(site)
    header["OBSGEO-X"] = (float(location.x.to_value(u.m)), "m")
    header["OBSGEO-Y"] = (float(location.y.to_value(u.m)), "m")
    header["OBSGEO-Z"] = (float(location.z.to_value(u.m)), "m")
    header["IMAGER"] = (backend, "deconvolution backend")
    header["HISTORY"] = "imaged by reconciler.io.imaging"
    return header


def _iso(mjd_seconds: float) -> str:
    moment = Time(mjd_seconds / _SECONDS_PER_DAY, format="mjd", scale="utc")
    return moment.to_datetime(timezone=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def _unit_vectors(ra_rad: np.ndarray | float, dec_rad: np.ndarray | float) -> np.ndarray:
    cos_dec = np.cos(dec_rad)
    return np.stack([cos_dec * np.cos(ra_rad), cos_dec * np.sin(ra_rad), np.sin(dec_rad)])
