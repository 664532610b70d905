"""Convert: the subband files of one observation become one MS at a deterministic path."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from reconciler.config import Settings
from reconciler.db import artifacts, provenance
from reconciler.db.models import Observation, RawFile
from reconciler.engine.registry import ActionHandler
from reconciler.errors import PermanentError
from reconciler.fingerprint import fingerprints
from reconciler.io.checksum import sha256_as_recorded
from reconciler.io.confine import confine
from reconciler.model import ActionKind, ClaimedAction, Site
from reconciler.naming import measurement_set_path, parse_target


def prepare(conn: Connection, claimed: ClaimedAction, settings: Settings) -> dict[str, Any]:
    """The observation's readable subband files and where its MS goes."""
    _, key = parse_target(claimed.key.target)
    rows = conn.execute(
        select(RawFile.path, RawFile.size_bytes, RawFile.mtime, RawFile.sha256)
        .join(Observation, Observation.id == RawFile.observation_id)
        .where(Observation.key == key, RawFile.error.is_(None))
        .order_by(RawFile.subband)
    ).all()
    if not rows:
        raise PermanentError(f"observation {key} has no readable raw files")
    work = settings.paths.work
    incoming = settings.paths.incoming
    raw = [str(confine(r.path, incoming, what=f"raw_files.path of {key}")) for r in rows]
    fingerprint = fingerprints(settings).convert
    out_ms = confine(measurement_set_path(work, key, fingerprint), work, what=f"the MS of {key}")
    scratch = confine(work / "scratch" / "convert" / key, work, what=f"the scratch of {key}")
    return {
        "key": key,
        "files": raw,
        "out_ms": str(out_ms),
        "scratch": str(scratch),
        "site": asdict(settings.site),
        "fingerprint": fingerprint,
        # Each raw file is hashed once, by the conversion that reads it first: the bytes
        # are then in the page cache, and raw files never change.
        "to_checksum": [
            {"path": path, "size_bytes": r.size_bytes, "mtime": r.mtime}
            for path, r in zip(raw, rows, strict=True)
            if r.sha256 is None
        ],
    }


def run(payload: dict[str, Any]) -> dict[str, Any]:
    """Child process: convert and validate; bad input is a permanent error."""
    from reconciler.io.convert import ConversionError, convert_observation
    from reconciler.io.uvh5 import RawFileError

    try:
        summary = convert_observation(
            [Path(p) for p in payload["files"]],
            Path(payload["out_ms"]),
            scratch_dir=Path(payload["scratch"]),
            site=Site(**payload["site"]),
            attempt=payload["attempt_id"],
        )
    except (ConversionError, RawFileError) as exc:
        raise PermanentError(str(exc)) from exc
    checksums = [
        {
            **item,
            "sha256": sha256_as_recorded(Path(item["path"]), item["size_bytes"], item["mtime"]),
        }
        for item in payload["to_checksum"]
    ]
    return {
        "path": str(summary.path),
        "start": summary.start.isoformat(),
        "mid": summary.mid.isoformat(),
        "end": summary.end.isoformat(),
        "ra_deg": summary.phase_centre_ra_deg,
        "dec_deg": summary.phase_centre_dec_deg,
        "n_rows": summary.n_rows,
        "n_channels": summary.n_channels,
        "checksums": [item for item in checksums if item["sha256"] is not None],
    }


def record(
    conn: Connection, claimed: ClaimedAction, payload: dict[str, Any], result: dict[str, Any]
) -> None:
    """Index the MS from what the MS itself says; keep the raw files' checksums."""
    artifacts.record_measurement_set(
        conn,
        payload["key"],
        path=str(result["path"]),
        start=datetime.fromisoformat(result["start"]),
        mid=datetime.fromisoformat(result["mid"]),
        end=datetime.fromisoformat(result["end"]),
        ra_deg=result["ra_deg"],
        dec_deg=result["dec_deg"],
        n_rows=result["n_rows"],
        n_channels=result["n_channels"],
        fingerprint=payload["fingerprint"],
    )
    provenance.record_checksums(conn, result["checksums"])


def ms_exists(path: str) -> bool:
    """The product check of an MS: it opens and has rows (:func:`reconciler.io.ms.ms_has_rows`)."""
    from reconciler.io.ms import ms_has_rows

    return ms_has_rows(path)


HANDLER = ActionHandler(
    kind=ActionKind.CONVERT,
    run="reconciler.steps.convert:run",
    prepare=prepare,
    record=record,
    product_exists=ms_exists,
)
