"""Tests for reconciler.sky: transits, meridian RA, separations and the primary beam."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import astropy.units as u
import erfa
import numpy as np
import pytest
from astropy.coordinates import AltAz, SkyCoord
from astropy.time import Time
from astropy.utils import iers
from scipy.optimize import brentq

from reconciler import sky

# 0834+555 from the VLA calibrator list (DESIGN §5).
RA_0834 = 15.0 * (8 + 34 / 60 + 54.904117 / 3600)
DEC_0834 = 55 + 34 / 60 + 21.07098 / 3600

# ERFA's observed hour angle is referred to the terrestrial pole, ours (and the elevation
# maximum) to the celestial intermediate pole; they differ by polar motion, about
# 0.3 arcsec * tan(dec): 0.03 s of time at dec 55, 0.1 s at dec 80.
ERFA_AGREEMENT_S = 0.2

WEEK_START = datetime(2026, 11, 1, tzinfo=UTC)
WEEK_END = datetime(2026, 11, 8, tzinfo=UTC)


@pytest.fixture(scope="module")
def week_of_transits() -> list[datetime]:
    return sky.meridian_transits(RA_0834, DEC_0834, WEEK_START, WEEK_END)


def erfa_observed_hour_angle_rad(ra_deg: float, dec_deg: float, moment: Time) -> float:
    """Hour angle from ERFA's ICRS-to-observed chain (CIO based, no sidereal time)."""
    xp, yp = (a.to_value(u.rad) for a in iers.earth_orientation_table.get().pm_xy(moment))
    utc = moment.utc
    _, _, hour_angle, *_ = erfa.atco13(
        math.radians(ra_deg),
        math.radians(dec_deg),
        0.0,
        0.0,
        0.0,
        0.0,
        utc.jd1,
        utc.jd2,
        float(moment.delta_ut1_utc),
        math.radians(sky.SITE_LONGITUDE_DEG),
        math.radians(sky.SITE_LATITUDE_DEG),
        sky.SITE_HEIGHT_M,
        xp,
        yp,
        0.0,  # no refraction: it is symmetric about the meridian anyway
        0.0,
        0.0,
        0.0,
    )
    return float(hour_angle)


def max_elevation_times(ra_deg: float, dec_deg: float, guesses: list[datetime]) -> np.ndarray:
    """Golden-section search for the elevation maximum within ±5 min of each guess.

    Returns the offsets (s) of the maxima from the guesses. Knows nothing of hour angles.
    """
    source = SkyCoord(ra_deg * u.deg, dec_deg * u.deg)
    base = Time(guesses)
    location = sky.earth_location(sky.DSA110)

    def elevation(offset_s: np.ndarray) -> np.ndarray:
        frame = AltAz(obstime=base + offset_s * u.s, location=location)
        return source.transform_to(frame).alt.rad

    golden = (math.sqrt(5.0) - 1.0) / 2.0
    lo = np.full(len(guesses), -300.0)
    hi = np.full(len(guesses), 300.0)
    while np.max(hi - lo) > 1e-3:
        left = hi - golden * (hi - lo)
        right = lo + golden * (hi - lo)
        peak_on_left = elevation(left) > elevation(right)
        hi = np.where(peak_on_left, right, hi)
        lo = np.where(peak_on_left, lo, left)
    return (lo + hi) / 2.0


def test_transits_agree_with_erfa_observed_hour_angle(week_of_transits):
    differences = []
    for transit in week_of_transits:
        moment = Time(transit)
        offset = brentq(
            lambda s, m=moment: erfa_observed_hour_angle_rad(RA_0834, DEC_0834, m + s * u.s),
            -300.0,
            300.0,
            xtol=1e-4,
        )
        differences.append(offset)
    assert len(differences) == 7
    assert max(abs(d) for d in differences) < ERFA_AGREEMENT_S


def test_transits_agree_with_maximum_elevation(week_of_transits):
    offsets = max_elevation_times(RA_0834, DEC_0834, week_of_transits)
    assert np.max(np.abs(offsets)) < 0.02


def test_naive_lst_equals_j2000_ra_is_off_by_about_two_minutes(week_of_transits):
    location = sky.earth_location(sky.DSA110)
    for transit in week_of_transits:
        lst_deg = Time(transit).sidereal_time("apparent", longitude=location).deg
        # At the true transit, LST has already passed the J2000 RA by this many seconds.
        naive_offset_s = ((lst_deg - RA_0834 + 180.0) % 360.0 - 180.0) / 360.0 * 86_164.0905
        assert 100.0 < naive_offset_s < 150.0


def test_successive_transits_are_one_sidereal_day_apart(week_of_transits):
    gaps = np.diff([t.timestamp() for t in week_of_transits])
    assert np.allclose(gaps, sky.SIDEREAL_DAY_S, atol=0.2)


def test_transits_are_utc_aware_ascending_and_inside_half_open_interval(week_of_transits):
    assert all(t.tzinfo is not None and t.utcoffset() == timedelta(0) for t in week_of_transits)
    assert week_of_transits == sorted(week_of_transits)
    first = week_of_transits[0]
    assert sky.meridian_transits(RA_0834, DEC_0834, first, first + timedelta(hours=1)) == [first]
    assert sky.meridian_transits(RA_0834, DEC_0834, first - timedelta(hours=1), first) == []


