"""Pure sky geometry for DSA-110: the site, transits, separations and the primary beam.

Nothing here touches files or the database, and nothing reads the clock; every function
takes its inputs explicitly.

Importing this module configures astropy's Earth-orientation (IERS) tables for offline,
unattended use (no downloads; the bundled tables' predictions are accepted at any age).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import astropy.units as u
import numpy as np
from astropy.coordinates import TETE, EarthLocation, SkyCoord
from astropy.time import Time
from astropy.utils import iers
from scipy.optimize import brentq
from scipy.special import j1

from reconciler.model import Site

#: Dish diameter of a DSA-110 antenna, metres.
DISH_DIAMETER_M = 4.65

SPEED_OF_LIGHT_M_S = 299_792_458.0

#: Centre of the DSA-110 band (1311-1499 MHz), Hz.
DSA110_BAND_CENTRE_HZ = 1.405e9

#: One sidereal day in SI seconds: the time between successive meridian transits.
SIDEREAL_DAY_S = 86_164.0905

#: Transits are refined until the apparent hour angle is below this many seconds of time.
TRANSIT_TOLERANCE_S = 0.01

# Transits are refined further, to well under the microsecond a datetime holds, so the same
# transit comes out identical whatever window was searched (a window may start at one).
_TRANSIT_REPRODUCIBLE_S = 1e-7

_MAX_REFINEMENTS = 8

# The array's machines have no network, and the service runs unattended for months. By
# default astropy would try to download a fresh IERS-A table for any time past the bundled
# table's predictions and, once the bundled predictions are 30 days old, raise instead of
# interpolating. Neither is acceptable here: use the bundled tables (astropy-iers-data) and
# accept their predictions (UT1 good to tens of ms a year ahead; past the table's end its
# last value is held, drifting a fraction of a second per year), far below what a 5-minute
# drift observation can notice. Astropy still warns past the end of its tables. Set before
# any Time conversion, because astropy reads the leap-second table once, on first use.
iers.conf.auto_download = False
iers.conf.auto_max_age = None


#: The DSA-110 array at OVRO (DESIGN §5).
DSA110 = Site()
SITE_LATITUDE_DEG = DSA110.latitude_deg
SITE_LONGITUDE_DEG = DSA110.longitude_deg
SITE_HEIGHT_M = DSA110.height_m

#: ``(ra_deg, dec_deg, start, end) -> transits in [start, end]`` at one site.
TransitFinder = Callable[[float, float, datetime, datetime], Sequence[datetime]]


@functools.lru_cache(maxsize=16)
def earth_location(site: Site) -> EarthLocation:
    """The site as an astropy ``EarthLocation`` (cached per site)."""
    return EarthLocation.from_geodetic(
        lon=site.longitude_deg * u.deg, lat=site.latitude_deg * u.deg, height=site.height_m * u.m
    )


def _as_utc_time(moment: datetime, what: str) -> Time:
    # A naive datetime is ambiguous (local or UTC?); refuse it rather than guess.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got naive {moment!r}")
    return Time(moment.astimezone(UTC), scale="utc")


def _wrap_deg(angle_deg: np.ndarray) -> np.ndarray:
    """Wrap angles to [-180, 180) degrees."""
    return (np.asarray(angle_deg) + 180.0) % 360.0 - 180.0


def apparent_hour_angle_deg(
    ra_deg: float, dec_deg: float, times: Time, site: Site = DSA110
) -> np.ndarray:
    """Return the apparent hour angle of an ICRS position at the site.

    The hour angle is local apparent sidereal time minus the apparent right ascension,
    both referred to the true equator and equinox of date (astropy ``TETE``, which
    includes precession, nutation, annual and diurnal aberration and light deflection).

    Parameters
    ----------
    ra_deg, dec_deg
        ICRS (J2000) position, degrees.
    times
        Times of evaluation (scalar or array ``astropy.time.Time``).
    site
        Observatory position.

    Returns
    -------
    numpy.ndarray
        Hour angle in degrees, wrapped to [-180, 180); positive west of the meridian.
    """
    location = earth_location(site)
    # TETE, not CIRS: apparent sidereal time counts from the true equinox, which is TETE's
    # origin of right ascension; CIRS counts from the CIO, about 6 arcmin (24 s) away today.
    apparent = SkyCoord(ra=ra_deg * u.deg, dec=dec_deg * u.deg, frame="icrs").transform_to(
        TETE(obstime=times, location=location)
    )
    last = times.sidereal_time("apparent", longitude=location)
    return _wrap_deg(last.deg - apparent.ra.deg)


def meridian_transits(
    ra_deg: float,
    dec_deg: float,
    start: datetime,
    end: datetime,
    *,
    site: Site = DSA110,
) -> list[datetime]:
    """Return the meridian transits of a source at the site in ``[start, end)``.

    A transit is the moment the source's apparent place crosses the local meridian
    (apparent hour angle zero) — not the moment local sidereal time equals the J2000
    right ascension, which precession alone moves by minutes.

    Parameters
    ----------
    ra_deg, dec_deg
        ICRS (J2000) position of the source, degrees.
    start, end
        Timezone-aware datetimes bounding the search; ``start`` is included, ``end`` not.
    site
        Observatory position (DSA-110 by default).

    Returns
    -------
    list of datetime
        Transit times in UTC (aware), ascending, each within ``TRANSIT_TOLERANCE_S`` of
        apparent hour angle zero.

    Raises
    ------
    ValueError
        If ``start`` or ``end`` is naive, or the refinement fails to converge.
    """
    t_start = _as_utc_time(start, "start")
    t_end = _as_utc_time(end, "end")
    if t_end <= t_start:
        return []
    # First guess: run the hour angle at `start` forward to zero at the sidereal rate; then
    # one guess per sidereal day, plus one either side so refinement cannot lose an edge.
    ha_start = float(apparent_hour_angle_deg(ra_deg, dec_deg, t_start, site))
    first = (-ha_start % 360.0) / 360.0 * SIDEREAL_DAY_S
    span_s = (t_end - t_start).sec
    offsets = first + SIDEREAL_DAY_S * np.arange(-1, int(span_s // SIDEREAL_DAY_S) + 2)
    times = _refine_transits(ra_deg, dec_deg, t_start + offsets * u.s, site)
    # Compared as the datetimes returned, so a window that starts at a returned transit
    # (to the microsecond) includes it.
    first_in, end_out = _to_datetime(t_start), _to_datetime(t_end)
    return [moment for moment in map(_to_datetime, times) if first_in <= moment < end_out]


def _refine_transits(ra_deg: float, dec_deg: float, guesses: Time, site: Site) -> Time:
    """Newton-step every guess to apparent hour angle zero, all at once."""
    times = guesses
    for _ in range(_MAX_REFINEMENTS):
        ha_s = apparent_hour_angle_deg(ra_deg, dec_deg, times, site) / 360.0 * SIDEREAL_DAY_S
        times = times - ha_s * u.s
        if np.max(np.abs(ha_s)) < _TRANSIT_REPRODUCIBLE_S:
            return times
    raise ValueError(
        f"meridian transit of RA {ra_deg} Dec {dec_deg} did not converge in "
        f"{_MAX_REFINEMENTS} steps"
    )


def _to_datetime(moment: Time) -> datetime:
    return moment.utc.to_datetime(timezone=UTC)


@functools.lru_cache(maxsize=4096)
def _site_transits(
    site: Site, ra_deg: float, dec_deg: float, start: datetime, end: datetime
) -> tuple[datetime, ...]:
    return tuple(meridian_transits(ra_deg, dec_deg, start, end, site=site))


def transit_finder(site: Site) -> TransitFinder:
    """Meridian transits (apparent hour angle zero) at ``site``, cached across passes.

    The returned function takes ``(ra_deg, dec_deg, start, end)`` and returns the transits
    in ``[start, end]``; the search interval is rounded out to whole hours so that repeated
    passes hit the cache.
    """

    def find(ra_deg: float, dec_deg: float, start: datetime, end: datetime) -> list[datetime]:
        hour = timedelta(hours=1)
        lo = start.replace(minute=0, second=0, microsecond=0)
        hi = end.replace(minute=0, second=0, microsecond=0) + hour
        return [t for t in _site_transits(site, ra_deg, dec_deg, lo, hi) if start <= t <= end]

    return find


def meridian_ra_deg(moment: datetime, dec_deg: float, *, site: Site = DSA110) -> float:
    """Return the ICRS right ascension on the site's meridian at a moment.

    This is the ICRS RA that a source at ICRS declination ``dec_deg`` must have to be at
    apparent hour angle zero at ``moment``: the phase centre for an observation phased to
    the meridian at its mid-point. It depends weakly on declination because precession
    and aberration shift RA by amounts that grow with ``tan(dec)``.

    Parameters
    ----------
    moment
        Timezone-aware datetime.
    dec_deg
        ICRS declination of the point on the meridian, degrees.
    site
        Observatory position.

    Returns
    -------
    float
        ICRS right ascension in degrees, in [0, 360).
    """
    t = _as_utc_time(moment, "moment")
    # Start from the apparent meridian (RA = LAST) and remove the residual hour angle;
    # the map from ICRS to apparent RA is nearly a shift, so two or three steps converge.
    ra = float(t.sidereal_time("apparent", longitude=earth_location(site)).deg)
    for _ in range(_MAX_REFINEMENTS):
        ha = float(apparent_hour_angle_deg(ra, dec_deg, t, site))
        ra = (ra + ha) % 360.0
        if abs(ha) / 360.0 * SIDEREAL_DAY_S < TRANSIT_TOLERANCE_S / 10:
            return ra
    raise ValueError(f"meridian RA at {moment} Dec {dec_deg} did not converge")


def angular_separation_deg(
    ra1_deg: np.ndarray | float,
    dec1_deg: np.ndarray | float,
    ra2_deg: np.ndarray | float,
    dec2_deg: np.ndarray | float,
) -> np.ndarray:
    """Return the great-circle separation between two positions, degrees.

    Uses the Vincenty formula, which stays accurate for tiny and antipodal separations.
    Arguments broadcast against each other.
    """
    ra1, dec1, ra2, dec2 = (
        np.radians(np.asarray(a, dtype=float)) for a in (ra1_deg, dec1_deg, ra2_deg, dec2_deg)
    )
    dra = ra2 - ra1
    num1 = np.cos(dec2) * np.sin(dra)
    num2 = np.cos(dec1) * np.sin(dec2) - np.sin(dec1) * np.cos(dec2) * np.cos(dra)
    den = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(dra)
    return np.degrees(np.arctan2(np.hypot(num1, num2), den))


def airy_power(
    separation_rad: np.ndarray | float,
    frequency_hz: np.ndarray | float,
    dish_diameter_m: float = DISH_DIAMETER_M,
) -> np.ndarray:
    """Return the Airy-disc power pattern of a uniformly illuminated dish.

    Parameters
    ----------
    separation_rad
        Angle from the pointing centre, radians.
    frequency_hz
        Observing frequency, Hz; broadcasts against ``separation_rad``.
    dish_diameter_m
        Aperture diameter, metres.

    Returns
    -------
    numpy.ndarray
        Power response normalised to 1 on axis, ``(2 J1(x) / x)**2`` with
        ``x = pi D sin(theta) / lambda``.
    """
    wavelength = SPEED_OF_LIGHT_M_S / np.asarray(frequency_hz, dtype=float)
    x = np.pi * dish_diameter_m * np.sin(np.asarray(separation_rad, dtype=float)) / wavelength
    safe = np.where(np.abs(x) < 1e-9, 1.0, x)
    amplitude = np.where(np.abs(x) < 1e-9, 1.0, 2.0 * j1(safe) / safe)
    return amplitude**2


#: The argument ``x`` at which the Airy power pattern falls to one half (about 1.6163).
AIRY_HALF_POWER_X = float(brentq(lambda x: (2.0 * j1(x) / x) ** 2 - 0.5, 1.0, 2.0, xtol=1e-14))


def primary_beam_fwhm_deg(
    frequency_hz: np.ndarray | float, dish_diameter_m: float = DISH_DIAMETER_M
) -> np.ndarray:
    """Return the full width at half power of the Airy pattern of :func:`airy_power`.

    About ``1.029 lambda / D``: 2.70 deg for a 4.65 m dish at 1.405 GHz.

    Parameters
    ----------
    frequency_hz
        Observing frequency, Hz.
    dish_diameter_m
        Aperture diameter, metres.

    Returns
    -------
    numpy.ndarray
        Full width at half maximum, degrees.
    """
    wavelength = SPEED_OF_LIGHT_M_S / np.asarray(frequency_hz, dtype=float)
    half_width = np.arcsin(AIRY_HALF_POWER_X * wavelength / (np.pi * dish_diameter_m))
    return np.degrees(2.0 * half_width)
