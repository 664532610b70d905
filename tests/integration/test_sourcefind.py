"""The source finder (PyBDSF, for real) on FITS images with known sources: positions,
flux densities, the rms map, the files it writes and leaves alone."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from reconciler.io.sourcefind import SourceFindError, find_sources, read_catalogue

CELL_ARCSEC = 4.0
BEAM_ARCSEC = 16.0
NOISE_JY = 1e-3
SIZE = 400
CENTRE = (128.73, 55.57)
#: (x, y, peak Jy/beam): point sources from 12σ to 150σ, away from the edges.
SOURCES = [
    (100.0, 120.0, 0.150),
    (260.3, 90.6, 0.040),
    (310.0, 300.0, 0.080),
    (150.7, 280.2, 0.020),
    (200.0, 200.0, 0.012),
]
ATTEMPT = "0" * 32


def _wcs() -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    wcs.wcs.crval = list(CENTRE)
    wcs.wcs.crpix = [SIZE / 2 + 1, SIZE / 2 + 1]
    wcs.wcs.cdelt = [-CELL_ARCSEC / 3600, CELL_ARCSEC / 3600]
    return wcs


def write_image(
    path: Path,
    *,
    beam: bool = True,
    blank_border: int = 0,
    seed: int = 1,
    sources: list[tuple[float, float, float]] = SOURCES,
) -> WCS:
    """A mosaic-like image: ``sources`` (x, y, peak) as point sources convolved with a
    circular beam, Gaussian noise
    smoothed by the same beam (correlated, as in a real image) scaled to NOISE_JY, and a
    blank (NaN) border like a mosaic's edge beyond the primary-beam cutoff."""
    rng = np.random.default_rng(seed)
    sigma = BEAM_ARCSEC / CELL_ARCSEC / (2 * math.sqrt(2 * math.log(2)))
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    data = np.zeros((SIZE, SIZE))
    for sx, sy, peak in sources:
        data += peak * np.exp(-((x - sx) ** 2 + (y - sy) ** 2) / (2 * sigma**2))
    kernel_x = np.arange(-15, 16)
    kernel = np.exp(-(kernel_x**2) / (2 * sigma**2))
    noise = rng.normal(size=(SIZE + 30, SIZE + 30))
    noise = np.apply_along_axis(lambda row: np.convolve(row, kernel, mode="valid"), 1, noise)
    noise = np.apply_along_axis(lambda col: np.convolve(col, kernel, mode="valid"), 0, noise)
    data += noise / noise.std() * NOISE_JY
    if blank_border:
        data[:blank_border, :] = np.nan
        data[:, :blank_border] = np.nan
    wcs = _wcs()
    header = wcs.to_header()
    if beam:
        header["BMAJ"] = BEAM_ARCSEC / 3600
        header["BMIN"] = BEAM_ARCSEC / 3600
        header["BPA"] = 0.0
    header["BUNIT"] = "Jy/beam"
    header["FREQ"] = 1.405e9
    fits.PrimaryHDU(data=data.astype(np.float32), header=header).writeto(path)
    return wcs


def test_every_source_is_found_where_it_is_with_its_flux(tmp_path):
    mosaic = tmp_path / "mosaic.fits"
    wcs = write_image(mosaic, blank_border=20)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    catalogue_path, rms_path = tmp_path / "mosaic.sources.fits", tmp_path / "mosaic.rms.fits"

    found = find_sources(mosaic, catalogue_path, rms_path, workdir=scratch, attempt=ATTEMPT)

    positions = SkyCoord(
        [c.ra_deg for c in found.components], [c.dec_deg for c in found.components], unit="deg"
    )
    for sx, sy, peak in SOURCES:
        truth = wcs.pixel_to_world(sx, sy)
        index, separation, _ = truth.match_to_catalog_sky(positions)
        component = found.components[int(index)]
        assert separation.arcsec < CELL_ARCSEC, (
            f"source at ({sx}, {sy}) found {separation.arcsec:.1f}″ off"
        )
        assert component.peak_jy == pytest.approx(peak, rel=0.10)
        # A point source: its integrated flux density equals its peak, within the errors
        # of fitting its size (large at 12σ: one source in a few is 15 % off).
        assert abs(component.flux_jy - peak) < 3 * component.flux_err_jy
        assert 0 < component.ra_err_arcsec < CELL_ARCSEC and component.peak_err_jy > 0
        assert component.local_rms_jy == pytest.approx(NOISE_JY, rel=0.25)
    assert len(found.components) == len(SOURCES), "nothing spurious above 5σ"
    assert found.median_rms_jy == pytest.approx(NOISE_JY, rel=0.15)
    assert found.finder == "PyBDSF" and found.finder_version

    # Readable as a plain FITS table (astropy, TOPCAT) with units; the rms map on the grid.
    table = Table.read(catalogue_path, hdu="COMPONENTS")
    assert len(table) == len(SOURCES) and str(table["flux_jy"].unit) == "Jy"
    with fits.open(rms_path) as hdus:
        assert hdus[0].data.shape == (SIZE, SIZE)
        assert WCS(hdus[0].header).wcs.compare(wcs.wcs, tolerance=1e-9)
    # Nothing beside the mosaic but the two products; PyBDSF's log stays in the scratch.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mosaic.fits",
        "mosaic.rms.fits",
        "mosaic.sources.fits",
        "scratch",
    ]


def test_a_finished_search_is_read_back_not_run_again(tmp_path):
    mosaic = tmp_path / "mosaic.fits"
    write_image(mosaic)
    paths = tmp_path / "c.fits", tmp_path / "r.fits"
    first = find_sources(mosaic, *paths, workdir=tmp_path, attempt=ATTEMPT)
    mosaic.unlink()  # a second search would need it

    again = find_sources(mosaic, *paths, workdir=tmp_path, attempt=ATTEMPT)

    assert again == read_catalogue(*paths) == first


def test_a_mosaic_without_a_beam_is_refused_by_name(tmp_path):
    mosaic = tmp_path / "nobeam.fits"
    write_image(mosaic, beam=False)
    with pytest.raises(SourceFindError, match=r"nobeam\.fits: no restoring beam"):
        find_sources(
            mosaic, tmp_path / "c.fits", tmp_path / "r.fits", workdir=tmp_path, attempt=ATTEMPT
        )
    assert not (tmp_path / "c.fits").exists()
