"""Quality assessment before publishing: the figures measured on a real FITS mosaic and its
PyBDSF catalogue against known truth, the verdict each fault earns, and, on both
databases, a failed mosaic held back until someone accepts it."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import select

from reconciler.cli import main
from reconciler.config import QualitySettings, load_settings
from reconciler.db import artifacts
from reconciler.db.engine import reading, writing
from reconciler.db.models import Event, QualityReport
from reconciler.desired.commands import accept
from reconciler.desired.explicit import request_window
from reconciler.engine.registry import ActionHandler, ActionRegistry
from reconciler.errors import PermanentError, RequestError
from reconciler.io.quality import draw_figure, measure, read_reference
from reconciler.io.sourcefind import find_sources
from reconciler.model import ActionKey, ActionKind, ClaimedAction, Quality
from reconciler.naming import (
    catalogue_paths,
    group_target,
    observation_key,
    quality_figure_of,
    weight_map_of,
)
from reconciler.quality import TileData, assess, radiometer_rms_jy
from reconciler.service import Reconciler
from reconciler.status import quality_reports, status_rows
from reconciler.steps import assess as assess_step
from reconciler.steps import catalogue, publish
from tests import engine_actions
from tests.conftest import write_config
from tests.integration.test_sourcefind import (
    ATTEMPT,
    BEAM_ARCSEC,
    NOISE_JY,
    SOURCES,
    write_image,
)
from tests.world import OBSERVATION, T0, add_observations, add_solution

OBSERVATION_KEY = observation_key(T0)
LATER = T0 + timedelta(hours=24)

#: A tile whose radiometer noise, with SEFD = :data:`SEFD_JY` and efficiency 1, is
#: NOISE_JY (the test image's noise), and whose diffraction limit is half the beam.
TILE = TileData(
    n_antennas=16,
    n_polarisations=2,
    bandwidth_hz=47e6,
    time_on_sky_s=309.24,
    flagged_fraction=0.0,
    longest_baseline_wavelengths=math.degrees(1.0) * 3600.0 / (BEAM_ARCSEC / 2),
)
SEFD_JY = NOISE_JY * math.sqrt(2 * 16 * 15 * 47e6 * 309.24)
LIMITS = QualitySettings(sefd_jy=SEFD_JY, efficiency=1.0)


def staged_mosaic(directory: Path) -> tuple[Path, list[dict]]:
    """A mosaic like the mosaic step stages (image, weight map) with the finder's
    catalogue and rms map beside it; returns it and the truth as reference rows."""
    directory.mkdir(parents=True, exist_ok=True)
    mosaic = directory / "mosaic.fits"
    wcs = write_image(mosaic, blank_border=20)
    header = fits.getheader(mosaic)
    weight = np.where(np.isfinite(fits.getdata(mosaic)), 1.0, np.nan).astype(np.float32)
    fits.PrimaryHDU(weight, header).writeto(weight_map_of(mosaic))
    scratch = directory / "scratch"
    scratch.mkdir()
    find_sources(mosaic, *catalogue_paths(mosaic), workdir=scratch, attempt=ATTEMPT)
    truth = []
    for i, (x, y, peak) in enumerate(SOURCES):
        position = wcs.pixel_to_world(x, y)
        # Reference flux densities are at 1.4 GHz; the image is at 1.405 GHz.
        flux = peak / (1.405e9 / 1.4e9) ** LIMITS.reference_spectral_index
        truth.append(
            {
                "name": f"src-{i}",
                "ra_deg": position.ra.deg,
                "dec_deg": position.dec.deg,
                "flux_jy": flux,
            }
        )
    return mosaic, truth


def write_reference(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=["name", "ra_deg", "dec_deg", "flux_jy"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory) -> tuple[Path, list[dict]]:
    return staged_mosaic(tmp_path_factory.mktemp("qa") / "staging")


def figures_of(mosaic: Path, reference: list[dict], tiles=(TILE,)):
    return measure(
        mosaic,
        tiles,
        reference,
        sefd_jy=LIMITS.sefd_jy,
        efficiency=LIMITS.efficiency,
        spectral_index=LIMITS.reference_spectral_index,
        match_radius_beams=LIMITS.match_radius_beams,
    )


def test_the_radiometer_equation_gives_the_noise_of_the_test_image():
    assert radiometer_rms_jy(TILE, SEFD_JY, 1.0) == pytest.approx(NOISE_JY)
    # Half the data flagged: the noise rises by the square root of two.
    flagged = replace(TILE, flagged_fraction=0.5)
    assert radiometer_rms_jy(flagged, SEFD_JY, 1.0) == pytest.approx(NOISE_JY * math.sqrt(2))


def test_a_good_mosaic_passes_with_its_figures_measured_right(mosaic, tmp_path):
    path, truth = mosaic
    reference = read_reference(write_reference(tmp_path / "reference.csv", truth))

    figures = figures_of(path, reference)
    verdict = assess(figures, LIMITS)

    assert verdict.quality is Quality.PASSED, verdict.summary
    assert figures.noise_ratio == pytest.approx(1.0, abs=0.2)
    assert len(figures.matches) == len(SOURCES) and not figures.missed
    ra, dec, scatter = figures.astrometry_arcsec
    assert abs(ra) < 0.1 * BEAM_ARCSEC and abs(dec) < 0.1 * BEAM_ARCSEC
    assert scatter < 0.2 * BEAM_ARCSEC
    scale, spread = figures.flux_scale
    assert scale == pytest.approx(1.0, abs=0.1) and spread < 0.15
    # The border of 20 pixels on two sides of 400 is blank.
    assert figures.blank_fraction == pytest.approx(1 - (380 / 400) ** 2, abs=1e-6)
    assert figures.dynamic_range == pytest.approx(0.150 / figures.rms_jy, rel=0.1)
    assert figures.beam_ratio == pytest.approx(2.0)

    png = tmp_path / "mosaic.qa.png"
    draw_figure(figures, verdict, "test mosaic", png, ATTEMPT)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mosaic.qa.png", "reference.csv"]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("flux scale", "flux scale 0.5"),
        ("position offsets", "median position offset"),
        ("a bright source missing", "reference source bright ("),
        ("excess noise", "times the expected"),
    ],
)
def test_each_fault_fails_the_mosaic_with_its_reason(mosaic, fault, reason):
    path, truth = mosaic
    limits = LIMITS
    if fault == "flux scale":
        # The mosaic holds half the flux the reference says: a wrong gain.
        truth = [{**row, "flux_jy": row["flux_jy"] * 2} for row in truth]
    elif fault == "position offsets":
        shift = 0.6 * BEAM_ARCSEC / 3600.0
        truth = [{**row, "dec_deg": row["dec_deg"] + shift} for row in truth]
    elif fault == "a bright source missing":
        ra, dec = truth[0]["ra_deg"] + 0.12, truth[0]["dec_deg"]
        truth = [*truth, {"name": "bright", "ra_deg": ra, "dec_deg": dec, "flux_jy": 0.5}]
    else:
        limits = replace(LIMITS, sefd_jy=SEFD_JY / 10)

    figures = measure(
        path,
        [TILE],
        truth,
        sefd_jy=limits.sefd_jy,
        efficiency=1.0,
        spectral_index=limits.reference_spectral_index,
        match_radius_beams=limits.match_radius_beams,
    )
    verdict = assess(figures, limits)

    assert verdict.quality is Quality.FAILED
    assert any(r.startswith(reason) or reason in r for r in verdict.reasons), verdict.reasons


def test_without_reference_sources_or_tile_data_the_mosaic_is_only_warned(mosaic):
    path, _ = mosaic
    figures = figures_of(path, [], tiles=())
    verdict = assess(figures, LIMITS)
    assert verdict.quality is Quality.WARNING
    assert "no reference source inside the footprint" in verdict.summary
    assert "expected noise unknown" in verdict.summary


def stage_test_mosaic(payload: dict) -> dict:
    """A mosaic step staging the test image (five known sources) and its weight map."""
    name = payload["target"].replace(":", "_") + f"_g{payload['generation']}"
    stage = Path(payload["work"]) / "staging" / name / "mosaic.fits"
    if not stage.exists():
        stage.parent.mkdir(parents=True, exist_ok=True)
        write_image(stage, blank_border=20)
        data = np.where(np.isfinite(fits.getdata(stage)), 1.0, np.nan).astype(np.float32)
        fits.PrimaryHDU(data, fits.getheader(stage)).writeto(weight_map_of(stage))
    return {"path": str(stage)}


def science_registry() -> ActionRegistry:
    """The test actions up to the tiles, then the test image as the mosaic and the real
    catalogue, assess and publish steps."""
    mosaic = ActionHandler(
        kind=ActionKind.MOSAIC,
        run="tests.integration.test_quality:stage_test_mosaic",
        prepare=engine_actions.prepare,
        record=engine_actions.record,
        product_exists=lambda path: Path(path).exists(),
    )
    real = (catalogue.HANDLER, assess_step.HANDLER, publish.HANDLER)
    kept = [
        h for h in engine_actions.registry() if h.kind not in {mosaic.kind, *(r.kind for r in real)}
    ]
    return ActionRegistry([*kept, mosaic, *real])


def _claimed(group: int) -> ClaimedAction:
    return ClaimedAction(
        id=1,
        key=ActionKey(ActionKind.PUBLISH, group_target(group), 1),
        group_id=group,
        attempts=1,
        owner="test",
        token="t",
        priority=T0,
    )


def test_a_failed_mosaic_is_held_until_accepted(engine, tmp_path, db_url):
    config = write_config(tmp_path, db_url)
    add_observations(engine, 3)
    add_solution(engine, OBSERVATION_KEY)
    _, truth = staged_mosaic(tmp_path / "truth")
    # The reference says every source is twice as bright as the mosaic has it.
    wrong = [{**row, "flux_jy": row["flux_jy"] * 2} for row in truth]
    reference = write_reference(tmp_path / "reference.csv", wrong)
    settings = load_settings(config)
    settings = replace(settings, qa=replace(LIMITS, reference_catalogue=reference))
    group = request_window(
        engine, T0, T0 + 3 * OBSERVATION, max_window=settings.decide_policy.max_window
    ).group_id
    service = Reconciler(
        engine, settings, science_registry(), clock=lambda: LATER, jitter=lambda: 0.5
    )

    report = service.run_pass()
    assert not report.failed and not report.errors
    with reading(engine) as conn:
        (row,) = status_rows(conn)
        staged = artifacts.staged_mosaic(conn, group, 1)
    assert row["phase"] == "held", row
    assert "flux scale 0.5" in row["reason"] and f"--accept {group}" in row["reason"]
    assert row["qa_status"] == "failed" and "flux scale" in row["qa_summary"]
    assert quality_figure_of(Path(staged)).is_file()
    assert service.run_pass().actions == [], "a held group waits: nothing runs"
    with reading(engine) as conn, pytest.raises(PermanentError, match="held"):
        publish.prepare(conn, _claimed(group), settings)
    assert main(["--config", str(config), "qa", str(group), "--json"]) == 0

    message = accept(engine, group, reason="known flux-scale error, fixed later", actor="cli:ops")
    assert "accepted" in message
    assert "already" in accept(engine, group, actor="cli:ops")
    report = service.run_pass()
    assert not report.failed and not report.errors

    with reading(engine) as conn:
        (row,) = status_rows(conn)
        quality = conn.execute(select(QualityReport.__table__)).one()
        events = conn.execute(select(Event.kind, Event.actor)).all()
    assert row["phase"] == "published"
    assert (quality.accepted_by, quality.accept_reason) == (
        "cli:ops",
        "known flux-scale error, fixed later",
    )
    assert ("accepted", "cli:ops") in events
    published = Path(row["published_path"])
    header = fits.getheader(published)
    assert (header["QASTATUS"], header["QAACCEPT"]) == ("failed", True)
    assert header["QAFLUXSC"] == pytest.approx(0.5, abs=0.05)
    assert header["QANREF"] == len(SOURCES)
    assert any(str(line).startswith("QA flux scale") for line in header["HISTORY"])
    assert quality_figure_of(published).is_file(), "the QA figure is published beside it"
    with reading(engine) as conn:
        (shown,) = quality_reports(conn, group)
    assert shown["figure_path"] == str(quality_figure_of(published))
    figures = json.loads(quality.figures)
    assert figures["expected_rms_jy"] is None
    assert figures["expected_problem"].startswith("3 tile(s) without readable calibrated data")


def test_accepting_what_did_not_fail_is_refused(engine, settings):
    add_observations(engine, 3)
    group = request_window(
        engine, T0, T0 + 3 * OBSERVATION, max_window=settings.decide_policy.max_window
    ).group_id
    with pytest.raises(RequestError, match="no quality assessment"):
        accept(engine, group)
    with writing(engine) as conn:
        artifacts.record_quality(
            conn, group, 1, quality="warning", summary="x", figures={}, figure_path="/x.png"
        )
    with pytest.raises(RequestError, match="is warning, not failed"):
        accept(engine, group)
