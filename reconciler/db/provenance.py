"""Provenance in the database: the inputs of a mosaic, the record of what made a product,
and reading it back.

A record is plain data (JSON-able): the fields of ``provenance`` and ``inputs``, a list of
``provenance_inputs`` rows. It is written in the transaction that publishes the product.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from reconciler.db.artifacts import solution_tables
from reconciler.db.models import (
    BandpassCalibrator,
    CalibratedMS,
    CalibrationSolution,
    MosaicGroupMember,
    Observation,
    Provenance,
    ProvenanceInput,
    RawFile,
    RegistryEntry,
)
from reconciler.db.queries import staged_mosaic_id

#: The fields of a record kept in ``provenance`` (besides the inputs).
RECORD_FIELDS = (
    "provenance_hash",
    "package_version",
    "git_commit",
    "settings_json",
    "settings_hash",
    "casa_version",
    "pyuvdata_version",
    "casacore_version",
    "finder",
    "finder_version",
)


def mosaic_inputs(conn: Connection, group_id: int) -> list[dict[str, Any]]:
    """The inputs of a group's mosaic: the raw files of its members and of the calibrator
    observations their solutions were solved on (``raw_file``: path, size, SHA-256 if known,
    ``mtime``), and the tables of those solutions (``calibration``: calibrator, transit).
    Ordered by kind, observation and path."""
    members = select(MosaicGroupMember.observation_id).where(
        MosaicGroupMember.group_id == group_id, MosaicGroupMember.role == "member"
    )
    solutions = conn.execute(
        select(
            CalibrationSolution.tables,
            CalibrationSolution.transit_time,
            CalibrationSolution.observation_id,
            BandpassCalibrator.name,
            Observation.key,
        )
        .join(BandpassCalibrator, BandpassCalibrator.id == CalibrationSolution.calibrator_id)
        .join(Observation, Observation.id == CalibrationSolution.observation_id)
        .where(
            CalibrationSolution.id.in_(
                select(CalibratedMS.solution_id).where(CalibratedMS.observation_id.in_(members))
            )
        )
    ).all()
    calibration = [
        {
            "kind": "calibration",
            "observation_key": s.key,
            "path": table,
            "size_bytes": None,
            "sha256": None,
            "calibrator": s.name,
            "transit_time": s.transit_time.isoformat(),
        }
        for s in solutions
        for table in solution_tables(s.tables)
    ]
    solved_on = [s.observation_id for s in solutions]
    raw = conn.execute(
        select(RawFile.path, RawFile.size_bytes, RawFile.sha256, RawFile.mtime, Observation.key)
        .join(Observation, Observation.id == RawFile.observation_id)
        .where(
            RawFile.error.is_(None),
            RawFile.observation_id.in_(members) | RawFile.observation_id.in_(solved_on),
        )
    ).all()
    files = [
        {
            "kind": "raw_file",
            "observation_key": r.key,
            "path": r.path,
            "size_bytes": r.size_bytes,
            "sha256": r.sha256,
            "mtime": r.mtime,
            "calibrator": None,
            "transit_time": None,
        }
        for r in raw
    ]
    return sorted(files + calibration, key=lambda i: (i["kind"], i["observation_key"], i["path"]))


def record_checksums(conn: Connection, checksums: list[dict[str, Any]]) -> None:
    """Keep each raw file's SHA-256 (``path``, ``size_bytes``, ``mtime``, ``sha256``) on its
    row, only where the row still describes the file as it was hashed."""
    for item in checksums:
        conn.execute(
            update(RawFile)
            .where(
                RawFile.path == item["path"],
                RawFile.size_bytes == item["size_bytes"],
                RawFile.mtime == item["mtime"],
            )
            .values(sha256=item["sha256"])
        )


def record_provenance(
    conn: Connection, group_id: int, generation: int, record: dict[str, Any]
) -> None:
    """Record (or replace) the provenance of the mosaic of one group generation.

    Raises
    ------
    PermanentError
        When the mosaic was never staged.
    """
    registry_id = staged_mosaic_id(conn, group_id, generation)
    conn.execute(delete(Provenance).where(Provenance.registry_id == registry_id))
    conn.execute(delete(ProvenanceInput).where(ProvenanceInput.registry_id == registry_id))
    conn.execute(
        insert(Provenance).values(
            registry_id=registry_id, **{field: record[field] for field in RECORD_FIELDS}
        )
    )
    inputs = [
        {
            "registry_id": registry_id,
            "kind": item["kind"],
            "observation_key": item["observation_key"],
            "path": item["path"],
            "size_bytes": item["size_bytes"],
            "sha256": item["sha256"],
            "calibrator": item["calibrator"],
            "transit_time": (
                datetime.fromisoformat(item["transit_time"]) if item["transit_time"] else None
            ),
        }
        for item in record["inputs"]
    ]
    if inputs:
        conn.execute(insert(ProvenanceInput), inputs)


def product_provenance(
    conn: Connection, *, group_id: int | None = None, product: str | None = None
) -> list[dict[str, Any]]:
    """The provenance of the products of group ``group_id`` (every generation, newest
    first), or of the product whose published path or file name is ``product``: one dict
    per product, with its ``settings`` (parsed), ``inputs``, settings ``fingerprint`` and
    ``superseded_by`` / ``superseded_at`` (None while it is the current version)."""
    query = (
        select(
            RegistryEntry.id.label("product_id"),
            RegistryEntry.group_id,
            RegistryEntry.generation,
            RegistryEntry.status,
            RegistryEntry.published_path,
            RegistryEntry.checksum,
            RegistryEntry.published_at,
            RegistryEntry.fingerprint,
            RegistryEntry.superseded_by,
            RegistryEntry.superseded_at,
            *(getattr(Provenance, field) for field in RECORD_FIELDS),
            Provenance.recorded_at,
        )
        .join(Provenance, Provenance.registry_id == RegistryEntry.id)
        .order_by(RegistryEntry.generation.desc(), RegistryEntry.id.desc())
    )
    if group_id is not None:
        query = query.where(RegistryEntry.group_id == group_id)
    if product is not None:
        query = query.where(
            (RegistryEntry.published_path == product)
            | RegistryEntry.published_path.endswith(f"/{product}")
        )
    products = []
    for row in conn.execute(query).all():
        found = dict(row._mapping)
        found["settings"] = json.loads(found.pop("settings_json"))
        found["inputs"] = [
            dict(item)
            for item in conn.execute(
                select(*(getattr(ProvenanceInput, column) for column in _INPUT_COLUMNS))
                .where(ProvenanceInput.registry_id == row.product_id)
                .order_by(
                    ProvenanceInput.kind,
                    ProvenanceInput.observation_key,
                    ProvenanceInput.path,
                )
            ).mappings()
        ]
        products.append(found)
    return products


_INPUT_COLUMNS = (
    "kind",
    "observation_key",
    "path",
    "size_bytes",
    "sha256",
    "calibrator",
    "transit_time",
)
