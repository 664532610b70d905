"""Cone search and coverage: a published mosaic's footprint (its non-blank pixels, not its
bounding box) is recorded as sky cells, a cone search finds it and the catalogue sources
near a position (``reconciler cone``, or plain SQL), and every publish unions it into the
coverage MOC of the products root (``reconciler coverage``)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from sqlalchemy import delete, select, update

from reconciler.cli import main
from reconciler.coverage import cone_search, rebuild_coverage
from reconciler.db import artifacts
from reconciler.db.cone import cone_sql
from reconciler.db.engine import reading, writing
from reconciler.db.models import Footprint, FootprintCell, RegistryEntry, Source
from reconciler.desired.explicit import request_window
from reconciler.engine.registry import ActionRegistry
from reconciler.io.coverage import read_coverage
from reconciler.naming import coverage_path
from reconciler.service import Reconciler
from reconciler.sky import angular_separation_deg
from reconciler.skycells import FOOTPRINT_ORDER, area_sq_deg
from tests import engine_actions
from tests.engine_children import SKY_MOSAIC_RADIUS_DEG, sky_mosaic_centre
from tests.world import OBSERVATION, T0, add_observations, add_solution

LATER = T0 + timedelta(hours=24)


def sky_registry() -> ActionRegistry:
    """The test actions, with a mosaic step that stages a real FITS mosaic with blanks and
    the real publish."""
    return engine_actions.publishing_registry("tests.engine_children:stage_sky_mosaic")


def publish_window(engine, settings, start) -> RegistryEntry:
    """Publish the mosaic of three observations from ``start``; returns its product."""
    add_observations(engine, 3, start=start)
    group = request_window(
        engine, start, start + 3 * OBSERVATION, max_window=settings.decide_policy.max_window
    ).group_id
    service = Reconciler(engine, settings, sky_registry(), clock=lambda: LATER, jitter=lambda: 0.5)
    report = service.run_pass()
    assert not report.failed and not report.errors
    with reading(engine) as conn:
        product = conn.execute(select(RegistryEntry).where(RegistryEntry.group_id == group)).one()
    assert product.status == "published"
    return product


def component(ra_deg: float, dec_deg: float, flux_jy: float) -> dict[str, float]:
    """A catalogue component at a position."""
    return {
        "ra_deg": ra_deg,
        "dec_deg": dec_deg,
        "ra_err_arcsec": 1.0,
        "dec_err_arcsec": 1.0,
        "peak_jy": flux_jy,
        "peak_err_jy": 0.001,
        "flux_jy": flux_jy,
        "flux_err_jy": 0.001,
        "major_arcsec": 30.0,
        "minor_arcsec": 20.0,
        "pa_deg": 0.0,
        "deconvolved_major_arcsec": 0.0,
        "deconvolved_minor_arcsec": 0.0,
        "local_rms_jy": 0.0005,
    }


def offset(ra_deg: float, dec_deg: float, east_deg: float, north_deg: float) -> tuple:
    """A position ``east_deg`` and ``north_deg`` away (small offsets)."""
    return ra_deg + east_deg / np.cos(np.radians(dec_deg)), dec_deg + north_deg


@pytest.fixture
def world(engine, settings):
    """One mosaic published through the real publish step, with a catalogue of sources
    0.1°, 0.3° and 0.5° from its centre and one outside it."""
    add_solution(engine, add_observations(engine, 1, start=T0 - OBSERVATION)[0])
    product = publish_window(engine, settings, T0)
    ra, dec = sky_mosaic_centre(product.group_id)
    sources = [
        component(*offset(ra, dec, 0.3, 0.0), 0.030),
        component(*offset(ra, dec, 0.0, -0.1), 0.010),
        component(*offset(ra, dec, -0.5, 0.0), 0.050),
        component(*offset(ra, dec, 3.0, 0.0), 0.020),
    ]
    with writing(engine) as conn:
        artifacts.record_catalogue(
            conn, product.group_id, product.generation, path="c.fits", rms_path="r.fits",
            finder="test", finder_version="0", median_rms_jy=None, components=sources,
        )  # fmt: skip
    return {"product": product, "centre": (ra, dec)}


def test_the_footprint_is_the_non_blank_pixels(engine, world):
    ra, dec = world["centre"]
    inside = offset(ra, dec, 0.4, 0.4)  # 0.57° from the centre: on the disc
    corner = offset(ra, dec, 0.8, 0.8)  # in the image, blank: 1.13° from the centre
    beyond = offset(ra, dec, 2.0, 0.0)

    found = cone_search(engine, *inside, 0.1)
    assert [m["product_id"] for m in found["mosaics"]] == [world["product"].id]
    assert found["mosaics"][0]["published_path"] == world["product"].published_path
    assert cone_search(engine, *corner, 0.1)["mosaics"] == []
    assert cone_search(engine, *beyond, 0.1)["mosaics"] == []
    with reading(engine) as conn:
        footprint = conn.execute(select(Footprint)).one()
    disc = np.pi * SKY_MOSAIC_RADIUS_DEG**2
    assert footprint.registry_id == world["product"].id
    assert footprint.area_sq_deg == pytest.approx(area_sq_deg(footprint.n_cells))
    # Resolved to cells of 3.4′: the disc's area within a ring of one cell.
    assert footprint.area_sq_deg == pytest.approx(disc, rel=0.1)


def test_sources_within_the_radius_nearest_first(engine, world):
    ra, dec = world["centre"]

    found = cone_search(engine, ra, dec, 0.4)["sources"]
    assert [s["flux_jy"] for s in found] == [0.010, 0.030]
    assert [s["distance_deg"] for s in found] == pytest.approx([0.1, 0.3], abs=1e-3)
    assert all(s["product_id"] == world["product"].id for s in found)
    assert found[0]["published_path"] == world["product"].published_path
    wide = cone_search(engine, ra, dec, 3.5)["sources"]
    assert [s["flux_jy"] for s in wide] == [0.010, 0.030, 0.050, 0.020]
    assert cone_search(engine, ra, dec, 0.05)["sources"] == []


def test_a_source_cone_misses_nothing_at_any_radius(engine, world):
    ra, dec = world["centre"]
    with reading(engine) as conn:
        every = conn.execute(select(Source.ra_deg, Source.dec_deg)).all()
    for radius in (0.0999, 0.1001, 0.2999, 0.3001, 0.4999, 0.5001, 2.9, 3.1, 30.0):
        expected = sorted(
            float(angular_separation_deg(ra, dec, s.ra_deg, s.dec_deg))
            for s in every
            if angular_separation_deg(ra, dec, s.ra_deg, s.dec_deg) <= radius
        )
        found = [s["distance_deg"] for s in cone_search(engine, ra, dec, radius)["sources"]]
        assert found == pytest.approx(expected), radius


def test_the_sql_form_finds_the_same(engine, world):
    ra, dec = world["centre"]
    mosaics, sources = cone_sql(*offset(ra, dec, 0.4, 0.4), 0.4)
    with reading(engine) as conn:
        by_sql = conn.exec_driver_sql(mosaics).mappings().all()
    assert [m["product_id"] for m in by_sql] == [world["product"].id]

    mosaics, sources = cone_sql(ra, dec, 0.4)
    with reading(engine) as conn:
        by_sql = conn.exec_driver_sql(sources).mappings().all()
    found = cone_search(engine, ra, dec, 0.4)["sources"]
    assert [s["flux_jy"] for s in by_sql] == [s["flux_jy"] for s in found]
    assert [s["distance_deg"] for s in by_sql] == pytest.approx([s["distance_deg"] for s in found])


def test_each_publish_unions_its_footprint_into_the_coverage_map(engine, settings, world):
    path = coverage_path(settings.paths.products)
    first = read_coverage(path)
    ra, dec = world["centre"]
    assert first.contains_lonlat([ra] * u.deg, [dec] * u.deg).all()
    assert not first.contains_lonlat(*(v * u.deg for v in offset(ra, dec, 0.8, 0.8))).any()
    with reading(engine) as conn:
        footprint = conn.execute(select(Footprint)).one()
    assert first.sky_fraction * 4 * np.pi * (180 / np.pi) ** 2 == pytest.approx(
        footprint.area_sq_deg
    )
    assert first.max_order == FOOTPRINT_ORDER

    second = publish_window(engine, settings, T0 + 3 * OBSERVATION)
    both = read_coverage(path)
    ra2, dec2 = sky_mosaic_centre(second.group_id)
    assert both.contains_lonlat([ra, ra2] * u.deg, [dec, dec2] * u.deg).all()
    assert both.sky_fraction == pytest.approx(2 * first.sky_fraction, rel=0.02)
    assert [m["product_id"] for m in cone_search(engine, ra2, dec2, 0.1)["mosaics"]] == [second.id]


def test_the_cone_and_coverage_commands(config, engine, world, capsys, tmp_path):
    ra, dec = world["centre"]
    assert main(["--config", str(config), "cone", str(ra), str(dec), "0.4", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [m["product_id"] for m in shown["mosaics"]] == [world["product"].id]
    assert [s["flux_jy"] for s in shown["sources"]] == [0.010, 0.030]
    assert shown["sources"][0]["distance_deg"] == pytest.approx(0.1, abs=1e-3)

    assert main(["--config", str(config), "cone", str(ra), str(dec), "0.4"]) == 0
    out = capsys.readouterr().out
    assert "1 published mosaic(s) cover it" in out
    assert "2 source(s) within 0.4 deg" in out

    assert main(["--config", str(config), "cone", str(ra), str(dec), "0.4", "--sql"]) == 0
    assert "FROM footprint_cells f JOIN data_registry r" in capsys.readouterr().out

    png = tmp_path / "coverage.png"
    assert main(["--config", str(config), "coverage", "--json", "--png", str(png)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["published_mosaics"] == shown["with_footprint"] == 1
    assert shown["area_sq_deg"] == pytest.approx(np.pi * SKY_MOSAIC_RADIUS_DEG**2, rel=0.1)
    assert png.read_bytes().startswith(b"\x89PNG")

    assert main(["--config", str(config), "cone", str(ra), "91", "0.4"]) == 2


def test_rebuild_fills_what_was_published_before_footprints(engine, settings, world, config):
    """A mosaic published before footprints were kept, sources without cells and a lost
    coverage map: ``coverage --rebuild`` reads the published file and fills them in."""
    ra, dec = world["centre"]
    before = cone_search(engine, ra, dec, 0.4)
    with writing(engine) as conn:
        conn.execute(delete(FootprintCell))
        conn.execute(delete(Footprint))
        conn.execute(update(Source).values(cell=None))
    path = coverage_path(settings.paths.products)
    path.unlink()
    assert cone_search(engine, ra, dec, 0.4) == {**before, "mosaics": [], "sources": []}

    rebuilt = rebuild_coverage(engine, settings)

    assert rebuilt == {"footprints_added": 1, "sources_filled": 4, "missing": []}
    assert cone_search(engine, ra, dec, 0.4) == before
    assert read_coverage(path).contains_lonlat([ra] * u.deg, [dec] * u.deg).all()
    assert rebuild_coverage(engine, settings)["footprints_added"] == 0


def _add_discs(path: str, centres: list[tuple[float, float]]) -> None:
    """One publisher: each disc unioned into the coverage map on its own."""
    from reconciler.io.coverage import add_to_coverage
    from reconciler.skycells import cells_near

    for ra, dec in centres:
        add_to_coverage(Path(path), cells_near(ra, dec, 0.5, FOOTPRINT_ORDER))


def test_publishers_at_once_lose_no_footprint(tmp_path):
    import multiprocessing

    path = tmp_path / "products" / "coverage.moc.fits"
    centres = [[(10.0 + 3 * i + 30 * p, 20.0) for i in range(5)] for p in range(4)]
    context = multiprocessing.get_context("spawn")
    publishers = [context.Process(target=_add_discs, args=(str(path), c)) for c in centres]
    for publisher in publishers:
        publisher.start()
    for publisher in publishers:
        publisher.join(120)
        assert publisher.exitcode == 0

    coverage = read_coverage(path)
    ras = [ra for chunk in centres for ra, _ in chunk]
    assert coverage.contains_lonlat(ras * u.deg, [20.0] * len(ras) * u.deg).all()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.name + ".lock"]
