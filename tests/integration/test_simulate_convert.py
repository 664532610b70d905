"""Simulated DSA-110 raw files in, one Measurement Set out: real pyuvdata and casacore."""

from __future__ import annotations

import math
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import h5py
import numpy as np
import pytest
from casacore import tables

from reconciler.io.convert import ConversionError, convert_observation, phase_centre_ra_deg
from reconciler.io.ms import MsError, read_ms_summary
from reconciler.io.simulator import (
    INTEGRATION_S,
    PointSource,
    SimulationTruth,
    simulate_observations,
)
from reconciler.io.uvh5 import RawFileError, parse_raw_name, read_raw_header
from reconciler.sky import airy_power
from tests.science_helpers import apparent_hadec_deg, meridian_ra_by_bisection

DEC = 55.57
N_ANTENNAS = 8
N_INTEGRATIONS = 24
START = datetime(2025, 1, 15, 10, 0, 0, tzinfo=UTC)
MID = START + timedelta(seconds=N_INTEGRATIONS * INTEGRATION_S / 2)
FLUX = 5.0


@pytest.fixture(scope="module")
def centred(tmp_path_factory) -> tuple[SimulationTruth, Path]:
    """One observation, unity gains, no noise, one source on the mid-observation meridian."""
    out = tmp_path_factory.mktemp("centred")
    source = PointSource("centre", meridian_ra_by_bisection(MID, DEC), DEC, FLUX)
    truth = simulate_observations(
        out,
        START,
        5,
        DEC,
        sources=[source],
        n_subbands=3,
        n_antennas=N_ANTENNAS,
        channels_per_subband=8,
        gain_amplitude_scatter=0.0,
        gain_phase_scatter_deg=0.0,
        name_jitter_s=4.0,
    )
    ms = out / "centred.ms"
    convert_observation(truth.files, ms, scratch_dir=out / "scratch")
    return truth, ms


def test_parse_raw_name():
    assert parse_raw_name("2025-01-15T10:00:03_sb07.hdf5") == (
        datetime(2025, 1, 15, 10, 0, 3, tzinfo=UTC),
        7,
    )
    assert parse_raw_name("2025-01-15T10:00:03_sb07.hdf5.tmp") is None
    assert parse_raw_name("2025-13-15T10:00:03_sb07.hdf5") is None


def test_raw_header_reports_subband_dec_and_data_times(centred):
    truth, _ = centred
    headers = sorted((read_raw_header(path) for path in truth.files), key=lambda h: h.subband)
    assert [h.subband for h in headers] == [0, 1, 2]
    for header in headers:
        assert header.pointing_dec_deg == pytest.approx(DEC, abs=1e-9)
        assert header.data_start == START
        assert header.data_end == START + timedelta(seconds=N_INTEGRATIONS * INTEGRATION_S)
        assert (
            timedelta(0) <= header.name_time - START.replace(microsecond=0) <= timedelta(seconds=4)
        )
        assert header.n_times == N_INTEGRATIONS
        assert header.n_baselines == N_ANTENNAS * (N_ANTENNAS + 1) // 2
        assert (header.n_channels, header.n_pols) == (8, 2)
    # sb00 is the top of the band.
    assert headers[0].freq_max_hz > headers[1].freq_max_hz > headers[2].freq_max_hz
    assert headers[0].freq_max_hz < 1499e6 < headers[0].freq_max_hz + headers[0].channel_width_hz


def test_truncated_file_raises_naming_it(centred, tmp_path):
    truth, _ = centred
    broken = tmp_path / truth.files[0].name
    broken.write_bytes(truth.files[0].read_bytes()[:5000])
    with pytest.raises(RawFileError, match=re.escape(broken.name)):
        read_raw_header(broken)


def test_garbage_file_raises_naming_it(tmp_path):
    garbage = tmp_path / "2025-01-15T10:00:00_sb03.hdf5"
    garbage.write_bytes(b"not an hdf5 file")
    with pytest.raises(RawFileError, match="sb03"):
        read_raw_header(garbage)


