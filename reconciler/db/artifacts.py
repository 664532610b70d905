"""Recording products in the database: one function per artifact, each an upsert.

Action handlers call these from their ``record`` step, inside the transaction that marks the
action done, so a product row and the action's completion land together or not at all.
Running an action again (its product vanished) replaces the row instead of duplicating it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from reconciler.db.cone import source_cells
from reconciler.db.engine import dialect_insert
from reconciler.db.models import (
    CalibratedMS,
    CalibrationSolution,
    Image,
    MeasurementSet,
    MosaicGroupMember,
    Observation,
    QualityReport,
    RegistryEntry,
    Source,
    SourceCatalogue,
)
from reconciler.errors import PermanentError


def _upsert(conn: Connection, model: type, values: dict[str, Any], keys: list[str]) -> None:
    insert = dialect_insert(conn, model)
    stmt = insert.values(**values)
    changed = {k: stmt.excluded[k] for k in values if k not in keys}
    conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=changed))


def observation_id(conn: Connection, key: str) -> int:
    """The id of observation ``key``.

    Raises
    ------
    PermanentError
        When no such observation exists.
    """
    found = conn.execute(select(Observation.id).where(Observation.key == key)).scalar()
    if found is None:
        raise PermanentError(f"observation {key} is not in the database")
    return found


def record_measurement_set(
    conn: Connection,
    key: str,
    *,
    path: str,
    start: datetime,
    mid: datetime,
    end: datetime,
    ra_deg: float,
    dec_deg: float,
    n_rows: int,
    n_channels: int,
    fingerprint: str | None = None,
) -> None:
    """Record (or replace) the MS of observation ``key``, made under settings
    ``fingerprint``."""
    values = {
        "observation_id": observation_id(conn, key),
        "path": path,
        "start_time": start,
        "mid_time": mid,
        "end_time": end,
        "ra_deg": ra_deg,
        "dec_deg": dec_deg,
        "n_rows": n_rows,
        "n_channels": n_channels,
        "fingerprint": fingerprint,
    }
    _upsert(conn, MeasurementSet, {**values, "removed_at": None}, ["observation_id"])


def record_solution(
    conn: Connection,
    *,
    calibrator_id: int,
    key: str,
    dec_deg: float,
    transit: datetime,
    valid_from: datetime,
    valid_until: datetime,
    tables: str,
    snr: float | None,
    flagged_fraction: float | None,
    fingerprint: str | None = None,
) -> None:
    """Record (or replace) the solution solved on one calibrator transit, made under settings
    ``fingerprint``; other solutions are untouched."""
    values = {
        "calibrator_id": calibrator_id,
        "observation_id": observation_id(conn, key),
        "dec_deg": dec_deg,
        "transit_time": transit,
        "valid_from": valid_from,
        "valid_until": valid_until,
        "tables": tables,
        "snr": snr,
        "flagged_fraction": flagged_fraction,
        "fingerprint": fingerprint,
    }
    _upsert(conn, CalibrationSolution, values, ["calibrator_id", "observation_id"])


def solution_tables(tables: str) -> list[str]:
    """The paths of a solution's tables (``calibration_solutions.tables``, a JSON list); a
    value that is no such list is taken as one path, so what reads it fails naming the row."""
    try:
        paths = json.loads(tables)
    except ValueError:
        return [tables]
    if isinstance(paths, list) and all(isinstance(p, str) for p in paths):
        return paths
    return [tables]


def solutions_valid_during(conn: Connection, start: datetime, end: datetime) -> list[Any]:
    """The solutions whose validity overlaps ``[start, end]``, with what eligibility needs
    (``id``, ``dec_deg``, ``transit_time``, ``valid_from``, ``valid_until``), ``tables`` and
    ``fingerprint``."""
    return list(
        conn.execute(
            select(
                CalibrationSolution.id,
                CalibrationSolution.dec_deg,
                CalibrationSolution.transit_time,
                CalibrationSolution.valid_from,
                CalibrationSolution.valid_until,
                CalibrationSolution.tables,
                CalibrationSolution.fingerprint,
            ).where(CalibrationSolution.valid_until >= start, CalibrationSolution.valid_from <= end)
        )
    )


def record_calibrated(
    conn: Connection,
    key: str,
    *,
    path: str,
    solution_id: int | None,
    fingerprint: str | None = None,
) -> None:
    """Record (or replace) the calibrated MS of observation ``key`` (its files present), made
    under settings ``fingerprint``."""
    values = {
        "observation_id": observation_id(conn, key),
        "path": path,
        "solution_id": solution_id,
        "fingerprint": fingerprint,
        "removed_at": None,
    }
    _upsert(conn, CalibratedMS, values, ["observation_id"])


def record_image(
    conn: Connection,
    key: str,
    *,
    path: str,
    pb_path: str | None = None,
    beam_major_arcsec: float | None = None,
    beam_minor_arcsec: float | None = None,
    beam_pa_deg: float | None = None,
    rms_jy: float | None = None,
    backend: str | None = None,
    fingerprint: str | None = None,
) -> None:
    """Record (or replace) the image tile of observation ``key``, made by ``backend`` under
    settings ``fingerprint`` (its files present)."""
    values = {
        "observation_id": observation_id(conn, key),
        "path": path,
        "pb_path": pb_path,
        "beam_major_arcsec": beam_major_arcsec,
        "beam_minor_arcsec": beam_minor_arcsec,
        "beam_pa_deg": beam_pa_deg,
        "rms_jy": rms_jy,
        "backend": backend,
        "fingerprint": fingerprint,
        "removed_at": None,
    }
    _upsert(conn, Image, values, ["observation_id"])


def tile_fingerprints(conn: Connection, group_id: int) -> list[str | None]:
    """The settings fingerprints of the image tiles of a group's members."""
    return list(
        conn.execute(
            select(Image.fingerprint)
            .join(MosaicGroupMember, MosaicGroupMember.observation_id == Image.observation_id)
            .where(MosaicGroupMember.group_id == group_id, MosaicGroupMember.role == "member")
        ).scalars()
    )


