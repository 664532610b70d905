"""What a DSA-110-like array sees of point sources: layout, band, gains and visibilities.

The simulator (:mod:`reconciler.io.simulator`) writes these visibilities into raw files.
Each integration is fringe-stopped on the meridian point (HA 0, Dec pointing), so a
source at sky direction ``s`` appears with the phase ``2 pi (w_s - w_0) / lambda``:
pyuvdata's sign convention, in which phasing to a new centre multiplies by
``exp(-2 pi i (w_new - w_old) / lambda)``.

Antenna gains enter as ``conj(g_1) g_2`` on the baseline (ant_1, ant_2): pyuvdata's
baseline is ``ant_2 - ant_1`` with ``V = <A* B>``, and ``write_ms`` conjugates the data by
default, so CASA then sees ``g_1 conj(g_2)``, its own convention, and solves back ``g``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from astropy.coordinates import EarthLocation
from pyuvdata.utils import ECEF_from_ENU, XYZ_from_LatLonAlt
from pyuvdata.utils.phasing import calc_app_coords, calc_uvw
from pyuvdata.utils.times import get_lst_for_time

from reconciler.sky import (
    DISH_DIAMETER_M,
    SITE_HEIGHT_M,
    SITE_LATITUDE_DEG,
    SITE_LONGITUDE_DEG,
    SPEED_OF_LIGHT_M_S,
    airy_power,
)

BAND_TOP_HZ = 1499.0e6
BAND_BOTTOM_HZ = 1311.0e6
N_SUBBANDS_FULL = 16
SUBBAND_SPAN_HZ = (BAND_TOP_HZ - BAND_BOTTOM_HZ) / N_SUBBANDS_FULL
REFERENCE_FREQUENCY_HZ = 1.4e9

#: AIPS memo 117 codes, in the correlator's order (dsamfs/io.py).
POLARIZATION_CODES = {2: (-5, -6), 4: (-5, -7, -8, -6)}
POLARIZATION_NAMES = {-5: "XX", -6: "YY", -7: "XY", -8: "YX"}

_SECONDS_PER_DAY = 86400.0
_N_ANTENNAS_FULL = 110


@dataclass(frozen=True)
class SimulatedArray:
    """The simulated array: telescope location and antenna layout."""

    location: EarthLocation
    numbers: np.ndarray
    names: np.ndarray
    positions_ecef: np.ndarray  # relative to the telescope location
    ant_1: np.ndarray  # per baseline, autos included, ant_1 <= ant_2
    ant_2: np.ndarray


@dataclass(frozen=True)
class ObservationGeometry:
    """Per baseline-time geometry of one observation, shared by all its subbands."""

    times_jd: np.ndarray  # (n_blts,)
    lst_rad: np.ndarray
    uvw_pointing: np.ndarray  # (n_blts, 3), towards (HA 0, Dec pointing)
    source_delay_m: list[np.ndarray]  # per source (n_blts,), w_source - w_pointing
    source_separation_rad: list[np.ndarray]  # per source (n_blts,), from the pointing


def subband_frequencies(subband: int, channels_per_subband: int) -> np.ndarray:
    """Return the channel centres of one subband in file order (descending), Hz.

    Subband 0 holds the top of 1311–1499 MHz; each subband spans 1/16 of the band
    whatever its channel count.
    """
    width = SUBBAND_SPAN_HZ / channels_per_subband
    top = BAND_TOP_HZ - subband * SUBBAND_SPAN_HZ
    return top - (np.arange(channels_per_subband) + 0.5) * width


def dsa110_like_enu(n_antennas: int, array_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Return (full-array indices, ENU positions in metres) for a T-shaped array subset.

    The full array has 110 dishes: 62 on a 2.5 km east-west arm and 48 on a 1.5 km arm
    running south from its middle. The subset takes evenly spaced indices so both arms
    are always represented; it is deterministic. ``array_scale`` shrinks (or stretches)
    the layout: a compact array has coarser resolution and so images with fewer pixels,
    which is what keeps the demo quick.
    """
    if not 3 <= n_antennas <= _N_ANTENNAS_FULL:
        raise ValueError(f"n_antennas must be between 3 and {_N_ANTENNAS_FULL}")
    n_east_west = 62
    east = np.linspace(-1250.0, 1250.0, n_east_west)
    # A small fixed irregularity breaks the perfect spacing, as real pads do.
    east = east + 3.0 * np.sin(np.arange(n_east_west) * 1.7)
    north = -np.linspace(40.0, 1500.0, _N_ANTENNAS_FULL - n_east_west)
    full = np.concatenate(
        [
            np.column_stack([east, np.zeros(n_east_west), np.zeros(n_east_west)]),
            np.column_stack([np.zeros(north.size), north, np.zeros(north.size)]),
        ]
    )
    indices = np.unique(np.round(np.linspace(0, _N_ANTENNAS_FULL - 1, n_antennas)).astype(int))
    return indices, full[indices] * array_scale


