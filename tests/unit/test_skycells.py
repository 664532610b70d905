"""Sky cells: footprint rows keep exactly the cells given, a position's key names its cell,
and a cone's source ranges hold every position within the radius."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.sky import angular_separation_deg
from reconciler.skycells import (
    FOOTPRINT_ORDER,
    ROW_ORDER,
    SOURCE_ORDER,
    area_sq_deg,
    cells_near,
    cells_of,
    footprint_cells,
    footprint_key,
    footprint_rows,
    source_ranges,
)


def test_footprint_rows_keep_exactly_the_cells_given():
    cells = cells_near(200.0, -10.0, 1.5, FOOTPRINT_ORDER)
    # Every bit of a mask, the sign bit too, stands for one child.
    cells = np.concatenate([cells, [64 * 7 + 63, 64 * 7]])

    rows = footprint_rows(cells)

    assert np.array_equal(footprint_cells(rows), np.unique(cells))
    assert [parent for parent, _ in rows] == sorted({int(c) >> 6 for c in cells})
    assert dict(rows)[7] == np.int64(-(2**63) + 1), "bits 0 and 63 of a signed 64-bit mask"
    assert FOOTPRINT_ORDER - ROW_ORDER == 3, "64 children per row"
    assert footprint_rows(np.empty(0, dtype=np.int64)) == []


def test_a_position_key_names_its_cell_and_bit():
    cell = int(cells_of(np.array([83.6]), np.array([22.0]), FOOTPRINT_ORDER)[0])
    assert footprint_key(83.6, 22.0) == (cell >> 6, cell & 63)


def test_areas():
    assert area_sq_deg(12 * 4**FOOTPRINT_ORDER) == pytest.approx(41252.96, rel=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    ra=st.floats(0, 360, exclude_max=True),
    dec=st.floats(-89.9, 89.9),
    radius=st.floats(0.001, 20.0),
)
def test_source_ranges_hold_every_position_in_the_cone(ra, dec, radius):
    rng = np.random.default_rng(int(ra * 1000 + dec * 10 + radius * 100) % 2**32)
    # Positions scattered around the cone's edge, inside and out.
    distance = radius * rng.uniform(0.0, 1.3, 400)
    bearing = rng.uniform(0, 2 * np.pi, 400)
    decs = np.clip(dec + distance * np.cos(bearing), -90, 90)
    ras = (ra + distance * np.sin(bearing) / max(np.cos(np.radians(dec)), 1e-3)) % 360
    inside = angular_separation_deg(ra, dec, ras, decs) <= radius
    cells = cells_of(ras[inside], decs[inside], SOURCE_ORDER)

    ranges = source_ranges(ra, dec, radius)

    assert len(ranges) <= 64
    assert all(lo < hi for lo, hi in ranges)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges)), "merged, sorted"
    covered = [any(lo <= c < hi for lo, hi in ranges) for c in cells.tolist()]
    assert all(covered)