def stage_mosaic(conn: Connection, group_id: int, generation: int, *, stage_path: str) -> None:
    """Record the staged mosaic of one generation of a group (not yet published)."""
    values = {
        "kind": "mosaic",
        "group_id": group_id,
        "generation": generation,
        "stage_path": stage_path,
        "status": "staging",
    }
    _upsert(conn, RegistryEntry, values, ["kind", "group_id", "generation"])


def staged_mosaic(conn: Connection, group_id: int, generation: int) -> str | None:
    """The staged mosaic's path of one generation of a group, if it was staged."""
    return conn.execute(
        select(RegistryEntry.stage_path).where(
            RegistryEntry.kind == "mosaic",
            RegistryEntry.group_id == group_id,
            RegistryEntry.generation == generation,
        )
    ).scalar()


def record_catalogue(
    conn: Connection,
    group_id: int,
    generation: int,
    *,
    path: str,
    rms_path: str,
    finder: str,
    finder_version: str,
    median_rms_jy: float | None,
    components: list[dict[str, float]],
) -> tuple[int, list[int]]:
    """Record the source catalogue of a group generation's mosaic and its components (each
    with its sky cell, for cone searches), replacing what an earlier attempt recorded;
    returns the catalogue's id and the components' ``sources`` ids, in the order given."""
    conn.execute(
        delete(SourceCatalogue).where(
            SourceCatalogue.group_id == group_id, SourceCatalogue.generation == generation
        )
    )
    catalogue_id = conn.execute(
        insert(SourceCatalogue)
        .values(
            group_id=group_id,
            generation=generation,
            path=path,
            rms_path=rms_path,
            finder=finder,
            finder_version=finder_version,
            n_components=len(components),
            median_rms_jy=median_rms_jy,
        )
        .returning(SourceCatalogue.id)
    ).scalar_one()
    if not components:
        return catalogue_id, []
    source_ids = conn.execute(
        insert(Source).returning(Source.id, sort_by_parameter_order=True),
        [
            {"catalogue_id": catalogue_id, **values, "cell": cell}
            for values, cell in zip(components, source_cells(components), strict=True)
        ],
    ).scalars()
    return catalogue_id, list(source_ids)


