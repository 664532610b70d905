"""HEALPix cells (nested scheme, ICRS) that index the sky for cone searches: the footprints
of published mosaics and the positions of catalogue sources.

A footprint is resolved to cells of order ``FOOTPRINT_ORDER`` (≈3.4′ across) and kept as
rows of their parents at ``ROW_ORDER`` (≈27′), 64 children each: a row is a parent cell and
a 64-bit mask of which of its children are in the footprint. "Does this footprint contain
this position" is then one index look-up of the parent cell and one bit, in plain SQL on
both backends; a mosaic of tens of square degrees takes a few hundred rows.

A source is kept as its cell of order ``SOURCE_ORDER`` (≈3.2″): a cone is a handful of
ranges of those cells, each an index range scan.
"""

from __future__ import annotations

import math

import astropy.units as u
import numpy as np
from astropy_healpix import HEALPix

#: Cells a footprint is resolved to: a cell is in when its centre falls on a non-blank pixel.
FOOTPRINT_ORDER = 10
#: Cells the rows of a footprint are kept at: 64 (2**6) children of FOOTPRINT_ORDER each.
ROW_ORDER = FOOTPRINT_ORDER - 3
#: Cells of catalogue sources.
SOURCE_ORDER = 16
#: Cells a cone is covered with, at most, before they become ranges of source cells.
_CONE_CELLS = 64
#: The whole sky, in square degrees.
SKY_SQ_DEG = 4 * math.pi * (180 / math.pi) ** 2


def healpix(order: int) -> HEALPix:
    """The nested ICRS HEALPix grid of ``order``."""
    return HEALPix(nside=2**order, order="nested", frame="icrs")


def cells_of(ra_deg: np.ndarray, dec_deg: np.ndarray, order: int) -> np.ndarray:
    """The cells of ``order`` holding each position (degrees), as int64."""
    lon = np.asarray(ra_deg, dtype=float) * u.deg
    lat = np.asarray(dec_deg, dtype=float) * u.deg
    return np.asarray(healpix(order).lonlat_to_healpix(lon, lat), dtype=np.int64)


def cell_centres(cells: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """RA and Dec (degrees) of the centres of ``cells`` of ``order``."""
    lon, lat = healpix(order).healpix_to_lonlat(np.asarray(cells, dtype=np.int64))
    return lon.to_value(u.deg), lat.to_value(u.deg)


def cells_near(ra_deg: float, dec_deg: float, radius_deg: float, order: int) -> np.ndarray:
    """Every cell of ``order`` overlapping the cone, sorted."""
    found = healpix(order).cone_search_lonlat(ra_deg * u.deg, dec_deg * u.deg, radius_deg * u.deg)
    return np.sort(np.asarray(found, dtype=np.int64))


def footprint_rows(cells: np.ndarray) -> list[tuple[int, int]]:
    """The rows of a footprint given as cells of ``FOOTPRINT_ORDER``: (parent cell at
    ``ROW_ORDER``, signed 64-bit mask of the children in), sorted by parent."""
    cells = np.unique(np.asarray(cells, dtype=np.int64))
    parents, first = np.unique(cells >> 6, return_index=True)
    bits = np.left_shift(np.uint64(1), (cells & 63).astype(np.uint64))
    masks = np.bitwise_or.reduceat(bits, first) if len(cells) else bits
    return list(zip(parents.tolist(), masks.view(np.int64).tolist(), strict=True))


def footprint_cells(rows: list[tuple[int, int]]) -> np.ndarray:
    """The cells of ``FOOTPRINT_ORDER`` of footprint rows (the inverse of
    :func:`footprint_rows`)."""
    if not rows:
        return np.empty(0, dtype=np.int64)
    parents = np.array([parent for parent, _ in rows], dtype=np.int64)
    masks = np.array([mask for _, mask in rows], dtype=np.int64).view(np.uint64)
    children = np.arange(64, dtype=np.uint64)
    inside = (masks[:, None] >> children[None, :]) & np.uint64(1) == 1
    return ((parents[:, None] << 6) + children.astype(np.int64)[None, :])[inside]


def footprint_key(ra_deg: float, dec_deg: float) -> tuple[int, int]:
    """The footprint row (parent cell) and the bit of its mask a position falls in."""
    cell = int(cells_of(np.array([ra_deg]), np.array([dec_deg]), FOOTPRINT_ORDER)[0])
    return cell >> 6, cell & 63


def area_sq_deg(n_cells: int, order: int = FOOTPRINT_ORDER) -> float:
    """The sky area of ``n_cells`` cells of ``order``, in square degrees."""
    return n_cells * SKY_SQ_DEG / (12 * 4**order)


def source_ranges(ra_deg: float, dec_deg: float, radius_deg: float) -> list[tuple[int, int]]:
    """Half-open ranges ``[lo, hi)`` of source cells (``SOURCE_ORDER``) that cover the cone:
    every source within ``radius_deg`` has its cell in one of them (a superset; the exact
    distance decides)."""
    order = SOURCE_ORDER
    # The finest order whose cells cover the cone with at most a few dozen of them.
    while order > 0 and _cells_across(radius_deg, order) ** 2 > _CONE_CELLS:
        order -= 1
    shift = 2 * (SOURCE_ORDER - order)
    ranges: list[tuple[int, int]] = []
    for cell in cells_near(ra_deg, dec_deg, radius_deg, order).tolist():
        lo, hi = cell << shift, (cell + 1) << shift
        if ranges and ranges[-1][1] == lo:
            ranges[-1] = (ranges[-1][0], hi)
        else:
            ranges.append((lo, hi))
    return ranges


def _cells_across(radius_deg: float, order: int) -> float:
    """How many cells of ``order`` span a cone's diameter."""
    return 2 * radius_deg / math.sqrt(area_sq_deg(1, order))