def make_array(n_antennas: int, array_scale: float) -> SimulatedArray:
    """Return the array of :func:`dsa110_like_enu` at the DSA-110 site, with its baselines."""
    indices, enu = dsa110_like_enu(n_antennas, array_scale)
    lat, lon = math.radians(SITE_LATITUDE_DEG), math.radians(SITE_LONGITUDE_DEG)
    absolute = ECEF_from_ENU(enu, latitude=lat, longitude=lon, altitude=SITE_HEIGHT_M)
    centre = XYZ_from_LatLonAlt(lat, lon, SITE_HEIGHT_M)
    numbers = np.arange(len(indices))
    ant_1, ant_2 = np.triu_indices(len(indices))
    return SimulatedArray(
        location=EarthLocation.from_geodetic(SITE_LONGITUDE_DEG, SITE_LATITUDE_DEG, SITE_HEIGHT_M),
        numbers=numbers,
        names=np.array([f"{index + 1}" for index in indices]),
        positions_ecef=absolute - centre,
        ant_1=numbers[ant_1],
        ant_2=numbers[ant_2],
    )


def make_gains(
    rng: np.random.Generator,
    n_antennas: int,
    frequencies_hz: np.ndarray,
    amplitude_scatter: float,
    phase_scatter_deg: float,
) -> np.ndarray:
    """Return smooth bandpass gains, shape (n_antennas, n_frequencies, 2 feeds).

    Each antenna feed gets an amplitude, a phase, a delay of up to a nanosecond and a
    gentle ripple across the band: smooth in frequency, constant in time.
    """
    shape = (n_antennas, 1, 2)
    amplitude = 1.0 + amplitude_scatter * rng.standard_normal(shape)
    phase = np.radians(phase_scatter_deg) * rng.standard_normal(shape)
    delay_s = 1e-9 * rng.uniform(-1.0, 1.0, shape)
    ripple_phase = rng.uniform(0.0, 2 * np.pi, shape)
    relative = (frequencies_hz[None, :, None] - REFERENCE_FREQUENCY_HZ) / (
        BAND_TOP_HZ - BAND_BOTTOM_HZ
    )
    amplitude = amplitude * (1.0 + 0.05 * np.sin(2 * np.pi * 1.3 * relative + ripple_phase))
    phase = (
        phase
        + 2 * np.pi * delay_s * (frequencies_hz[None, :, None] - REFERENCE_FREQUENCY_HZ)
        + 0.1 * np.cos(2 * np.pi * 0.8 * relative + ripple_phase)
    )
    return amplitude * np.exp(1j * phase)


