"""CASA solves back the gains the simulator injected, offline, in a child process.

This is the test DESIGN §5 asks for: it fails if the simulator, pyuvdata's conjugation on
writing the MS, the converter's rephasing or the calibration model get a sign wrong.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from casacore import tables

from reconciler.io.casa import casa_environment
from reconciler.io.ms import mjd_seconds_to_datetime
from reconciler.io.simulator import (
    INTEGRATION_S,
    SimulationTruth,
    calibrator_field_sources,
    simulate_observations,
)
from reconciler.sky import airy_power
from tests.science_helpers import (
    apparent_hadec_deg,
    convert_each_observation,
    gain_errors,
    run_casa_child,
    solve_arguments,
    solved_total_gains,
    transit_time,
)

DEC = 55.57
CALIBRATOR = calibrator_field_sources()[0]
NOISE_JY = 0.05


@pytest.fixture(scope="module")
def solved(tmp_path_factory) -> tuple[SimulationTruth, list[Path], dict, Path]:
    """Two observations, the first holding the 0834+555 transit; tables solved on it."""
    out = tmp_path_factory.mktemp("calibration")
    transit = transit_time(
        CALIBRATOR.ra_deg, CALIBRATOR.dec_deg, datetime(2025, 1, 15, 8, tzinfo=UTC)
    )
    start = transit - timedelta(seconds=10 * INTEGRATION_S)
    truth = simulate_observations(
        out,
        start,
        10,
        DEC,
        sources=[CALIBRATOR],
        n_subbands=3,
        n_antennas=8,
        channels_per_subband=16,
        noise_jy=NOISE_JY,
        seed=3,
    )
    mss = convert_each_observation(truth, out, 2)
    arguments = solve_arguments(mss[0], CALIBRATOR, truth, out)
    result = json.loads(
        run_casa_child(["solve", json.dumps(arguments)], casa_environment(out / "casa.log"))
    )
    return truth, mss, result, out


def test_solved_gains_match_the_injected_ones(solved):
    truth, _, result, _ = solved
    antennas, solution = solved_total_gains(result["tables"])
    injected = truth.gains[antennas]  # the MS holds exactly the simulated channels
    assert solution.shape == injected.shape

    amplitude_error, phase_error_deg = gain_errors(solution, injected)
    assert amplitude_error < 0.01
    assert phase_error_deg < 1.0
    assert result["flagged_fraction"] == 0.0
    assert result["snr_median"] > 100


def test_solving_leaves_the_ms_as_it_was(solved):
    _, mss, _, _ = solved
    with tables.table(str(mss[0]), ack=False) as main:
        assert "MODEL_DATA" not in main.colnames()
        assert "CORRECTED_DATA" not in main.colnames()


@pytest.mark.parametrize("observation", [0, 1])
def test_calibrated_calibrator_amplitude_is_flux_times_beam(solved, observation):
    """Also applies tables solved on one observation to the next, as the pipeline does."""
    _, mss, result, out = solved
    applied = out / f"obs{observation}_calibrated.ms"
    arguments = {"ms": str(mss[observation]), "tables": result["tables"], "out_ms": str(applied)}
    reply = json.loads(run_casa_child(["apply", json.dumps(arguments)], casa_environment()))
    assert reply["out_ms"] == str(applied)
    with tables.table(str(mss[observation]), ack=False) as raw:
        assert "CORRECTED_DATA" not in raw.colnames()

    with tables.table(str(applied), ack=False) as main:
        corrected = main.getcol("CORRECTED_DATA")
        flags = main.getcol("FLAG")
        cross = main.getcol("ANTENNA1") != main.getcol("ANTENNA2")
        times = main.getcol("TIME")
    with tables.table(str(applied / "SPECTRAL_WINDOW"), ack=False) as spw:
        frequencies = spw.getcell("CHAN_FREQ", 0)
    assert not flags.any()

    for time in np.unique(times)[::6]:
        rows = cross & (times == time)
        when = mjd_seconds_to_datetime(float(time))
        hour_angle, apparent_dec = apparent_hadec_deg(CALIBRATOR.ra_deg, CALIBRATOR.dec_deg, when)
        separation = _great_circle_rad(hour_angle, apparent_dec, 0.0, DEC)
        expected = CALIBRATOR.flux_at(frequencies) * airy_power(separation, frequencies)
        # Averaging over baselines beats the noise down well below 1 %.
        measured = np.abs(corrected[rows]).mean(axis=0)  # (channel, pol)
        np.testing.assert_allclose(measured, np.stack([expected] * 2, axis=1), rtol=0.01)


def _great_circle_rad(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    lon1, lat1, lon2, lat2 = map(math.radians, (lon1, lat1, lon2, lat2))
    return math.acos(
        math.sin(lat1) * math.sin(lat2) + math.cos(lat1) * math.cos(lat2) * math.cos(lon1 - lon2)
    )


def test_a_smearing_budget_averages_channels_before_calibrating(solved):
    """The averaged calibrated MS holds the mean of the calibrated channels it averages, to
    0.5 %: the bandpass, interpolated to the averaged channels, is smooth across them."""
    _, mss, result, out = solved
    calibrated = {}
    for budget in (0.0, 0.05):
        applied = out / f"obs0_budget{budget}.ms"
        arguments = {
            "ms": str(mss[0]),
            "tables": result["tables"],
            "out_ms": str(applied),
            "max_smearing_loss": budget,
        }
        run_casa_child(["apply", json.dumps(arguments)], casa_environment())
        with tables.table(str(applied), ack=False) as main:
            calibrated[budget] = main.getcol("CORRECTED_DATA")
    full, averaged = calibrated[0.0], calibrated[0.05]
    factor = full.shape[1] // averaged.shape[1]
    assert factor > 1 and full.shape[1] == factor * averaged.shape[1]
    rows, channels, pols = averaged.shape
    expected = full.reshape(rows, channels, factor, pols).mean(axis=2)
    scale = np.abs(expected).max()
    assert np.abs(averaged - expected).max() < 5e-3 * scale
