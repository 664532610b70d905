"""Independent astronomy for the science tests: computed another way than the code under test."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from astropy.coordinates import EarthLocation
from astropy.time import Time
from pyuvdata.utils.phasing import calc_app_coords
from pyuvdata.utils.times import get_lst_for_time

from reconciler.io.simulator import PointSource, equivalent_sefd_jy, write_reference_catalogue
from reconciler.sky import SITE_HEIGHT_M, SITE_LATITUDE_DEG, SITE_LONGITUDE_DEG

_SITE = (SITE_LATITUDE_DEG, SITE_LONGITUDE_DEG, SITE_HEIGHT_M)


def apparent_hour_angle_deg(ra_deg: float, dec_deg: float, when: datetime) -> float:
    """Apparent hour angle of an ICRS position at the site, via pyuvdata's erfa path."""
    return apparent_hadec_deg(ra_deg, dec_deg, when)[0]


def apparent_hadec_deg(ra_deg: float, dec_deg: float, when: datetime) -> tuple[float, float]:
    """Apparent (hour angle, declination) of an ICRS position at the site, degrees."""
    jd = np.array([Time(when).jd])
    lst = get_lst_for_time(jd, latitude=_SITE[0], longitude=_SITE[1], altitude=_SITE[2])
    site = EarthLocation.from_geodetic(_SITE[1], _SITE[0], _SITE[2])
    app_ra, app_dec = calc_app_coords(
        lon_coord=np.radians(ra_deg),
        lat_coord=np.radians(dec_deg),
        time_array=jd,
        lst_array=lst,
        telescope_loc=site,
    )
    hour_angle = float(np.degrees((lst[0] - app_ra[0] + np.pi) % (2 * np.pi) - np.pi))
    return hour_angle, float(np.degrees(app_dec[0]))


def meridian_ra_by_bisection(when: datetime, dec_deg: float) -> float:
    """ICRS RA at ``dec_deg`` whose apparent hour angle is 0 at ``when``, by bisection."""
    jd = np.array([Time(when).jd])
    lst_deg = np.degrees(
        get_lst_for_time(jd, latitude=_SITE[0], longitude=_SITE[1], altitude=_SITE[2])[0]
    )
    low, high = lst_deg - 2.0, lst_deg + 2.0
    for _ in range(60):
        middle = (low + high) / 2.0
        # Hour angle falls as RA rises.
        if apparent_hour_angle_deg(middle, dec_deg, when) > 0:
            low = middle
        else:
            high = middle
    return ((low + high) / 2.0) % 360.0


def transit_time(ra_deg: float, dec_deg: float, near: datetime) -> datetime:
    """The apparent meridian transit of an ICRS position nearest ``near`` (secant method)."""
    sidereal = 86164.0905 / 360.0  # seconds of time per degree of hour angle
    when = near
    for _ in range(6):
        when -= timedelta(seconds=apparent_hour_angle_deg(ra_deg, dec_deg, when) * sidereal)
    return when