def observation_geometry(
    array: SimulatedArray,
    first_centre_jd: float,
    n_integrations: int,
    integration_s: float,
    dec_rad: float,
    source_positions_deg: Sequence[tuple[float, float]],
) -> ObservationGeometry:
    """Return the uvw, delays and beam offsets of one observation's integrations.

    Parameters
    ----------
    array
        The simulated array.
    first_centre_jd
        Centre of the first integration, JD (UTC).
    n_integrations, integration_s
        Number and length of the integrations.
    dec_rad
        Pointing declination; the array points at the meridian.
    source_positions_deg
        ICRS (RA, Dec) of each source, degrees.
    """
    n_baselines = array.ant_1.size
    centres = first_centre_jd + np.arange(n_integrations) * integration_s / _SECONDS_PER_DAY
    times = np.repeat(centres, n_baselines)
    ant_1 = np.tile(array.ant_1, n_integrations)
    ant_2 = np.tile(array.ant_2, n_integrations)
    lst = get_lst_for_time(times, telescope_loc=array.location)

    def uvw_towards(app_ra: np.ndarray, app_dec: np.ndarray) -> np.ndarray:
        return calc_uvw(
            app_ra=app_ra,
            app_dec=app_dec,
            frame_pa=np.zeros_like(app_ra),
            lst_array=lst,
            use_ant_pos=True,
            antenna_positions=array.positions_ecef,
            antenna_numbers=array.numbers,
            ant_1_array=ant_1,
            ant_2_array=ant_2,
            telescope_lat=array.location.lat.rad,
            telescope_lon=array.location.lon.rad,
        )

    # The meridian point at the pointing dec: apparent RA = local apparent sidereal time.
    pointing_dec = np.full_like(lst, dec_rad)
    uvw_pointing = uvw_towards(lst, pointing_dec)
    delays, separations = [], []
    for ra_deg, dec_deg in source_positions_deg:
        app_ra, app_dec = calc_app_coords(
            lon_coord=math.radians(ra_deg),
            lat_coord=math.radians(dec_deg),
            coord_frame="icrs",
            time_array=times,
            lst_array=lst,
            telescope_loc=array.location,
        )
        delays.append(uvw_towards(app_ra, app_dec)[:, 2] - uvw_pointing[:, 2])
        separations.append(_great_circle(app_ra, app_dec, lst, pointing_dec))
    return ObservationGeometry(times, lst, uvw_pointing, delays, separations)


def subband_visibilities(
    array: SimulatedArray,
    geometry: ObservationGeometry,
    source_spectra_jy: Sequence[np.ndarray],
    frequencies: np.ndarray,
    gains: np.ndarray,
    polarizations: Sequence[int],
    noise_jy: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Return visibilities (n_blts, n_channels, n_pols) in pyuvdata's convention.

    ``source_spectra_jy`` holds each source's Stokes I flux density at ``frequencies``,
    in the order of the geometry's sources; ``gains`` are those of :func:`make_gains` at
    ``frequencies``.
    """
    n_blts = geometry.times_jd.size
    sky = np.zeros((n_blts, frequencies.size), dtype=np.complex128)
    for spectrum, delay, separation in zip(
        source_spectra_jy, geometry.source_delay_m, geometry.source_separation_rad, strict=True
    ):
        beam = airy_power(separation[:, None], frequencies[None, :], DISH_DIAMETER_M)
        phase = 2 * np.pi * delay[:, None] * frequencies[None, :] / SPEED_OF_LIGHT_M_S
        sky += spectrum[None, :] * beam * np.exp(1j * phase)

    n_integrations = n_blts // array.ant_1.size
    ant_1 = np.tile(array.ant_1, n_integrations)
    ant_2 = np.tile(array.ant_2, n_integrations)
    data = np.zeros((n_blts, frequencies.size, len(polarizations)), dtype=np.complex128)
    for index, code in enumerate(polarizations):
        feeds = POLARIZATION_NAMES[code]
        first = gains[ant_1, :, "XY".index(feeds[0])]
        second = gains[ant_2, :, "XY".index(feeds[1])]
        # An unpolarised source: XX = YY = I, the cross-hands see none of it.
        signal = sky if feeds[0] == feeds[1] else np.zeros_like(sky)
        data[:, :, index] = np.conj(first) * second * signal
    cross = ant_1 != ant_2
    if noise_jy > 0:
        noise = rng.standard_normal(data.shape) + 1j * rng.standard_normal(data.shape)
        data[cross] += noise_jy * noise[cross]
    # Autocorrelations must be real; give them the total power they would see.
    data[~cross] = np.abs(data[~cross])
    return data.astype(np.complex64)


def _great_circle(
    ra1: np.ndarray, dec1: np.ndarray, ra2: np.ndarray, dec2: np.ndarray
) -> np.ndarray:
    cos_sep = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(ra1 - ra2)
    return np.arccos(np.clip(cos_sep, -1.0, 1.0))