def calibrated_members(conn: Connection, group_id: int) -> list[tuple[str, str | None]]:
    """(observation key, calibrated MS path or None when there is none, or it was removed)
    of every member of a group, in time order."""
    rows = conn.execute(
        select(Observation.key, CalibratedMS.path, CalibratedMS.removed_at)
        .join(MosaicGroupMember, MosaicGroupMember.observation_id == Observation.id)
        .outerjoin(CalibratedMS, CalibratedMS.observation_id == Observation.id)
        .where(MosaicGroupMember.group_id == group_id, MosaicGroupMember.role == "member")
        .order_by(MosaicGroupMember.position)
    )
    return [(key, path if removed is None else None) for key, path, removed in rows]


def quality_of(conn: Connection, group_id: int, generation: int) -> dict[str, Any] | None:
    """The quality assessment of a group generation's mosaic (the figures as plain data),
    or None when it has none."""
    row = conn.execute(
        select(
            QualityReport.quality,
            QualityReport.summary,
            QualityReport.figures,
            QualityReport.accepted_by,
        ).where(QualityReport.group_id == group_id, QualityReport.generation == generation)
    ).first()
    if row is None:
        return None
    return {
        "quality": row.quality,
        "summary": row.summary,
        "figures": json.loads(row.figures),
        "accepted_by": row.accepted_by,
    }


def record_quality(
    conn: Connection,
    group_id: int,
    generation: int,
    *,
    quality: str,
    summary: str,
    figures: dict[str, Any],
    figure_path: str,
) -> None:
    """Record the quality assessment of a group generation's mosaic, replacing what an
    earlier attempt recorded (an acceptance of an earlier failed verdict is kept only when
    the verdict is the same)."""
    existing = conn.execute(
        select(QualityReport.quality).where(
            QualityReport.group_id == group_id, QualityReport.generation == generation
        )
    ).scalar()
    values = {
        "quality": quality,
        "summary": summary,
        "figures": json.dumps(figures, sort_keys=True, allow_nan=False),
        "figure_path": figure_path,
        "assessed_at": datetime.now(UTC),
    }
    if existing is None:
        conn.execute(
            insert(QualityReport).values(group_id=group_id, generation=generation, **values)
        )
        return
    if existing != quality:
        values.update(accepted_at=None, accepted_by=None, accept_reason=None)
    conn.execute(
        update(QualityReport)
        .where(QualityReport.group_id == group_id, QualityReport.generation == generation)
        .values(**values)
    )


def mark_published(
    conn: Connection,
    group_id: int,
    generation: int,
    *,
    published_path: str,
    checksum: str,
    companions: str | None = None,
    size_bytes: int | None = None,
    fingerprint: str | None = None,
    at: datetime,
) -> None:
    """Mark a staged mosaic published at ``published_path``; its files (``companions``: the
    JSON map of the files beside it to their checksums; ``size_bytes`` in all) are as
    verified at ``at``, made under settings ``fingerprint``. The earlier published versions
    of the group not yet superseded are marked superseded by it (they stay published).

    Raises
    ------
    PermanentError
        When the mosaic was never staged.
    """
    result = conn.execute(
        update(RegistryEntry)
        .where(
            RegistryEntry.kind == "mosaic",
            RegistryEntry.group_id == group_id,
            RegistryEntry.generation == generation,
        )
        .values(
            status="published",
            published_path=published_path,
            checksum=checksum,
            companions=companions,
            size_bytes=size_bytes,
            published_at=at,
            verified_at=at,
            problem=None,
            fingerprint=fingerprint,
        )
        .returning(RegistryEntry.id)
    )
    published = result.scalar()
    if published is None:
        raise PermanentError(f"group {group_id} generation {generation} has no staged mosaic")
    conn.execute(
        update(RegistryEntry)
        .where(
            RegistryEntry.kind == "mosaic",
            RegistryEntry.group_id == group_id,
            RegistryEntry.generation < generation,
            RegistryEntry.status == "published",
            RegistryEntry.superseded_by.is_(None),
        )
        .values(superseded_by=published, superseded_at=at)
    )
