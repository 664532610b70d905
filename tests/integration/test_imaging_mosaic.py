"""Image calibrated snapshots and mosaic them: sources land where and as bright as simulated.

Three consecutive 5-minute observations around the 0834+555 transit, with two fainter
field sources, are simulated, converted, calibrated on the transit, imaged with tclean
and mosaicked. The array is 16 dishes and the four subbands span the whole band: a
smaller subset of the T puts its east-west dishes on a regular ~400 m grid, whose grating
lobes, unsmeared by a narrow band, are as high as the main lobe and drew a quarter of the
calibrator's flux into them.
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from reconciler.io.casa import casa_environment
from reconciler.io.deconvolve import circular_beam
from reconciler.io.imaging import (
    ImageResult,
    ImagingError,
    choose_grid,
    fast_fft_size,
    image_measurement_set,
    pointing_icrs,
)
from reconciler.io.mosaic import MosaicResult, Tile, build_mosaic
from reconciler.io.simulator import (
    INTEGRATION_S,
    INTEGRATIONS_PER_OBSERVATION,
    SimulationTruth,
    calibrator_field_sources,
    simulate_observations,
)
from reconciler.sky import angular_separation_deg
from tests.science_helpers import (
    apparent_hadec_deg,
    convert_each_observation,
    point_source_peak,
    run_casa_child,
    solve_arguments,
    transit_time,
)

DEC = 55.57
SOURCES = calibrator_field_sources()
CALIBRATOR = SOURCES[0]
N_OBSERVATIONS = 3
FIELD_OF_VIEW_DEG = 2.2
MEMBERS = ("obs0", "obs1", "obs2")

# wcslib notes that it derived OBSGEO-L/B/H from the tiles' OBSGEO-X/Y/Z: informational.
pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")


# --- pure helpers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minimum", "expected"), [(1, 2), (7, 8), (11, 12), (1900, 1920), (2049, 2160)]
)
def test_fast_fft_size_is_even_and_5_smooth(minimum, expected):
    assert fast_fft_size(minimum) == expected


def test_grid_samples_the_finest_resolution_and_covers_the_field():
    cell, size = choose_grid(2500.0, 1.5e9, 3.0)
    resolution = 299_792_458.0 / 1.5e9 / 2500.0 * 180 / math.pi * 3600
    assert resolution / 4.01 < cell <= resolution / 4
    assert size * cell >= 3.0 * 3600
    assert size == fast_fft_size(size)


def test_circular_beam_keeps_the_beam_area():
    major, minor, angle = circular_beam(40.0, 10.0)
    assert major == minor == 20.0
    assert angle == 0.0


def test_pointing_is_the_apparent_meridian_at_the_pointing_dec():
    mid = datetime(2025, 1, 15, 8, 50, tzinfo=UTC)
    ra, dec = pointing_icrs(mid, DEC)
    # Checked through pyuvdata's erfa path, not astropy's.
    hour_angle, apparent_dec = apparent_hadec_deg(ra, dec, mid)
    assert abs(hour_angle) * 3600 < 0.5
    assert abs(apparent_dec - DEC) * 3600 < 0.5
    # Precession since J2000 moves it minutes of arc from the phase centre (ICRS dec DEC).
    assert abs(dec - DEC) * 60 > 3


def test_pointing_needs_an_aware_time():
    with pytest.raises(ValueError, match="timezone"):
        pointing_icrs(datetime(2025, 1, 15, 8, 50), DEC)


def test_wsclean_backend_without_the_binary_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ImagingError, match="wsclean"):
        image_measurement_set(
            tmp_path / "missing.ms",
            tmp_path / "tile",
            field_of_view_deg=2.0,
            backend="wsclean",
            niter=10,
            threshold_jy=0.1,
        )


# --- science: simulate, convert, calibrate, image, mosaic ------------------------------


@pytest.fixture(scope="module")
def imaged(tmp_path_factory) -> dict:
    """Three observations, calibrated on the middle one (the transit), imaged, mosaicked."""
    out = tmp_path_factory.mktemp("imaging")
    transit = transit_time(
        CALIBRATOR.ra_deg, CALIBRATOR.dec_deg, datetime(2025, 1, 15, 8, tzinfo=UTC)
    )
    # The middle observation is centred on the transit.
    start = transit - timedelta(seconds=1.5 * INTEGRATIONS_PER_OBSERVATION * INTEGRATION_S)
    truth = simulate_observations(
        out,
        start,
        N_OBSERVATIONS * INTEGRATIONS_PER_OBSERVATION * INTEGRATION_S / 60.0,
        DEC,
        sources=SOURCES,
        subbands=(0, 5, 10, 15),
        n_antennas=16,
        channels_per_subband=12,
        noise_jy=0.05,
        seed=5,
    )
    raw_mss = convert_each_observation(truth, out, N_OBSERVATIONS)
    solve = solve_arguments(raw_mss[1], CALIBRATOR, truth, out)
    environment = casa_environment(out / "casa.log")
    tables = json.loads(run_casa_child(["solve", json.dumps(solve)], environment))["tables"]
    calibrated = []
    for index, ms in enumerate(raw_mss):
        apply = {"ms": str(ms), "tables": tables, "out_ms": str(out / f"obs{index}.cal.ms")}
        calibrated.append(
            Path(json.loads(run_casa_child(["apply", json.dumps(apply)], environment))["out_ms"])
        )

    images = [
        image_measurement_set(
            ms,
            out / "tiles" / f"obs{index}",
            field_of_view_deg=FIELD_OF_VIEW_DEG,
            niter=2000,
            threshold_jy=0.01,
        )
        for index, ms in enumerate(calibrated)
    ]
    observation_s = INTEGRATIONS_PER_OBSERVATION * INTEGRATION_S
    mosaic = build_mosaic(
        _tiles(images),
        out / "mosaic" / "mosaic.fits",
        members=MEMBERS,
        date_obs=start,
        date_end=start + timedelta(seconds=N_OBSERVATIONS * observation_s),
    )
    return {"truth": truth, "mss": calibrated, "images": images, "mosaic": mosaic, "out": out}


def _tiles(images: list[ImageResult]) -> list[Tile]:
    return [Tile(image.image_path, image.pb_path) for image in images]


def _band_flux(truth: SimulationTruth, source) -> float:
    """What an MFS image of the simulated channels measures: the band-mean flux."""
    return float(np.mean(source.flux_at(truth.frequencies_hz)))


@pytest.mark.e2e
def test_tiles_carry_a_full_celestial_header(imaged):
    for index, image in enumerate(imaged["images"]):
        header = fits.getheader(image.image_path)
        assert (header["CTYPE1"], header["CTYPE2"]) == ("RA---SIN", "DEC--SIN")
        assert header["RADESYS"] == "ICRS"
        assert header["BUNIT"] == "Jy/beam"
        assert header["NAXIS1"] == header["NAXIS2"] == image.image_size
        assert abs(header["CDELT2"]) * 3600 == pytest.approx(image.cell_arcsec)
        observation_start = imaged["truth"].observation_starts[index]
        assert abs(
            datetime.fromisoformat(header["DATE-OBS"]).replace(tzinfo=UTC) - observation_start
        ) < timedelta(seconds=1)
        # A fixed circular restoring beam near lambda / B_max (~18") for every tile.
        assert image.beam_major_arcsec == image.beam_minor_arcsec
        assert 12 < image.beam_major_arcsec < 30
        assert header["BMAJ"] * 3600 == pytest.approx(image.beam_major_arcsec)
        assert image.beam_major_arcsec / image.cell_arcsec > 3
        assert 0 < image.rms_jy < 0.02
        for path in (image.pb_path, image.pbcor_path):
            other = fits.getheader(path)
            assert (other["CTYPE1"], other["NAXIS1"]) == ("RA---SIN", image.image_size)


@pytest.mark.e2e
def test_primary_beam_is_centred_on_the_pointing_not_the_phase_centre(imaged):
    for image in imaged["images"]:
        with fits.open(image.pb_path) as hdus:
            beam = hdus[0].data
            wcs = WCS(hdus[0].header)
            header = hdus[0].header
        y, x = np.unravel_index(np.argmax(beam), beam.shape)
        ra, dec = wcs.pixel_to_world_values(x, y)
        to_pointing = angular_separation_deg(ra, dec, header["PNT-RA"], header["PNT-DEC"])
        to_phase_centre = angular_separation_deg(ra, dec, header["CRVAL1"], header["CRVAL2"])
        assert to_pointing * 3600 < 2 * image.cell_arcsec
        assert to_phase_centre * 60 > 4
        # Averaged over the 1.25 degree drift, the beam is below 1 even at its peak.
        assert 0.97 < beam.max() < 1.0


@pytest.mark.e2e
@pytest.mark.parametrize("source", SOURCES, ids=[source.name for source in SOURCES])
def test_sources_in_the_mosaic_are_where_and_as_bright_as_simulated(imaged, source):
    with fits.open(imaged["mosaic"].path) as hdus:
        mosaic = hdus[0].data
        wcs = WCS(hdus[0].header)
    peak, brightest_pixel, dx, dy = point_source_peak(mosaic, wcs, source.ra_deg, source.dec_deg)
    true_flux = _band_flux(imaged["truth"], source)
    assert math.hypot(dx, dy) < 1.0
    assert peak == pytest.approx(true_flux, rel=0.10)
    # Even the brightest pixel, not interpolated between pixels, is within 10 %.
    assert brightest_pixel == pytest.approx(true_flux, rel=0.10)


@pytest.mark.e2e
def test_mosaic_header_names_the_members_beam_and_dates(imaged):
    result: MosaicResult = imaged["mosaic"]
    header = fits.getheader(result.path)
    assert (header["CTYPE1"], header["CTYPE2"]) == ("RA---SIN", "DEC--SIN")
    assert header["BUNIT"] == "Jy/beam"
    assert header["CRPIX1"] == int(header["CRPIX1"])
    assert header["CRPIX2"] == int(header["CRPIX2"])
    widest = max(image.beam_major_arcsec for image in imaged["images"])
    assert header["BMAJ"] * 3600 == pytest.approx(widest)
    assert header["BMIN"] > 0
    assert "BPA" in header
    assert header["DATE-OBS"].startswith(imaged["truth"].observation_starts[0].strftime("%Y"))
    assert datetime.fromisoformat(header["DATE-END"]) > datetime.fromisoformat(header["DATE-OBS"])
    assert header["NMEMBERS"] == len(MEMBERS)
    assert [header[f"MEMBER{i:02d}"] for i in range(1, len(MEMBERS) + 1)] == list(MEMBERS)
    assert header["PEAK"] == pytest.approx(result.peak_jy)
    assert 0 < result.rms_jy < 0.02
    assert result.peak_jy == pytest.approx(CALIBRATOR.flux_jy, rel=0.10)


@pytest.mark.e2e
def test_weight_map_is_positive_where_the_mosaic_is_valid_and_blank_outside(imaged):
    result: MosaicResult = imaged["mosaic"]
    mosaic = fits.getdata(result.path)
    weight = fits.getdata(result.weight_path)
    assert weight.shape == mosaic.shape
    valid = np.isfinite(mosaic)
    assert valid.mean() > 0.5
    assert np.all(weight[valid] >= 0.2**2)
    assert np.all(~np.isfinite(weight[~valid]) | (weight[~valid] == 0))
    assert (~valid).any()


@pytest.mark.e2e
def test_quicklook_is_a_png(imaged):
    png = imaged["mosaic"].png_path
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


@pytest.mark.e2e
def test_running_again_changes_nothing(imaged):
    image = imaged["images"][1]
    result = imaged["mosaic"]
    products = [image.image_path, image.pb_path, image.pbcor_path]
    products += [result.path, result.weight_path, result.png_path]
    before = {path: os.stat(path).st_mtime_ns for path in products}

    again = image_measurement_set(
        imaged["mss"][1],
        image.image_path.with_name("obs1"),
        field_of_view_deg=FIELD_OF_VIEW_DEG,
        niter=2000,
        threshold_jy=0.01,
    )
    rebuilt = build_mosaic(
        _tiles(imaged["images"]),
        result.path,
        members=MEMBERS,
        date_obs=datetime(2025, 1, 15, tzinfo=UTC),
        date_end=datetime(2025, 1, 15, 1, tzinfo=UTC),
    )
    assert again == image
    assert rebuilt == result
    assert {path: os.stat(path).st_mtime_ns for path in products} == before
    assert not list(Path(imaged["out"], "tiles").glob(".*"))
