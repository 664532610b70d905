"""Association of components with known sky sources, and sky boxes (pure)."""

from __future__ import annotations

from dataclasses import astuple

import pytest

from reconciler.association import Position, SkyBox, associate

ARCSEC = 1 / 3600


def test_each_known_source_takes_its_closest_component_and_the_rest_are_new():
    known = {7: Position(10.0, 50.0), 8: Position(10.1, 50.0), 9: Position(20.0, 50.0)}
    components = [
        Position(10.0 + 3 * ARCSEC, 50.0, 1.0),  # source 7
        Position(10.0 - 8 * ARCSEC, 50.0, 2.0),  # also near 7, farther: absorbed
        Position(10.1, 50.0 + 2 * ARCSEC, 0.5),  # source 8
        Position(11.0, 50.0, 0.1),  # new, fainter
        Position(11.0, 50.0 + 5 * ARCSEC, 0.3),  # new, brighter: absorbs the one above
    ]

    association = associate(components, known, radius_arcsec=10.0)

    assert association.detected == {0: 7, 2: 8}
    assert association.new == (4,)
    assert association.missed == (9,)


def test_with_nothing_known_every_separate_component_is_new():
    components = [Position(0.0, 0.0, 1.0), Position(359.9999, 0.0, 2.0)]
    association = associate(components, {}, radius_arcsec=1.0)
    assert association == associate(components, {}, radius_arcsec=1.0)
    assert association.detected == {} and association.missed == ()
    assert association.new == (1,), "0.36″ apart across RA 0: one source, the brighter"


def test_a_box_widens_ra_by_the_declination_and_runs_through_zero():
    box = SkyBox.around([359.5, 0.5], [60.0, 60.0], margin_deg=1.0)
    assert box.dec_low == pytest.approx(59.0) and box.dec_high == pytest.approx(61.0)
    # 1° on the sky at Dec 61° is 2.06° of RA.
    assert box.ra_low == pytest.approx(359.5 - 2.063, abs=1e-3)
    assert box.ra_high == pytest.approx(0.5 + 2.063, abs=1e-3)


def test_a_box_near_a_pole_or_wider_than_the_sky_takes_every_ra():
    assert SkyBox.around([10.0], [89.5], 1.0) == SkyBox(0.0, 360.0, 88.5, 90.0)
    # Three RAs a third of the sky apart: the shortest span runs 120 → 240 → 0.
    box = SkyBox.around([0.0, 120.0, 240.0], [0.0] * 3, 1.0)
    assert astuple(box) == pytest.approx((119.0, 1.0, -1.0, 1.0), abs=1e-3)
    assert SkyBox.around([0.0, 120.0, 240.0], [0.0] * 3, 61.0).ra_high == 360.0
