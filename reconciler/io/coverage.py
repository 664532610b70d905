"""The coverage map of everything published: an IVOA MOC file (FITS, written by mocpy)
under the products root, the union of the footprints of the published mosaics.

Each publish unions its footprint into the file under an exclusive lock (``flock`` on a
lock file beside it), writing a new file and renaming it over the old one: two publishing
at once both land, a reader never sees half a file, and a retried publish unions the same
cells again, which changes nothing.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from mocpy import MOC

from reconciler.skycells import FOOTPRINT_ORDER, SKY_SQ_DEG


def read_coverage(path: Path) -> MOC:
    """The coverage MOC at ``path`` (empty when there is none yet)."""
    if not path.is_file():
        return MOC.new_empty(FOOTPRINT_ORDER)
    return MOC.load(path, format="fits")


def add_to_coverage(path: Path, cells: np.ndarray) -> None:
    """Union ``cells`` (order ``FOOTPRINT_ORDER``) into the coverage MOC at ``path``."""
    if len(cells) == 0:
        return
    footprint = _moc_of(cells)
    with _locked(path):
        _replace(path, read_coverage(path).union(footprint))


def write_coverage(path: Path, cells: Iterator[np.ndarray]) -> MOC:
    """Replace the coverage MOC at ``path`` by the union of ``cells`` (chunks of cells of
    order ``FOOTPRINT_ORDER``); returns it."""
    coverage = MOC.new_empty(FOOTPRINT_ORDER)
    for chunk in cells:
        if len(chunk):
            coverage = coverage.union(_moc_of(chunk))
    with _locked(path):
        _replace(path, coverage)
    return coverage


def draw_coverage(coverage: MOC, png: Path) -> None:
    """Draw ``coverage`` on an all-sky Mollweide map into the PNG file ``png``."""
    import astropy.units as u
    from astropy.coordinates import Angle, SkyCoord
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from mocpy import WCS as MocWCS

    figure = Figure(figsize=(10, 5))
    FigureCanvasAgg(figure)
    with MocWCS(
        figure,
        fov=180 * u.deg,
        center=SkyCoord(180, 0, unit="deg", frame="icrs"),
        coordsys="icrs",
        rotation=Angle(0, u.degree),
        projection="MOL",
    ) as wcs:
        axes = figure.add_subplot(1, 1, 1, projection=wcs)
        coverage.fill(ax=axes, wcs=wcs, alpha=0.6, fill=True, color="tab:blue")
        coverage.border(ax=axes, wcs=wcs, color="black", linewidth=0.5)
    axes.set_title(f"published coverage: {coverage.sky_fraction * SKY_SQ_DEG:.1f} deg²")
    axes.grid(color="grey", linestyle="dotted")
    tmp = png.with_name(f".{png.name}.{uuid.uuid4().hex}.tmp")
    try:
        figure.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, png)
    finally:
        tmp.unlink(missing_ok=True)


def _moc_of(cells: np.ndarray) -> MOC:
    depth = np.full(len(cells), FOOTPRINT_ORDER, dtype=np.uint8)
    return MOC.from_healpix_cells(np.asarray(cells, dtype=np.uint64), depth, FOOTPRINT_ORDER)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the exclusive lock of the coverage file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _replace(path: Path, coverage: MOC) -> None:
    """Write ``coverage`` to a new file and rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        coverage.save(tmp, format="fits", overwrite=True)
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