def run_casa_child(arguments: list[str], environment: dict[str, str], timeout: float = 300):
    """Run ``python -m reconciler.io.casa ...`` with the offline CASA environment."""
    completed = subprocess.run(
        [sys.executable, "-m", "reconciler.io.casa", *arguments],
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return completed.stdout.strip().splitlines()[-1]


def point_source_peak(
    image: np.ndarray, wcs, ra_deg: float, dec_deg: float, search_px: int = 5
) -> tuple[float, float, float, float]:
    """Peak of a point source near a sky position in a restored image, and its offset.

    Takes the brightest pixel within ``search_px`` of the position and fits a parabola to
    the logarithm of its 3 x 3 neighbourhood (exact for a Gaussian beam), so the peak is
    read between pixels too.

    Returns
    -------
    (interpolated peak, brightest pixel value, x offset px, y offset px); the offsets are
    of the interpolated peak from the true position.
    """
    x, y = (float(v) for v in wcs.world_to_pixel_values(ra_deg, dec_deg))
    xi, yi = round(x), round(y)
    box = image[yi - search_px : yi + search_px + 1, xi - search_px : xi + search_px + 1]
    j, i = np.unravel_index(np.nanargmax(box), box.shape)
    py, px = yi - search_px + j, xi - search_px + i
    log = np.log(np.clip(image[py - 1 : py + 2, px - 1 : px + 2], 1e-12, None))
    curvature_x = log[1, 0] - 2 * log[1, 1] + log[1, 2]
    curvature_y = log[0, 1] - 2 * log[1, 1] + log[2, 1]
    dx = 0.5 * (log[1, 0] - log[1, 2]) / curvature_x
    dy = 0.5 * (log[0, 1] - log[2, 1]) / curvature_y
    log_peak = log[1, 1] - 0.25 * (log[1, 0] - log[1, 2]) * dx - 0.25 * (log[0, 1] - log[2, 1]) * dy
    return float(np.exp(log_peak)), float(image[py, px]), px + dx - x, py + dy - y


def solved_total_gains(caltables: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Bandpass times gain from solved tables: (antenna indices, solution[ant, chan, feed])."""
    from casacore import tables

    bandpass_table, gain_table = caltables
    with tables.table(bandpass_table, ack=False) as bandpass:
        antennas = bandpass.getcol("ANTENNA1")
        solution = bandpass.getcol("CPARAM")
        assert not bandpass.getcol("FLAG").any()
    with tables.table(gain_table, ack=False) as gain:
        assert np.array_equal(gain.getcol("ANTENNA1"), antennas)
        solution = solution * gain.getcol("CPARAM")
    return antennas, solution


def gain_errors(solution: np.ndarray, injected: np.ndarray) -> tuple[float, float]:
    """Worst amplitude error (fraction) and phase error (deg, relative to antenna 0)."""
    amplitude_error = np.abs(np.abs(solution) / np.abs(injected) - 1.0)

    def relative_to_reference(gains: np.ndarray) -> np.ndarray:
        return gains * np.conj(gains[0]) / np.abs(gains[0])

    phase_error_deg = np.degrees(
        np.angle(relative_to_reference(solution) * np.conj(relative_to_reference(injected)))
    )
    return float(amplitude_error.max()), float(np.abs(phase_error_deg).max())


def convert_each_observation(truth, out: Path, count: int) -> list[Path]:
    """Convert the simulated observations one by one into ``out/obs<N>.ms``."""
    from reconciler.io.convert import convert_observation

    per_observation = len(truth.files) // count
    mss = []
    for index in range(count):
        ms = out / f"obs{index}.ms"
        files = truth.files[index * per_observation : (index + 1) * per_observation]
        convert_observation(files, ms, scratch_dir=out)
        mss.append(ms)
    return mss


def solve_arguments(ms: Path, calibrator, truth, out: Path) -> dict:
    """Keyword arguments of ``reconciler.io.casa solve`` for ``calibrator`` in ``ms``."""
    return {
        "ms": str(ms),
        "calibrator_ra_deg": calibrator.ra_deg,
        "calibrator_dec_deg": calibrator.dec_deg,
        "flux_jy": calibrator.flux_jy,
        "spectral_index": calibrator.spectral_index,
        "refant": truth.antenna_names[0],
        "out_prefix": str(out / calibrator.name),
    }


def simulated_quality(
    directory: Path,
    sources: Iterable[PointSource],
    noise_jy: float,
    channels_per_subband: int,
    noise_ratio_fail: float,
) -> dict[str, Any]:
    """``[qa]`` settings for simulated data: the simulator's noise as an SEFD at efficiency
    1, the injected ``sources`` as the reference catalogue (written into ``directory``), and
    ``noise_ratio_fail``: small arrays with a bright calibrator in the field are limited by
    its sidelobes, tens of times above the thermal noise, not by the noise itself."""
    return {
        "sefd_jy": equivalent_sefd_jy(noise_jy, channels_per_subband),
        "efficiency": 1.0,
        "reference_catalogue": write_reference_catalogue(directory / "reference.csv", sources),
        "noise_ratio_fail": noise_ratio_fail,
    }
