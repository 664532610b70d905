"""Light curves: sky sources associated across catalogued mosaics and their measurements.

The catalogue step records, in the transaction that records a mosaic's catalogue, one
measurement per sky source on that mosaic: the component that detects it, or forced
photometry at its position. Association runs there, against the sky sources committed by
then (serialised: on SQLite by the write lock, on PostgreSQL by an advisory lock), so two
overlapping mosaics catalogued at once never make two sky sources of one source.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, or_, select

from reconciler.association import Position, SkyBox, associate
from reconciler.db.models import (
    MosaicGroup,
    RegistryEntry,
    SkySource,
    SkySourceMeasurement,
    SourceCatalogue,
)
from reconciler.sky import angular_separation_deg

#: The PostgreSQL advisory lock that serialises association (any constant of our own).
_ASSOCIATION_LOCK = 0x44534131


def sky_sources_in(conn: Connection, box: SkyBox) -> dict[int, Position]:
    """The sky sources in ``box``, by id."""
    if box.ra_low <= box.ra_high:
        in_ra = SkySource.ra_deg.between(box.ra_low, box.ra_high)
    else:
        in_ra = or_(SkySource.ra_deg >= box.ra_low, SkySource.ra_deg <= box.ra_high)
    rows = conn.execute(
        select(SkySource.id, SkySource.ra_deg, SkySource.dec_deg).where(
            SkySource.dec_deg.between(box.dec_low, box.dec_high), in_ra
        )
    )
    return {row.id: Position(row.ra_deg, row.dec_deg) for row in rows}


def record_measurements(
    conn: Connection,
    catalogue_id: int,
    group_id: int,
    *,
    box: SkyBox,
    components: list[dict[str, float]],
    source_ids: list[int],
    forced: dict[int, tuple[float, float]],
    radius_arcsec: float,
) -> None:
    """Associate a freshly recorded catalogue's components with the sky sources around
    its mosaic and record one measurement per sky source on it.

    ``box`` holds the mosaic (widened by the radius); ``components`` are the catalogue's
    and ``source_ids`` their rows in ``sources``, in the same order; ``forced`` maps the
    sky sources known when the mosaic was searched to the forced (flux, error) at their
    positions, for those on the mosaic.

    A component that detects no known source makes a new sky source at its position; a
    known source no component detects gets its forced measurement. A sky source made
    after the search (by a mosaic catalogued meanwhile) and not detected here has no
    measurement on this mosaic.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(_ASSOCIATION_LOCK)))
    known = sky_sources_in(conn, box)
    found = [Position(c["ra_deg"], c["dec_deg"], c["peak_jy"]) for c in components]
    association = associate(found, known, radius_arcsec)
    detected = dict(association.detected)
    for index in association.new:
        detected[index] = conn.execute(
            insert(SkySource)
            .values(ra_deg=components[index]["ra_deg"], dec_deg=components[index]["dec_deg"])
            .returning(SkySource.id)
        ).scalar_one()
    observed_at = _window_middle(conn, group_id)
    rows = [
        {
            "sky_source_id": sky_source_id,
            "catalogue_id": catalogue_id,
            "source_id": source_ids[index],
            "observed_at": observed_at,
            "flux_jy": components[index]["peak_jy"],
            "flux_err_jy": components[index]["peak_err_jy"],
            "forced": False,
        }
        for index, sky_source_id in detected.items()
    ]
    rows += [
        {
            "sky_source_id": sky_source_id,
            "catalogue_id": catalogue_id,
            "source_id": None,
            "observed_at": observed_at,
            "flux_jy": forced[sky_source_id][0],
            "flux_err_jy": forced[sky_source_id][1],
            "forced": True,
        }
        for sky_source_id in association.missed
        if sky_source_id in forced
    ]
    if rows:
        conn.execute(insert(SkySourceMeasurement), rows)


def _window_middle(conn: Connection, group_id: int) -> datetime:
    start, end = conn.execute(
        select(MosaicGroup.window_start, MosaicGroup.window_end).where(MosaicGroup.id == group_id)
    ).one()
    return start + (end - start) / 2


#: A forced measurement's upper limit: its flux (0 when negative) plus this many errors.
UPPER_LIMIT_SIGMA = 3.0


def light_curves(
    conn: Connection, ra_deg: float, dec_deg: float, radius_arcsec: float
) -> list[dict[str, Any]]:
    """The sky sources within ``radius_arcsec`` of a position, nearest first, each with its
    measurements in time order (one per mosaic: the newest generation catalogued of each
    group), the mosaic they were made on (published path, else staged) and, for forced
    ones, an upper limit of flux + 3 errors."""
    box = SkyBox.around([ra_deg], [dec_deg], radius_arcsec / 3600.0)
    near = []
    for sky_source_id, position in sky_sources_in(conn, box).items():
        separation = 3600.0 * float(
            angular_separation_deg(ra_deg, dec_deg, position.ra_deg, position.dec_deg)
        )
        if separation <= radius_arcsec:
            near.append((separation, sky_source_id, position))
    return [
        {
            "sky_source_id": sky_source_id,
            "ra_deg": position.ra_deg,
            "dec_deg": position.dec_deg,
            "separation_arcsec": separation,
            "measurements": _measurements(conn, sky_source_id),
        }
        for separation, sky_source_id, position in sorted(near)
    ]


def _measurements(conn: Connection, sky_source_id: int) -> list[dict[str, Any]]:
    newer = SourceCatalogue.__table__.alias("newer")
    newest = (
        select(func.max(newer.c.generation))
        .where(newer.c.group_id == SourceCatalogue.group_id)
        .scalar_subquery()
    )
    rows = conn.execute(
        select(
            SkySourceMeasurement.observed_at,
            SkySourceMeasurement.flux_jy,
            SkySourceMeasurement.flux_err_jy,
            SkySourceMeasurement.forced,
            SourceCatalogue.group_id,
            SourceCatalogue.generation,
            func.coalesce(RegistryEntry.published_path, RegistryEntry.stage_path).label("mosaic"),
        )
        .join(SourceCatalogue, SourceCatalogue.id == SkySourceMeasurement.catalogue_id)
        .outerjoin(
            RegistryEntry,
            (RegistryEntry.kind == "mosaic")
            & (RegistryEntry.group_id == SourceCatalogue.group_id)
            & (RegistryEntry.generation == SourceCatalogue.generation),
        )
        .where(
            SkySourceMeasurement.sky_source_id == sky_source_id,
            SourceCatalogue.generation == newest,
        )
        .order_by(SkySourceMeasurement.observed_at, SourceCatalogue.group_id)
    )
    return [
        {
            **row._asdict(),
            "upper_limit_jy": (
                max(row.flux_jy, 0.0) + UPPER_LIMIT_SIGMA * row.flux_err_jy if row.forced else None
            ),
        }
        for row in rows
    ]
