"""Forced photometry on a mosaic: the flux density of a point source at a known position,
whether or not the source finder found anything there.

The flux is the amplitude of the restoring beam, centred on the position, fitted by least
squares to the pixels within one beam FWHM of it (for a point source, its peak brightness
read between pixels); its error is the background rms map's value at the position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from reconciler.association import SkyBox

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass(frozen=True)
class ForcedFlux:
    """A point source's fitted peak brightness and its error, Jy/beam."""

    flux_jy: float
    flux_err_jy: float


def beam_major_arcsec(mosaic: Path) -> float:
    """The restoring beam's major-axis FWHM of a mosaic (header ``BMAJ``), arcseconds."""
    return float(fits.getheader(mosaic)["BMAJ"]) * 3600.0


def mosaic_sky_box(mosaic: Path, margin_beams: float) -> SkyBox:
    """The part of the sky a mosaic's grid covers (its border pixels), widened by
    ``margin_beams`` restoring-beam major axes.

    Raises
    ------
    KeyError
        When the header has no restoring beam (``BMAJ``).
    """
    header = fits.getheader(mosaic)
    margin_deg = margin_beams * float(header["BMAJ"])
    wcs = WCS(header).celestial
    ny, nx = int(header["NAXIS2"]), int(header["NAXIS1"])
    xs = np.concatenate([np.arange(nx), np.arange(nx), np.zeros(ny), np.full(ny, nx - 1)])
    ys = np.concatenate([np.zeros(nx), np.full(nx, ny - 1), np.arange(ny), np.arange(ny)])
    ras, decs = wcs.pixel_to_world_values(xs, ys)
    inside = np.isfinite(ras) & np.isfinite(decs)
    return SkyBox.around(list(ras[inside]), list(decs[inside]), margin_deg)


def forced_photometry(
    mosaic: Path, rms_map: Path, positions: Sequence[tuple[float, float]]
) -> list[ForcedFlux | None]:
    """The beam-weighted flux at each (RA, Dec) in degrees, in order; None where the
    position is off the mosaic or on a blank (NaN) pixel of it or of the rms map."""
    with fits.open(mosaic) as hdus:
        header = hdus[0].header
        image = np.asarray(hdus[0].data, dtype=np.float64).squeeze()
    with fits.open(rms_map) as hdus:
        rms = np.asarray(hdus[0].data, dtype=np.float64).squeeze()
    wcs = WCS(header).celestial
    if not positions:
        return []
    xs, ys = wcs.world_to_pixel_values(
        np.array([p[0] for p in positions]), np.array([p[1] for p in positions])
    )
    beam = _BeamOnPixels(header, wcs)
    return [beam.fit(image, rms, float(x), float(y)) for x, y in zip(xs, ys, strict=True)]


class _BeamOnPixels:
    """The restoring beam as a function of pixel offsets (the grid's local scale and
    orientation at the reference pixel: a beam is small against the curvature of a SIN
    projection over a mosaic)."""

    def __init__(self, header: fits.Header, wcs: WCS) -> None:
        self.matrix = wcs.pixel_scale_matrix  # degrees of (east, north) per pixel
        self.sigma_major = float(header["BMAJ"]) / _FWHM_PER_SIGMA
        self.sigma_minor = float(header["BMIN"]) / _FWHM_PER_SIGMA
        self.pa = math.radians(float(header.get("BPA", 0.0)))
        self.half_width = math.ceil(float(header["BMAJ"]) / min(proj_plane_pixel_scales(wcs)))

    def fit(self, image: np.ndarray, rms: np.ndarray, x: float, y: float) -> ForcedFlux | None:
        ny, nx = image.shape
        xi, yi = round(x), round(y)
        if not (0 <= xi < nx and 0 <= yi < ny):
            return None
        if not (np.isfinite(image[yi, xi]) and np.isfinite(rms[yi, xi]) and rms[yi, xi] > 0):
            return None
        w = self.half_width
        rows = slice(max(yi - w, 0), min(yi + w + 1, ny))
        columns = slice(max(xi - w, 0), min(xi + w + 1, nx))
        py, px = np.mgrid[rows, columns]
        east, north = np.tensordot(self.matrix, np.array([px - x, py - y]), axes=1)
        along = east * math.sin(self.pa) + north * math.cos(self.pa)
        across = east * math.cos(self.pa) - north * math.sin(self.pa)
        template = np.exp(
            -0.5 * ((along / self.sigma_major) ** 2 + (across / self.sigma_minor) ** 2)
        )
        data = image[rows, columns]
        # Within one FWHM of the position, where the beam says most about the amplitude.
        use = np.isfinite(data) & (template >= 0.5**4)
        amplitude = float(np.sum(data[use] * template[use]) / np.sum(template[use] ** 2))
        return ForcedFlux(flux_jy=amplitude, flux_err_jy=float(rms[yi, xi]))
