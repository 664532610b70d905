"""Cone searches and footprints in the database: which published mosaics cover a position
and which catalogue sources lie near it, both by HEALPix cells
(:mod:`reconciler.skycells`), so a search reads a few index entries whatever the number
of mosaics.

The SQL a search runs is plain SQL on both backends; :func:`cone_sql` writes it out with
the cells of one search filled in, for a person to run by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from sqlalchemy import (
    Connection,
    Integer,
    bindparam,
    func,
    insert,
    literal,
    select,
    text,
    update,
)

from reconciler.db.models import (
    Footprint,
    FootprintCell,
    RegistryEntry,
    Source,
    SourceCatalogue,
)
from reconciler.db.queries import staged_mosaic_id
from reconciler.sky import angular_separation_deg
from reconciler.skycells import (
    SOURCE_ORDER,
    area_sq_deg,
    cells_of,
    footprint_cells,
    footprint_key,
    footprint_rows,
    source_ranges,
)

#: Rows per statement when footprints or source cells are written.
_BATCH = 5000


def record_footprint(conn: Connection, group_id: int, generation: int, cells: list[int]) -> None:
    """Record the footprint (cells of ``FOOTPRINT_ORDER``) of the mosaic of one group
    generation; one recorded already stands (the same file has the same footprint).

    Raises
    ------
    PermanentError
        When the mosaic was never staged.
    """
    registry_id = staged_mosaic_id(conn, group_id, generation)
    record_footprint_of(conn, registry_id, np.asarray(cells, dtype=np.int64))


def record_footprint_of(conn: Connection, registry_id: int, cells: np.ndarray) -> None:
    """Record the footprint of the product ``registry_id`` unless it has one."""
    known = conn.execute(
        select(Footprint.registry_id).where(Footprint.registry_id == registry_id)
    ).scalar()
    if known is not None:
        return
    rows = footprint_rows(cells)
    n_cells = len(np.unique(cells))
    conn.execute(
        insert(Footprint).values(
            registry_id=registry_id, n_cells=n_cells, area_sq_deg=area_sq_deg(n_cells)
        )
    )
    for start in range(0, len(rows), _BATCH):
        conn.execute(
            insert(FootprintCell),
            [
                {"cell": cell, "registry_id": registry_id, "mask": mask}
                for cell, mask in rows[start : start + _BATCH]
            ],
        )


def source_cells(components: list[dict[str, Any]]) -> list[int]:
    """The cells (``SOURCE_ORDER``) of components with ``ra_deg`` and ``dec_deg``."""
    if not components:
        return []
    ras = np.array([c["ra_deg"] for c in components], dtype=float)
    decs = np.array([c["dec_deg"] for c in components], dtype=float)
    return cells_of(ras, decs, SOURCE_ORDER).tolist()


def mosaics_containing(conn: Connection, ra_deg: float, dec_deg: float) -> list[dict[str, Any]]:
    """The published mosaics whose footprint contains the position, oldest first."""
    cell, bit = footprint_key(ra_deg, dec_deg)
    rows = conn.execute(
        select(
            RegistryEntry.id.label("product_id"),
            RegistryEntry.group_id,
            RegistryEntry.generation,
            RegistryEntry.published_path,
            RegistryEntry.published_at,
        )
        .join(FootprintCell, FootprintCell.registry_id == RegistryEntry.id)
        .where(
            FootprintCell.cell == cell,
            # int8 >> int4: PostgreSQL has no shift by a bigint.
            FootprintCell.mask.op(">>")(literal(bit, Integer)).op("&")(1) == 1,
            RegistryEntry.status == "published",
        )
        .order_by(RegistryEntry.published_at, RegistryEntry.id)
    ).mappings()
    return [dict(row) for row in rows]


def sources_near(
    conn: Connection, ra_deg: float, dec_deg: float, radius_deg: float
) -> list[dict[str, Any]]:
    """The catalogue sources of published mosaics within ``radius_deg`` of the position,
    nearest first: position, flux densities, ``distance_deg`` and the mosaic."""
    # First the sources in the cone's cells, by their index alone, then the mosaics of
    # those within the radius: no planner gets to start from the published mosaics. The
    # ranges are plain SQL: as SQLAlchemy expressions, dozens of literals take longer to
    # compile than the search takes to run.
    ranges = _in_ranges("cell", source_ranges(ra_deg, dec_deg, radius_deg))
    candidates = conn.execute(
        text(
            "SELECT ra_deg, dec_deg, flux_jy, flux_err_jy, peak_jy, peak_err_jy, catalogue_id"
            f" FROM sources WHERE {ranges}"
        )
    ).all()
    if not candidates:
        return []
    distances = angular_separation_deg(
        ra_deg,
        dec_deg,
        np.array([row.ra_deg for row in candidates]),
        np.array([row.dec_deg for row in candidates]),
    )
    near = [
        (row, float(distance))
        for row, distance in zip(candidates, distances, strict=True)
        if distance <= radius_deg
    ]
    products = conn.execute(
        select(
            SourceCatalogue.id,
            RegistryEntry.id,
            SourceCatalogue.group_id,
            SourceCatalogue.generation,
            RegistryEntry.published_path,
        )
        .join(
            RegistryEntry,
            (RegistryEntry.kind == "mosaic")
            & (RegistryEntry.group_id == SourceCatalogue.group_id)
            & (RegistryEntry.generation == SourceCatalogue.generation),
        )
        .where(
            SourceCatalogue.id.in_(sorted({row.catalogue_id for row, _ in near})),
            RegistryEntry.status == "published",
        )
    ).all()
    mosaic_of = {
        catalogue: {"product_id": product, "group_id": group, "generation": generation,
                    "published_path": path}
        for catalogue, product, group, generation, path in products
    }  # fmt: skip
    found = [
        {**row._asdict(), "distance_deg": distance, **mosaic_of[row.catalogue_id]}
        for row, distance in near
        if row.catalogue_id in mosaic_of
    ]
    return sorted(found, key=lambda s: (s["distance_deg"], s["product_id"]))


def cone_sql(ra_deg: float, dec_deg: float, radius_deg: float) -> tuple[str, str]:
    """The two statements of a cone search as plain SQL with this search's cells written
    in: the mosaics containing the position, and the sources within the radius with their
    distance (SQLite needs its math functions, built in since 3.35)."""
    cell, bit = footprint_key(ra_deg, dec_deg)
    mosaics = (
        "SELECT r.id AS product_id, r.group_id, r.generation, r.published_path, r.published_at\n"
        "FROM footprint_cells f JOIN data_registry r ON r.id = f.registry_id\n"
        f"WHERE f.cell = {cell} AND (f.mask >> {bit}) & 1 = 1 AND r.status = 'published'\n"
        "ORDER BY r.published_at, r.id;"
    )
    ranges = _in_ranges("s.cell", source_ranges(ra_deg, dec_deg, radius_deg))
    distance = (
        "degrees(2 * asin(sqrt(\n"
        f"           power(sin(radians(s.dec_deg - {dec_deg!r}) / 2), 2)\n"
        f"           + cos(radians({dec_deg!r})) * cos(radians(s.dec_deg))\n"
        f"           * power(sin(radians(s.ra_deg - {ra_deg!r}) / 2), 2))))"
    )
    sources = (
        "WITH near AS MATERIALIZED (\n"
        "  SELECT s.ra_deg, s.dec_deg, s.flux_jy, s.flux_err_jy, s.peak_jy, s.catalogue_id,\n"
        f"         {distance} AS distance_deg\n"
        "  FROM sources s\n"
        f"  WHERE {ranges}\n"
        ")\n"
        "SELECT near.ra_deg, near.dec_deg, near.flux_jy, near.flux_err_jy, near.peak_jy,\n"
        "       near.distance_deg, r.id AS product_id, c.group_id, c.generation,\n"
        "       r.published_path\n"
        "FROM near\n"
        "JOIN catalogues c ON c.id = near.catalogue_id\n"
        "JOIN data_registry r ON r.kind = 'mosaic' AND r.group_id = c.group_id\n"
        "     AND r.generation = c.generation AND r.status = 'published'\n"
        f"WHERE near.distance_deg <= {radius_deg!r}\n"
        "ORDER BY near.distance_deg, product_id;"
    )
    return mosaics, sources


def _in_ranges(column: str, ranges: list[tuple[int, int]]) -> str:
    """SQL: ``column`` is in one of the half-open integer ``ranges``."""
    return "\n    OR ".join(f"{column} >= {lo:d} AND {column} < {hi:d}" for lo, hi in ranges)


def products_without_footprint(conn: Connection) -> list[dict[str, Any]]:
    """The published mosaics that have no footprint recorded: ``product_id`` and
    ``published_path``."""
    rows = conn.execute(
        select(RegistryEntry.id.label("product_id"), RegistryEntry.published_path)
        .outerjoin(Footprint, Footprint.registry_id == RegistryEntry.id)
        .where(
            RegistryEntry.kind == "mosaic",
            RegistryEntry.status == "published",
            Footprint.registry_id.is_(None),
        )
        .order_by(RegistryEntry.id)
    ).mappings()
    return [dict(row) for row in rows]


def fill_source_cells(conn: Connection) -> int:
    """Give every source without a cell its cell; returns how many were filled."""
    filled = 0
    while True:
        rows = conn.execute(
            select(Source.id, Source.ra_deg, Source.dec_deg)
            .where(Source.cell.is_(None))
            .limit(_BATCH)
        ).all()
        if not rows:
            return filled
        cells = source_cells([dict(row._mapping) for row in rows])
        conn.execute(
            update(Source).where(Source.id == bindparam("source_id")).values(cell=bindparam("c")),
            [{"source_id": row.id, "c": cell} for row, cell in zip(rows, cells, strict=True)],
        )
        filled += len(rows)


def published_footprints(conn: Connection) -> Iterator[np.ndarray]:
    """The footprint cells (``FOOTPRINT_ORDER``) of every published mosaic, one array
    per mosaic."""
    products = conn.execute(
        select(Footprint.registry_id)
        .join(RegistryEntry, RegistryEntry.id == Footprint.registry_id)
        .where(RegistryEntry.status == "published")
        .order_by(Footprint.registry_id)
    ).scalars()
    for registry_id in products.all():
        rows = conn.execute(
            select(FootprintCell.cell, FootprintCell.mask).where(
                FootprintCell.registry_id == registry_id
            )
        ).all()
        yield footprint_cells([(row.cell, row.mask) for row in rows])


def coverage_counts(conn: Connection) -> dict[str, Any]:
    """How much of what is published the cone search sees: published mosaics, those with
    a footprint, their summed area, and sources without a cell."""
    published = conn.execute(
        select(func.count())
        .select_from(RegistryEntry)
        .where(RegistryEntry.kind == "mosaic", RegistryEntry.status == "published")
    ).scalar_one()
    with_footprint, area = conn.execute(
        select(func.count(), func.coalesce(func.sum(Footprint.area_sq_deg), 0.0))
        .select_from(Footprint)
        .join(RegistryEntry, RegistryEntry.id == Footprint.registry_id)
        .where(RegistryEntry.status == "published")
    ).one()
    without_cell = conn.execute(
        select(func.count()).select_from(Source).where(Source.cell.is_(None))
    ).scalar_one()
    return {
        "published_mosaics": published,
        "with_footprint": with_footprint,
        "footprint_area_sum_sq_deg": float(area),
        "sources_without_cell": without_cell,
    }
