"""Light curves through the real catalogue step (PyBDSF on small FITS mosaics): sources
associated across two mosaics, a missed source measured by forced photometry, recording
again changing nothing, and ``reconciler lightcurve``."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from astropy.io import fits
from sqlalchemy import func, insert, select

from reconciler.cli import main
from reconciler.config import Settings
from reconciler.db import artifacts
from reconciler.db.engine import reading, writing
from reconciler.db.lightcurves import light_curves
from reconciler.db.models import MosaicGroup, SkySource, SkySourceMeasurement
from reconciler.errors import PermanentError
from reconciler.model import ActionKey, ActionKind, ClaimedAction
from reconciler.steps import catalogue
from tests.conftest import write_config
from tests.integration.test_sourcefind import BEAM_ARCSEC, NOISE_JY, SOURCES, write_image
from tests.world import T0

#: The second mosaic: the brightest source at half its flux, the faintest but one gone.
FADED, GONE = 0, 3
SECOND = [
    (x, y, peak / 2 if i == FADED else peak) for i, (x, y, peak) in enumerate(SOURCES) if i != GONE
]


def _mosaic(engine, settings: Settings, day: int, sources) -> tuple[int, Path]:
    """A group whose window is the first hour of ``day`` with a staged mosaic of
    ``sources``; returns the group and the mosaic's world coordinates."""
    start = T0 + timedelta(days=day)
    directory = settings.paths.work / f"day{day}"
    directory.mkdir()
    mosaic = directory / "mosaic.fits"
    wcs = write_image(mosaic, seed=day + 1, sources=sources)
    with writing(engine) as conn:
        group = conn.execute(
            insert(MosaicGroup)
            .values(window_start=start, window_end=start + timedelta(hours=1))
            .returning(MosaicGroup.id)
        ).scalar_one()
        artifacts.stage_mosaic(conn, group, 1, stage_path=str(mosaic))
    return group, wcs


def _claimed(group: int) -> ClaimedAction:
    return ClaimedAction(
        id=group,
        key=ActionKey(ActionKind.CATALOGUE, f"group:{group}", 1),
        group_id=group,
        attempts=1,
        owner="test",
        token=uuid.uuid4().hex,
        priority=T0,
    )


def _prepare(engine, settings: Settings, claimed: ClaimedAction) -> dict:
    with reading(engine) as conn:
        payload = catalogue.prepare(conn, claimed, settings)
    return {**payload, "attempt_id": claimed.token}


def _run(payload: dict, workdir: Path, monkeypatch) -> dict:
    """The child's part, here in this process; its result as JSON carries it."""
    monkeypatch.chdir(workdir)
    return json.loads(json.dumps(catalogue.run(payload)))


def _catalogue(engine, settings: Settings, group: int, workdir: Path, monkeypatch):
    """The catalogue step as the engine runs it: prepare, run, record; returns what it was
    given and what it made, to record again."""
    claimed = _claimed(group)
    payload = _prepare(engine, settings, claimed)
    result = _run(payload, workdir, monkeypatch)
    with writing(engine) as conn:
        catalogue.record(conn, claimed, payload, result)
    return claimed, payload, result


def _agrees(measurement: dict, peak: float) -> bool:
    """Within 10 %, or three errors for the faintest (12σ: 10 % is 1.2σ)."""
    error = max(0.1 * peak, 3 * measurement["flux_err_jy"])
    return abs(measurement["flux_jy"] - peak) < error


def _counts(engine) -> tuple[int, int]:
    with reading(engine) as conn:
        return (
            conn.execute(select(func.count()).select_from(SkySource)).scalar_one(),
            conn.execute(select(func.count()).select_from(SkySourceMeasurement)).scalar_one(),
        )


