"""The footprint of a mosaic on the sky: the HEALPix cells whose centres fall on one of its
non-blank pixels (blanked pixels, NaN, are outside; so is everything off the image)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from reconciler.sky import angular_separation_deg
from reconciler.skycells import FOOTPRINT_ORDER, cell_centres, cells_near, healpix

#: Points sampled along each edge of the image to find the cone that holds it.
_EDGE_SAMPLES = 64


class FootprintError(ValueError):
    """The file is not a FITS image (its bytes are not FITS)."""


def footprint_of(path: Path) -> np.ndarray:
    """The cells of ``FOOTPRINT_ORDER`` (sorted int64) whose centres fall on a finite pixel
    of the FITS image at ``path``; empty when it has no celestial WCS.

    Raises
    ------
    FootprintError
        When the file is not FITS.
    OSError
        When the file cannot be read.
    """
    try:
        hdus = fits.open(path, memmap=True)
    except OSError as exc:
        if exc.errno is not None:  # the file system's error, not the bytes'
            raise
        raise FootprintError(f"{path} is not a FITS image: {exc}") from exc
    with hdus:
        header = hdus[0].header
        data = hdus[0].data
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header).celestial
        if data is None or not wcs.has_celestial:
            return np.empty(0, dtype=np.int64)
        image = np.asarray(data).reshape(data.shape[-2:]) if data.ndim > 2 else data
        return _cells_on(image, wcs)


def _cells_on(image: np.ndarray, wcs: WCS) -> np.ndarray:
    """The cells whose centres fall on finite pixels of ``image`` (celestial ``wcs``)."""
    ny, nx = image.shape
    ra0, dec0 = wcs.pixel_to_world_values((nx - 1) / 2, (ny - 1) / 2)
    xs, ys = _edge_pixels(nx, ny)
    ras, decs = wcs.pixel_to_world_values(xs, ys)
    reach = float(np.nanmax(angular_separation_deg(ra0, dec0, ras, decs)))
    # Half a cell more: a cell whose centre is on the image may overhang the cone's edge.
    reach += healpix(FOOTPRINT_ORDER).pixel_resolution.to_value("deg")
    cells = cells_near(float(ra0), float(dec0), min(reach, 180.0), FOOTPRINT_ORDER)
    cell_ra, cell_dec = cell_centres(cells, FOOTPRINT_ORDER)
    x, y = wcs.world_to_pixel_values(cell_ra, cell_dec)
    good = np.isfinite(x) & np.isfinite(y)
    col = np.rint(np.where(good, x, -1)).astype(np.int64)
    row = np.rint(np.where(good, y, -1)).astype(np.int64)
    good &= (col >= 0) & (col < nx) & (row >= 0) & (row < ny)
    on = np.zeros(len(cells), dtype=bool)
    on[good] = np.isfinite(image[row[good], col[good]])
    return cells[on]


def _edge_pixels(nx: int, ny: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates sampled along the four edges of an ``nx`` by ``ny`` image."""
    along_x = np.linspace(-0.5, nx - 0.5, _EDGE_SAMPLES)
    along_y = np.linspace(-0.5, ny - 0.5, _EDGE_SAMPLES)
    left, right = np.full(_EDGE_SAMPLES, -0.5), np.full(_EDGE_SAMPLES, nx - 0.5)
    bottom, top = np.full(_EDGE_SAMPLES, -0.5), np.full(_EDGE_SAMPLES, ny - 0.5)
    return (
        np.concatenate([along_x, along_x, left, right]),
        np.concatenate([bottom, top, along_y, along_y]),
    )
