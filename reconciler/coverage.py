"""Cone searches and the coverage map of everything published: what ``reconciler cone``
and ``reconciler coverage`` do.

Publishing keeps both up to date (:mod:`reconciler.steps.publish`). :func:`rebuild_coverage`
catches up with what was published before footprints were kept: it reads the published
files of mosaics without a footprint, gives sources without a cell theirs, and writes the
coverage map again from every footprint in the database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from reconciler.config import Settings
from reconciler.db import cone
from reconciler.db.engine import reading, writing
from reconciler.errors import RequestError
from reconciler.io.coverage import draw_coverage, read_coverage, write_coverage
from reconciler.io.footprint import FootprintError, footprint_of
from reconciler.naming import coverage_path
from reconciler.skycells import FOOTPRINT_ORDER, SKY_SQ_DEG, healpix


def cone_search(engine: Engine, ra_deg: float, dec_deg: float, radius_deg: float) -> dict:
    """The published mosaics whose footprint contains the position and the catalogue
    sources within ``radius_deg`` of it (nearest first).

    Raises
    ------
    RequestError
        When the position or the radius is off the sky.
    """
    if not -90 <= dec_deg <= 90 or not 0 < radius_deg <= 180:
        raise RequestError("Dec must be within ±90° and the radius within (0°, 180°]")
    ra_deg %= 360.0
    with reading(engine) as conn:
        mosaics = cone.mosaics_containing(conn, ra_deg, dec_deg)
        sources = cone.sources_near(conn, ra_deg, dec_deg, radius_deg)
    return {
        "ra_deg": ra_deg,
        "dec_deg": dec_deg,
        "radius_deg": radius_deg,
        "mosaics": mosaics,
        "sources": sources,
    }


def coverage_report(engine: Engine, settings: Settings) -> dict[str, Any]:
    """The coverage map (its path and sky area) and what the database holds for it."""
    path = coverage_path(settings.paths.products)
    with reading(engine) as conn:
        counts = cone.coverage_counts(conn)
    return {
        "coverage_path": str(path),
        "coverage_exists": path.is_file(),
        "area_sq_deg": read_coverage(path).sky_fraction * SKY_SQ_DEG,
        "resolution_arcmin": healpix(FOOTPRINT_ORDER).pixel_resolution.to_value("arcmin"),
        **counts,
    }


def rebuild_coverage(engine: Engine, settings: Settings) -> dict[str, Any]:
    """Record the footprints of published mosaics that have none (read from their
    published files), give sources without a cell theirs, and write the coverage map from
    every footprint recorded. Returns what was done: ``footprints_added``,
    ``sources_filled`` and ``missing`` (published files that could not be read)."""
    with reading(engine) as conn:
        lacking = cone.products_without_footprint(conn)
    added, missing = 0, []
    for product in lacking:
        try:
            cells = footprint_of(Path(product["published_path"]))
        except (OSError, FootprintError) as exc:
            missing.append({**product, "error": str(exc)})
            continue
        with writing(engine) as conn:
            cone.record_footprint_of(conn, product["product_id"], cells)
        added += 1
    with writing(engine) as conn:
        filled = cone.fill_source_cells(conn)
    with reading(engine) as conn:
        write_coverage(coverage_path(settings.paths.products), cone.published_footprints(conn))
    return {"footprints_added": added, "sources_filled": filled, "missing": missing}


def draw_coverage_map(settings: Settings, png: Path) -> None:
    """Draw the coverage map of the products root into the PNG file ``png``."""
    draw_coverage(read_coverage(coverage_path(settings.paths.products)), png)


def cone_text(found: dict[str, Any]) -> str:
    """A cone search's result (as :func:`cone_search` gives it), as text."""
    lines = [
        f"RA {found['ra_deg']:.5f} Dec {found['dec_deg']:+.5f}: "
        f"{len(found['mosaics'])} published mosaic(s) cover it"
    ]
    lines += [
        f"  product {m['product_id']} (group {m['group_id']} generation {m['generation']}): "
        f"{m['published_path']}"
        for m in found["mosaics"]
    ]
    lines.append(f"{len(found['sources'])} source(s) within {found['radius_deg']} deg:")
    lines += [
        f'  {s["distance_deg"] * 3600:9.1f}"  RA {s["ra_deg"]:9.5f} Dec {s["dec_deg"]:+9.5f}  '
        f"{s['flux_jy'] * 1e3:9.2f} ± {s['flux_err_jy'] * 1e3:.2f} mJy  "
        f"product {s['product_id']}: {Path(s['published_path']).name}"
        for s in found["sources"]
    ]
    return "\n".join(lines)


def coverage_text(report: dict[str, Any]) -> str:
    """The coverage report (as :func:`coverage_report` gives it), as text."""
    lines = [
        f"coverage map: {report['coverage_path']}"
        + ("" if report["coverage_exists"] else " (none yet)"),
        f"  sky covered: {report['area_sq_deg']:.2f} deg² "
        f"(cells of {report['resolution_arcmin']:.1f}′)",
        f"  published mosaics: {report['published_mosaics']}, "
        f"with a footprint: {report['with_footprint']}",
    ]
    if "rebuilt" in report:
        rebuilt = report["rebuilt"]
        lines.append(
            f"  rebuilt: {rebuilt['footprints_added']} footprint(s) recorded, "
            f"{rebuilt['sources_filled']} source cell(s) filled, "
            f"{len(rebuilt['missing'])} published file(s) unreadable"
        )
        lines += [f"    {m['published_path']}: {m['error']}" for m in rebuilt["missing"]]
    if report["with_footprint"] < report["published_mosaics"] or report["sources_without_cell"]:
        lines.append(
            f"  {report['published_mosaics'] - report['with_footprint']} mosaic(s) without a "
            f"footprint, {report['sources_without_cell']} source(s) without a cell: "
            "run `reconciler coverage --rebuild`"
        )
    return "\n".join(lines)