def test_missing_pointing_dec_raises(centred, tmp_path):
    truth, _ = centred
    copy = tmp_path / truth.files[0].name
    shutil.copy(truth.files[0], copy)
    with h5py.File(copy, "r+") as handle:
        del handle["Header/extra_keywords/phase_center_dec"]
    with pytest.raises(RawFileError, match="phase_center_dec"):
        read_raw_header(copy)


def test_ms_phase_centre_is_the_apparent_meridian_at_mid_observation(centred):
    _, ms = centred
    summary = read_ms_summary(ms)
    expected_ra = meridian_ra_by_bisection(summary.mid, DEC)
    offset_arcsec = (summary.phase_centre_ra_deg - expected_ra) * 3600 * math.cos(math.radians(DEC))
    assert abs(offset_arcsec) < 1.0
    assert summary.phase_centre_dec_deg == pytest.approx(DEC, abs=1e-9)
    assert summary.phase_centre_frame in ("ICRS", "J2000")
    assert summary.mid == MID.replace(microsecond=round(MID.microsecond, -3))


def test_ms_shape_and_frequencies(centred):
    truth, ms = centred
    summary = read_ms_summary(ms, with_flagged_fraction=True)
    n_baselines = N_ANTENNAS * (N_ANTENNAS + 1) // 2
    assert summary.n_rows == n_baselines * N_INTEGRATIONS
    assert summary.n_times == N_INTEGRATIONS
    assert summary.n_antennas == N_ANTENNAS
    assert summary.n_spectral_windows == 1
    assert summary.n_channels == 24
    assert summary.frequencies_ascending
    assert summary.freq_min_hz == pytest.approx(truth.frequencies_hz.min())
    assert summary.freq_max_hz == pytest.approx(truth.frequencies_hz.max())
    assert summary.start == START
    assert summary.flagged_fraction == 0.0


def test_source_at_phase_centre_has_zero_phase_after_conversion(centred):
    """Proves the rephasing: any error in the assumed raw phasing shows up as phase."""
    truth, ms = centred
    with tables.table(str(ms), ack=False) as main:
        data = main.getcol("DATA")
        cross = main.getcol("ANTENNA1") != main.getcol("ANTENNA2")
    with tables.table(str(ms / "SPECTRAL_WINDOW"), ack=False) as spw:
        frequencies = spw.getcell("CHAN_FREQ", 0)
    phase_deg = np.degrees(np.angle(data[cross]))
    assert np.abs(phase_deg).max() < 0.01
    # The source drifts through the beam, nearest the pointing at mid-observation. The
    # beam points at the *apparent* pointing dec, minutes of arc from the ICRS one.
    amplitude = np.abs(data[cross])
    _, apparent_dec = apparent_hadec_deg(truth.sources[0].ra_deg, DEC, MID)
    nearest = math.radians(abs(apparent_dec - DEC))
    assert amplitude.max() == pytest.approx(FLUX * airy_power(nearest, frequencies.min()), rel=1e-3)
    first_centre = START + timedelta(seconds=INTEGRATION_S / 2)
    hour_angle, apparent_dec = apparent_hadec_deg(truth.sources[0].ra_deg, DEC, first_centre)
    farthest = _great_circle_rad(hour_angle, apparent_dec, 0.0, DEC)
    assert amplitude.min() == pytest.approx(
        FLUX * airy_power(farthest, frequencies.max()), rel=1e-3
    )
    np.testing.assert_allclose(data[cross][..., 0], data[cross][..., 1], rtol=1e-6)


