"""Source finding on a mosaic with PyBDSF: a component catalogue and a background rms map.

PyBDSF (the ``bdsf`` wheel) is the finder of the LOFAR surveys and of the later DSA-110
continuum pipeline: it maps the background rms and mean over a sliding box, grows islands
of emission above ``thresh_isl`` σ around peaks above ``thresh_pix`` σ, and fits each
island with Gaussians, with errors after Condon (1997). Each Gaussian is one component.

Outputs, each written under an attempt-private name and renamed into place (never a half
file under the final name):

- the components as a FITS binary table (``catalogue_path``; readable by astropy and
  TOPCAT): position and its errors, peak and integrated flux density and their errors,
  the fitted and deconvolved shape, the local rms;
- the background rms map as a FITS image (``rms_path``) on the mosaic's grid.

PyBDSF writes a log beside the image it reads: it reads a link to the mosaic made in
``workdir`` (the action's scratch directory), so nothing is written beside the mosaic.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table

from reconciler.naming import attempt_path

#: The finder as recorded with each catalogue.
FINDER = "PyBDSF"
#: Frequency assumed when the mosaic's header names none, Hz.
_DEFAULT_FREQUENCY_HZ = 1.4e9


class SourceFindError(ValueError):
    """The mosaic cannot be searched (no beam, nothing valid), or the finder failed."""


@dataclass(frozen=True)
class Component:
    """One fitted Gaussian. Positions in degrees, errors and sizes in arcseconds, flux
    densities in Jy (peak: Jy/beam)."""

    ra_deg: float
    dec_deg: float
    ra_err_arcsec: float
    dec_err_arcsec: float
    peak_jy: float
    peak_err_jy: float
    flux_jy: float
    flux_err_jy: float
    major_arcsec: float
    minor_arcsec: float
    pa_deg: float
    deconvolved_major_arcsec: float
    deconvolved_minor_arcsec: float
    local_rms_jy: float

    def as_dict(self) -> dict[str, float]:
        """Plain floats, for JSON and database rows."""
        return asdict(self)


@dataclass(frozen=True)
class SourceCatalogue:
    """What one search found and where it wrote it."""

    catalogue_path: Path
    rms_path: Path
    components: tuple[Component, ...]
    median_rms_jy: float
    finder: str
    finder_version: str


def finder_version() -> str:
    """The installed PyBDSF's version."""
    import bdsf

    return str(bdsf.__version__)


def find_sources(
    mosaic: Path,
    catalogue_path: Path,
    rms_path: Path,
    *,
    workdir: Path,
    attempt: str,
    thresh_pix: float = 5.0,
    thresh_isl: float = 3.0,
) -> SourceCatalogue:
    """Search ``mosaic`` and write its catalogue and rms map (kept when both are there)."""
    if catalogue_path.is_file() and rms_path.is_file():
        return read_catalogue(catalogue_path, rms_path)
    import bdsf

    header = fits.getheader(mosaic)
    if "BMAJ" not in header or "BMIN" not in header:
        raise SourceFindError(f"{mosaic}: no restoring beam (BMAJ/BMIN) in the header")
    link = workdir / f"search-{attempt}.fits"
    link.unlink(missing_ok=True)
    link.symlink_to(mosaic.resolve())
    # PyBDSF logs every step at INFO to the root logger as well as to its own file.
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(max(quiet, logging.WARNING))
    try:
        image = bdsf.process_image(
            str(link),
            thresh_pix=thresh_pix,
            thresh_isl=thresh_isl,
            frequency=float(header.get("FREQ", _DEFAULT_FREQUENCY_HZ)),
            quiet=True,
            ncores=1,
        )
    except Exception as exc:  # PyBDSF raises bare RuntimeErrors and more
        raise SourceFindError(f"{mosaic}: PyBDSF failed: {exc}") from exc
    finally:
        logging.getLogger().setLevel(quiet)
    if image is None or not getattr(image, "completed", True):
        raise SourceFindError(f"{mosaic}: PyBDSF did not complete")
    table = _components_table(image)
    _write_catalogue(table, mosaic, catalogue_path, attempt)
    _write_rms_map(image, header, rms_path, attempt)
    link.unlink(missing_ok=True)
    return read_catalogue(catalogue_path, rms_path)