def test_transits_of_a_long_span_are_fast_and_complete():
    year = sky.meridian_transits(
        RA_0834, DEC_0834, datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    )
    # A fixed star transits once per sidereal day: 366 times in a 365-day year.
    assert len(year) == 366


def test_transits_depend_on_the_site_longitude(week_of_transits):
    greenwich = sky.Site(latitude_deg=51.4779, longitude_deg=0.0, height_m=46.0)
    at_greenwich = sky.meridian_transits(RA_0834, DEC_0834, WEEK_START, WEEK_END, site=greenwich)
    # OVRO is 118.28 deg west, so the source reaches its meridian that fraction of a
    # sidereal day later than Greenwich's.
    lag_s = (week_of_transits[0] - at_greenwich[0]).total_seconds()
    assert lag_s == pytest.approx(118.2817 / 360.0 * sky.SIDEREAL_DAY_S, abs=1.0)


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        sky.meridian_transits(RA_0834, DEC_0834, datetime(2026, 11, 1), WEEK_END)
    with pytest.raises(ValueError, match="timezone-aware"):
        sky.meridian_ra_deg(datetime(2026, 11, 1), 55.0)


def test_meridian_ra_at_a_transit_is_the_sources_ra(week_of_transits):
    ra = sky.meridian_ra_deg(week_of_transits[0], DEC_0834)
    # 1e-5 deg of RA is 2.4 ms of time.
    assert ra == pytest.approx(RA_0834, abs=1e-5)


@pytest.mark.parametrize("dec_deg", [0.0, 30.0, 55.0, 80.0])
def test_meridian_ra_has_zero_erfa_hour_angle(dec_deg):
    moment = datetime(2026, 11, 1, 12, tzinfo=UTC)
    ra = sky.meridian_ra_deg(moment, dec_deg)
    hour_angle_s = (
        erfa_observed_hour_angle_rad(ra, dec_deg, Time(moment)) / (2 * math.pi) * 86_164.0905
    )
    assert abs(hour_angle_s) < ERFA_AGREEMENT_S


def test_meridian_ra_depends_on_declination():
    moment = datetime(2026, 11, 1, 12, tzinfo=UTC)
    difference_deg = sky.meridian_ra_deg(moment, 80.0) - sky.meridian_ra_deg(moment, 0.0)
    # Precession since J2000 moves RA by about n * t * sin(RA) * tan(dec): 0.85 deg at
    # dec 80 here, so phasing to the meridian must use the observation's own dec.
    assert 0.5 < abs(difference_deg) < 1.5


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0.0, 0.0), (90.0, 0.0), 90.0),
        ((10.0, 89.0), (190.0, 89.0), 2.0),
        ((0.0, 0.0), (180.0, 0.0), 180.0),
        ((359.5, 0.0), (0.5, 0.0), 1.0),
        ((30.0, -90.0), (200.0, 90.0), 180.0),
    ],
)
def test_angular_separation_known_values(a, b, expected):
    assert float(sky.angular_separation_deg(*a, *b)) == pytest.approx(expected, abs=1e-9)


def test_angular_separation_is_accurate_for_tiny_angles_and_broadcasts():
    one_mas = 1e-3 / 3600.0
    assert float(sky.angular_separation_deg(120.0, 55.0, 120.0, 55.0 + one_mas)) == (
        pytest.approx(one_mas, rel=1e-6)
    )
    result = sky.angular_separation_deg(0.0, np.array([0.0, 10.0, 20.0]), 0.0, 0.0)
    assert np.allclose(result, [0.0, 10.0, 20.0])


def test_airy_power_is_half_at_half_the_fwhm():
    for frequency in (1.311e9, 1.405e9, 1.499e9):
        half_width_rad = math.radians(float(sky.primary_beam_fwhm_deg(frequency)) / 2.0)
        assert float(sky.airy_power(half_width_rad, frequency)) == pytest.approx(0.5, abs=1e-12)
    assert float(sky.airy_power(0.0, 1.4e9)) == 1.0


def test_primary_beam_fwhm_at_l_band():
    # 1.029 lambda / D for a 4.65 m dish at 1.4 GHz.
    assert float(sky.primary_beam_fwhm_deg(1.4e9)) == pytest.approx(2.715, abs=0.005)
    assert float(sky.primary_beam_fwhm_deg(1.5e9)) < float(sky.primary_beam_fwhm_deg(1.3e9))


OFFLINE_SCRIPT = textwrap.dedent(
    """
    import socket
    from datetime import UTC, datetime

    def refuse(*args, **kwargs):
        raise OSError("network disabled for this test")

    socket.socket.connect = refuse
    socket.create_connection = refuse

    from astropy.time import Time

    # Pretend the bundled IERS predictions are a year old, the state of a service left
    # running: with astropy's defaults this would try a download and then raise.
    future = Time("2027-11-20T00:00:00", scale="utc")
    Time.now = classmethod(lambda cls: future)

    from reconciler import sky

    transits = sky.meridian_transits(
        128.7, 55.6, datetime(2027, 11, 20, tzinfo=UTC), datetime(2027, 11, 22, tzinfo=UTC)
    )
    assert len(transits) == 2, transits
    print("ok")
    """
)


def test_transits_work_offline_with_stale_iers_tables():
    result = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