def _great_circle_rad(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    lon1, lat1, lon2, lat2 = map(math.radians, (lon1, lat1, lon2, lat2))
    return math.acos(
        math.sin(lat1) * math.sin(lat2) + math.cos(lat1) * math.cos(lat2) * math.cos(lon1 - lon2)
    )


def test_four_polarisations_convert(tmp_path):
    source = PointSource("centre", meridian_ra_by_bisection(MID, DEC), DEC, FLUX)
    truth = simulate_observations(
        tmp_path,
        START,
        5,
        DEC,
        sources=[source],
        n_subbands=2,
        n_antennas=6,
        n_pols=4,
        gain_amplitude_scatter=0.0,
        gain_phase_scatter_deg=0.0,
    )
    summary = convert_observation(truth.files, tmp_path / "four.ms", scratch_dir=tmp_path)
    assert summary.n_pols == 4
    with tables.table(str(tmp_path / "four.ms"), ack=False) as main:
        data = main.getcol("DATA")
        cross = main.getcol("ANTENNA1") != main.getcol("ANTENNA2")
    with tables.table(str(tmp_path / "four.ms" / "POLARIZATION"), ack=False) as pol:
        assert list(pol.getcell("CORR_TYPE", 0)) == [9, 10, 11, 12]  # XX XY YX YY
    parallel = data[cross][..., [0, 3]]
    assert np.abs(np.degrees(np.angle(parallel))).max() < 0.01
    assert np.abs(data[cross][..., [1, 2]]).max() == 0.0


def test_converting_again_is_a_no_op(centred):
    truth, ms = centred
    before = (ms / "table.dat").stat().st_mtime_ns
    summary = convert_observation(truth.files, ms, scratch_dir=ms.parent / "scratch")
    assert (ms / "table.dat").stat().st_mtime_ns == before
    assert summary.n_channels == 24


def test_broken_output_is_redone(centred, tmp_path):
    truth, _ = centred
    ms = tmp_path / "redo.ms"
    ms.mkdir()
    (ms / "junk").write_text("left by a crash")
    summary = convert_observation(truth.files, ms, scratch_dir=tmp_path)
    assert summary.n_rows > 0
    assert not (ms / "junk").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["redo.ms"]


def test_different_channel_layouts_are_refused(centred, tmp_path):
    truth, _ = centred
    odd = simulate_observations(
        tmp_path / "odd",
        START,
        5,
        DEC,
        subbands=[5],
        n_antennas=N_ANTENNAS,
        channels_per_subband=16,
    )
    with pytest.raises(ConversionError, match=re.escape(odd.files[0].name)):
        convert_observation([*truth.files, *odd.files], tmp_path / "x.ms", scratch_dir=tmp_path)
    assert not (tmp_path / "x.ms").exists()


def test_mismatched_pointing_dec_is_refused(centred, tmp_path):
    truth, _ = centred
    other = simulate_observations(
        tmp_path / "dec", START, 5, 40.0, subbands=[5], n_antennas=N_ANTENNAS
    )
    with pytest.raises(ConversionError, match="pointing dec"):
        convert_observation([*truth.files, *other.files], tmp_path / "x.ms", scratch_dir=tmp_path)


def test_unreadable_subband_is_refused_by_name(centred, tmp_path):
    truth, _ = centred
    broken = tmp_path / "2025-01-15T10:00:00_sb09.hdf5"
    broken.write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    with pytest.raises(ConversionError, match="sb09"):
        convert_observation([*truth.files, broken], tmp_path / "x.ms", scratch_dir=tmp_path)


def test_ms_summary_errors_name_the_path(tmp_path):
    with pytest.raises(MsError, match=r"missing\.ms"):
        read_ms_summary(tmp_path / "missing.ms")
    (tmp_path / "empty.ms").mkdir()
    with pytest.raises(MsError, match=r"empty\.ms"):
        read_ms_summary(tmp_path / "empty.ms")


def test_ms_with_no_rows_is_an_error(centred, tmp_path):
    _, ms = centred
    with tables.table(str(ms), ack=False) as main, main.query("ANTENNA1 < 0") as none:
        none.copy(str(tmp_path / "rowless.ms"), deep=True)
    with pytest.raises(MsError, match="no rows"):
        read_ms_summary(tmp_path / "rowless.ms")


def test_meridian_ra_agrees_with_an_independent_solution():
    when = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
    for dec in (-20.0, 37.2314, 71.0):
        offset = phase_centre_ra_deg(when, dec) - meridian_ra_by_bisection(when, dec)
        assert abs(offset * 3600 * math.cos(math.radians(dec))) < 0.5