def _components_table(image: Any) -> Table:
    """PyBDSF's Gaussian list as a table of :class:`Component` fields (an empty table
    when nothing was found)."""
    rows: dict[str, list[float]] = {field: [] for field in _FIELDS}
    for gaussian in getattr(image, "gaussians", []) or []:
        ra, dec = gaussian.centre_sky
        e_ra, e_dec = gaussian.centre_skyE
        maj, mn, pa = gaussian.size_sky
        dc_maj, dc_min, _ = gaussian.deconv_size_sky
        values = {
            "ra_deg": ra,
            "dec_deg": dec,
            "ra_err_arcsec": e_ra * 3600.0,
            "dec_err_arcsec": e_dec * 3600.0,
            "peak_jy": gaussian.peak_flux,
            "peak_err_jy": gaussian.peak_fluxE,
            "flux_jy": gaussian.total_flux,
            "flux_err_jy": gaussian.total_fluxE,
            "major_arcsec": maj * 3600.0,
            "minor_arcsec": mn * 3600.0,
            "pa_deg": pa,
            "deconvolved_major_arcsec": dc_maj * 3600.0,
            "deconvolved_minor_arcsec": dc_min * 3600.0,
            "local_rms_jy": gaussian.rms,
        }
        for field, value in values.items():
            rows[field].append(float(value))
    return Table({field: np.asarray(values, dtype=np.float64) for field, values in rows.items()})


_FIELDS = tuple(field.name for field in fields(Component))

_UNITS = {
    "ra_deg": "deg",
    "dec_deg": "deg",
    "ra_err_arcsec": "arcsec",
    "dec_err_arcsec": "arcsec",
    "peak_jy": "Jy/beam",
    "peak_err_jy": "Jy/beam",
    "flux_jy": "Jy",
    "flux_err_jy": "Jy",
    "major_arcsec": "arcsec",
    "minor_arcsec": "arcsec",
    "pa_deg": "deg",
    "deconvolved_major_arcsec": "arcsec",
    "deconvolved_minor_arcsec": "arcsec",
    "local_rms_jy": "Jy/beam",
}


def _write_catalogue(table: Table, mosaic: Path, path: Path, attempt: str) -> None:
    for field, unit in _UNITS.items():
        table[field].unit = unit
    hdu = fits.BinTableHDU(table, name="COMPONENTS")
    hdu.header["FINDER"] = (FINDER, "source finder")
    hdu.header["FINDVER"] = (finder_version(), "source finder version")
    hdu.header["IMAGE"] = mosaic.name
    hdu.header["NCOMP"] = (len(table), "components found")
    partial = attempt_path(path, attempt)
    try:
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(partial, overwrite=True)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _write_rms_map(image: Any, header: fits.Header, path: Path, attempt: str) -> None:
    """The background rms on the mosaic's own grid and header (PyBDSF's arrays are
    transposed: x first)."""
    rms = np.asarray(image.rms_arr, dtype=np.float32).T
    rms_header = header.copy()
    rms_header["BTYPE"] = "rms"
    rms_header["BUNIT"] = "Jy/beam"
    rms_header["COMMENT"] = f"background rms map of {FINDER} {finder_version()}"
    partial = attempt_path(path, attempt)
    try:
        fits.PrimaryHDU(
            data=rms.reshape(_image_shape(header, rms.shape)), header=rms_header
        ).writeto(partial, overwrite=True)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _image_shape(header: fits.Header, plane: tuple[int, ...]) -> tuple[int, ...]:
    """The mosaic's own array shape (degenerate axes kept) for a 2-D plane."""
    axes = [int(header[f"NAXIS{i}"]) for i in range(int(header["NAXIS"]), 0, -1)]
    if int(np.prod(axes)) != int(np.prod(plane)):
        return plane
    return tuple(axes)


def read_catalogue(catalogue_path: Path, rms_path: Path) -> SourceCatalogue:
    """A catalogue written by :func:`find_sources`, read back."""
    with fits.open(catalogue_path) as hdus:
        table = Table(hdus["COMPONENTS"].data)
        finder = str(hdus["COMPONENTS"].header.get("FINDER", FINDER))
        version = str(hdus["COMPONENTS"].header.get("FINDVER", ""))
    with fits.open(rms_path) as hdus:
        rms = np.asarray(hdus[0].data, dtype=np.float64)
    finite = rms[np.isfinite(rms) & (rms > 0)]
    components = tuple(
        Component(**{field: float(row[field]) for field in _FIELDS}) for row in table
    )
    return SourceCatalogue(
        catalogue_path=catalogue_path,
        rms_path=rms_path,
        components=components,
        median_rms_jy=float(np.median(finite)) if finite.size else float("nan"),
        finder=finder,
        finder_version=version,
    )