def test_two_mosaics_make_one_light_curve_per_source_and_forced_upper_limits(
    engine, settings, tmp_path, monkeypatch
):
    first, wcs = _mosaic(engine, settings, 0, SOURCES)
    second, _ = _mosaic(engine, settings, 1, SECOND)
    _catalogue(engine, settings, first, tmp_path, monkeypatch)
    assert _counts(engine) == (len(SOURCES), len(SOURCES))

    claimed, payload, result = _catalogue(engine, settings, second, tmp_path, monkeypatch)

    assert len(payload["known_sources"]) == len(SOURCES)
    assert _counts(engine) == (len(SOURCES), 2 * len(SOURCES)), "no new sky source"
    with reading(engine) as conn:
        for index, (x, y, peak) in enumerate(SOURCES):
            where = wcs.pixel_to_world(x, y)
            (curve,) = light_curves(conn, where.ra.deg, where.dec.deg, BEAM_ARCSEC)
            assert curve["separation_arcsec"] < BEAM_ARCSEC / 4
            before, after = curve["measurements"]
            assert after["observed_at"] - before["observed_at"] == timedelta(days=1)
            assert not before["forced"] and _agrees(before, peak)
            if index == GONE:
                # Forced photometry where nothing is: noise, with the rms map's error.
                assert after["forced"] and abs(after["flux_jy"]) < 4 * NOISE_JY
                assert after["flux_err_jy"] == pytest.approx(NOISE_JY, rel=0.3)
                limit = max(after["flux_jy"], 0.0) + 3 * after["flux_err_jy"]
                assert after["upper_limit_jy"] == pytest.approx(limit)
                assert after["mosaic"] == str(settings.paths.work / "day1" / "mosaic.fits")
            else:
                expected = peak / 2 if index == FADED else peak
                assert not after["forced"] and _agrees(after, expected)
                assert after["upper_limit_jy"] is None

    # Recording the same result again (a crash after the record committed, a retry)
    # replaces its measurements: no sky source and no measurement twice.
    with writing(engine) as conn:
        catalogue.record(conn, claimed, payload, result)
    assert _counts(engine) == (len(SOURCES), 2 * len(SOURCES))
    # Running the whole step again reads the finished search back: the same again.
    _catalogue(engine, settings, second, tmp_path, monkeypatch)
    assert _counts(engine) == (len(SOURCES), 2 * len(SOURCES))


def test_two_mosaics_searched_at_once_make_each_sky_source_once(
    engine, settings, tmp_path, monkeypatch
):
    """Neighbouring windows share observations, so their mosaics share sources; both are
    prepared before either is recorded, and the second to record finds the first's."""
    claims = [_claimed(_mosaic(engine, settings, day, SOURCES)[0]) for day in (0, 1)]
    payloads = [_prepare(engine, settings, claimed) for claimed in claims]
    assert [p["known_sources"] for p in payloads] == [[], []]
    results = [_run(payload, tmp_path, monkeypatch) for payload in payloads]

    for claimed, payload, result in zip(claims, payloads, results, strict=True):
        with writing(engine) as conn:
            catalogue.record(conn, claimed, payload, result)

    assert _counts(engine) == (len(SOURCES), 2 * len(SOURCES))


def test_a_mosaic_without_a_beam_is_refused_by_name(engine, settings):
    group, _ = _mosaic(engine, settings, 0, SOURCES)
    mosaic = settings.paths.work / "day0" / "mosaic.fits"
    with fits.open(mosaic, mode="update") as hdus:
        del hdus[0].header["BMAJ"]
    with pytest.raises(PermanentError, match=r"mosaic\.fits: no sky grid and restoring beam"):
        _prepare(engine, settings, _claimed(group))


def test_forced_photometry_reads_a_known_source_at_its_flux(
    engine, settings, tmp_path, monkeypatch
):
    """A source the finder misses is still measured right where it is: the forced flux
    is the beam-weighted fit, not the nearest pixel."""
    first, wcs = _mosaic(engine, settings, 0, SOURCES[:1])
    _catalogue(engine, settings, first, tmp_path, monkeypatch)
    # Above the noise but below the finder's 5σ threshold, off the pixel grid.
    with reading(engine) as conn:
        known = conn.execute(select(SkySource.ra_deg, SkySource.dec_deg)).one()
    x, y = wcs.world_to_pixel_values(*known)
    second, _ = _mosaic(engine, settings, 1, [(float(x), float(y), 4 * NOISE_JY)])
    _catalogue(engine, settings, second, tmp_path, monkeypatch)

    with reading(engine) as conn:
        (curve,) = light_curves(conn, *known, BEAM_ARCSEC)
    after = curve["measurements"][1]
    assert after["forced"]
    assert after["flux_jy"] == pytest.approx(4 * NOISE_JY, abs=1.5 * NOISE_JY)


def test_the_lightcurve_command_prints_json_text_and_a_png(
    engine, settings, db_url, tmp_path, monkeypatch, capsys
):
    for day, sources in enumerate((SOURCES, SECOND)):
        group, wcs = _mosaic(engine, settings, day, sources)
        _catalogue(engine, settings, group, tmp_path, monkeypatch)
    config = write_config(tmp_path, db_url)
    gone = wcs.pixel_to_world(*SOURCES[GONE][:2])
    where = [f"{gone.ra.deg}", f"{gone.dec.deg}"]
    capsys.readouterr()

    assert main(["--config", str(config), "lightcurve", *where, "--json"]) == 0
    (curve,) = json.loads(capsys.readouterr().out)
    assert [m["forced"] for m in curve["measurements"]] == [False, True]

    assert main(["--config", str(config), "lightcurve", *where]) == 0
    text = capsys.readouterr().out
    assert "detected" in text and "(forced)" in text

    png = tmp_path / "curve.png"
    assert main(["--config", str(config), "lightcurve", *where, "--png", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["--config", str(config), "lightcurve", "10", "-20", "--radius", "5"]) == 2
